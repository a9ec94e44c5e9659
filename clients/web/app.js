// The voxline call page: one WebRTC call in one of three modes (the offer's
// session.mode, fixed per call): "agent" (talk to the voice agent: live captions of
// both sides, a latency waterfall per turn), "voice_changer" (hear your own voice
// changed, with a preset and pitch/formant sliders applied live) or "anonymizer"
// (your words re-spoken by Piper, each phrase listed). The level meter measures
// whatever the server sends back. No dependencies.
//
// Call set-up (aiortc does not trickle ICE): getUserMedia → RTCPeerConnection → mic
// track + "events" data channel → offer → wait for ICE gathering to complete →
// POST /v1/webrtc/offer → answer. The server's JSON events arrive on the channel; in
// the voice changer the page sends {"type": "vc.update", ...} on it (a slider at most
// every VC_UPDATE_INTERVAL_MS while it moves, its final value at once on "change"),
// and the whole voice once the channel opens (a slider moved while the call was
// connecting; the server's vc.updated answer confirms it).
//
// What tests read: document.body.dataset.state ("idle", "starting", "in-call"),
// document.body.dataset.mode (the selected mode, or the call's), the mode switch
// input[name=mode] (radios labelled "Agent", "Voice changer", "Anonymizer"; disabled
// while a call is starting or live), window.voxline.agentPeak (running peak of the
// audio coming back, 0..1, whatever the mode), and the transcript lines:
// li.line.user[data-utterance] / li.line.agent[data-reply], each with a .text; agent
// lines carry .waterfall[data-v2v-ms] once the turn is measured; the anonymizer's
// li.line.anon[data-phrase][data-latency-ms] with a .text. The voice changer:
// #vc-preset (select), #vc-semitones and #vc-formant (range inputs), #vc-applied
// [data-semitones][data-formant][data-monotone-hz] (the voice the server last
// confirmed, from vc.ready / vc.updated; no data attributes until it has) and
// #vc-latency[data-total-ms] (algorithmic + processing + buffered, from vc.latency).
// document.body.dataset.voices is "loaded" once the presets came from GET /v1/vc/voices.
// window.voxline.receive(event) shows an event as if it came from the server.

const OFFER_URL = "/v1/webrtc/offer";
const ICE_GATHER_TIMEOUT_MS = 5000;
const OFFER_TIMEOUT_MS = 20000;
const LEVEL_INTERVAL_MS = 50;
const LEVEL_DECAY = 0.85;
const MAX_EVENTS_KEPT = 500;  // window.voxline.events drops the oldest past this
const MAX_LINES = 400;  // the transcript drops its oldest lines past this
const MIC_CONSTRAINTS = { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
const VC_UPDATE_INTERVAL_MS = 100;  // a moving slider sends at most ~10 vc.update a second

const MIC_NOTE = "Your browser asks for the microphone when you start.";
const MODES = {
  agent: {
    level: "agent", meter: "Agent audio level", error: "Agent error", inCall: "In call: ask something",
    tagline: `Talk to the voice agent. ${MIC_NOTE}`,
    empty: "Start a call and ask something; both sides appear here as they are spoken.",
  },
  voice_changer: {
    level: "your voice", meter: "Your changed voice, audio level", error: "Voice changer error",
    inCall: "In call: speak and hear your changed voice",
    tagline: `Hear your own voice changed, live; move the sliders while you speak. ${MIC_NOTE}`,
    empty: "Your voice comes back changed; nothing is written down in this mode.",
  },
  anonymizer: {
    level: "re-spoken", meter: "Re-spoken voice, audio level", error: "Anonymizer error",
    inCall: "In call: speak a sentence",
    tagline: `Your words, re-spoken in another voice: your own voice never comes back. ${MIC_NOTE}`,
    empty: "Start a call and speak; each phrase appears here as it is re-spoken.",
  },
};

// The server's voices, from GET /v1/vc/voices before the voice panel is built.
const VOICES_URL = "/v1/vc/voices";
let PRESETS = {};
const VOICE_KEYS = ["semitones", "formant", "monotone_hz"];

const STAGES = [
  ["asr_final", "transcript"],
  ["endpoint", "end of turn"],
  ["llm_first_token", "first token"],
  ["tts_first_audio", "first audio"],
  ["audio_out", "audio out"],
];

const $ = (id) => document.getElementById(id);
const ui = {
  button: $("call"), state: $("state"), connection: $("connection"), error: $("error"),
  transcript: $("transcript"), empty: $("empty"), audio: $("agent-audio"),
  level: $("agent-level"), levelFill: document.querySelector("#agent-level .level-fill"),
  levelLabel: $("level-label"), tagline: $("tagline"), mode: $("mode"),
  modes: document.querySelectorAll("input[name=mode]"),
  vcPanel: $("vc-panel"), preset: $("vc-preset"), semitones: $("vc-semitones"), formant: $("vc-formant"),
  semitonesValue: $("vc-semitones-value"), formantValue: $("vc-formant-value"), monotone: $("vc-monotone"),
  applied: $("vc-applied"), latency: $("vc-latency"),
};

export const voxline = { agentPeak: 0, events: [], call: null, receive: (event) => onEvent(event) };
window.voxline = voxline;

// -- the transcript ----------------------------------------------------------------

/** Conversation lines kept in the order they started; events update them in place. */
class Transcript {
  constructor(list) {
    this.list = list;
    this.users = new Map();   // utterance index → li
    this.agents = new Map();  // reply id → li
    this.phrases = 0;  // anonymizer phrases shown
  }

  clear() {
    this.list.replaceChildren();
    this.users.clear();
    this.agents.clear();
    this.phrases = 0;
  }

  apply(event) {
    switch (event.type) {
      case "user_partial":
      case "user_final":
        return this.user(event.utterance, event.text || "", event.type === "user_final");
      case "user_turn":
        return this.agent(event.reply).classList.add("pending");
      case "agent_text":
        return this.agentText(event.reply, event.text || "");
      case "agent_done":
        return this.agentDone(event.reply, event.text || "");
      case "agent_paused":
        return this.agents.get(event.reply)?.classList.add("paused");
      case "agent_resumed":
        return this.agents.get(event.reply)?.classList.remove("paused");
      case "interrupted":
        return this.interrupted(event.reply, event.heard || "");
      case "reply_discarded":
        return this.remove(this.agents, event.reply);
      case "turn_latency":
        return this.latency(event);
      case "anon.phrase":
        return this.phrase(event.text || "", event.latency_ms);
      default:
        return undefined;
    }
  }

  line(who, key, map, label) {
    let li = map.get(key);
    if (!li) {
      li = this.newLine(who, label);
      li.dataset[who === "user" ? "utterance" : "reply"] = String(key);
      map.set(key, li);
      this.add(li);
    }
    return li;
  }

  newLine(who, label) {
    const li = document.createElement("li");
    li.className = `line ${who}`;
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = label;
    const text = document.createElement("span");
    text.className = "text";
    li.append(name, text);
    return li;
  }

  add(li) {
    this.list.append(li);
    if (this.list.childElementCount > MAX_LINES) this.dropOldest();
    li.scrollIntoView({ block: "nearest" });
  }

  /** One anonymizer phrase: the words as heard, re-spoken ``latencyMs`` after the caller said them. */
  phrase(text, latencyMs) {
    if (!text.trim()) return;
    const li = this.newLine("anon", "re-spoken");
    this.phrases += 1;
    li.dataset.phrase = String(this.phrases);
    li.querySelector(".text").textContent = text;
    if (latencyMs != null) {
      li.dataset.latencyMs = String(Math.round(latencyMs));
      const latency = document.createElement("span");
      latency.className = "latency";
      latency.textContent = `after ${Math.round(latencyMs)} ms`;
      li.append(latency);
    }
    this.add(li);
  }

  user(utterance, text, final) {
    if (final && !text.trim()) {
      this.remove(this.users, utterance);  // a noise the recogniser heard no words in
      return;
    }
    const li = this.line("user", utterance, this.users, "you");
    li.querySelector(".text").textContent = text;
    li.classList.toggle("final", final);
  }

  agent(reply) {
    return this.line("agent", reply, this.agents, "agent");
  }

  agentText(reply, clause) {
    const li = this.agent(reply);
    const text = li.querySelector(".text");
    li.classList.remove("pending");
    text.textContent = text.textContent ? `${text.textContent} ${clause}` : clause;
  }

  agentDone(reply, heard) {
    const li = this.agents.get(reply);
    if (!li) return;
    li.classList.remove("pending", "paused");
    if (heard) li.querySelector(".text").textContent = heard;
    else if (!li.querySelector(".text").textContent) this.remove(this.agents, reply);
  }

  interrupted(reply, heard) {
    const li = this.agents.get(reply);
    if (!li) return;
    li.classList.remove("pending", "paused");
    li.classList.add("interrupted");
    li.querySelector(".text").textContent = heard;
  }

  dropOldest() {
    const li = this.list.firstElementChild;
    if (li.dataset.utterance !== undefined) this.users.delete(Number(li.dataset.utterance));
    else if (li.dataset.reply !== undefined) this.agents.delete(Number(li.dataset.reply));
    li.remove();
  }

  remove(map, key) {
    map.get(key)?.remove();
    map.delete(key);
  }

  latency(event) {
    const li = this.agent(event.reply);
    li.querySelector(".waterfall")?.remove();
    li.append(waterfall(event.waterfall_ms || {}, event.v2v_ms));
  }
}

/** A small bar chart of one turn: each stage's span, placed on the speech-end → audio-out axis. */
function waterfall(marks, v2vMs) {
  const figure = document.createElement("figure");
  figure.className = "waterfall";
  const total = Math.max(v2vMs ?? 0, ...STAGES.map(([mark]) => marks[mark] ?? 0), 1);
  if (v2vMs != null) figure.dataset.v2vMs = String(Math.round(v2vMs));
  const caption = document.createElement("figcaption");
  caption.textContent = v2vMs == null ? "voice-to-voice: not measured" : `voice-to-voice ${Math.round(v2vMs)} ms`;
  figure.append(caption);
  let previous = 0;
  for (const [mark, label] of STAGES) {
    const at = marks[mark];
    if (at == null) continue;
    const span = Math.max(0, at - previous);
    const row = document.createElement("div");
    row.className = "stage";
    row.dataset.mark = mark;
    const name = document.createElement("span");
    name.className = "stage-name";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "stage-track";
    const bar = document.createElement("span");
    bar.className = `bar ${mark}`;
    bar.style.left = `${(100 * previous) / total}%`;
    bar.style.width = `${(100 * span) / total}%`;
    track.append(bar);
    const ms = document.createElement("span");
    ms.className = "stage-ms";
    ms.textContent = `${Math.round(span)} ms`;
    row.append(name, track, ms);
    row.setAttribute("aria-label", `${label}: ${Math.round(span)} ms, at ${Math.round(at)} ms`);
    figure.append(row);
    previous = Math.max(previous, at);
  }
  return figure;
}

// -- the agent's audio level ---------------------------------------------------------

/** Peak level of a MediaStream through a WebAudio AnalyserNode, polled on a timer. */
class LevelMeter {
  constructor(context, stream, onLevel) {
    this.source = context.createMediaStreamSource(stream);
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 2048;
    this.source.connect(this.analyser);  // not to the destination: the <audio> element plays it
    this.samples = new Float32Array(this.analyser.fftSize);
    this.timer = setInterval(() => {
      this.analyser.getFloatTimeDomainData(this.samples);
      let peak = 0;
      for (const s of this.samples) peak = Math.max(peak, Math.abs(s));
      onLevel(peak);
    }, LEVEL_INTERVAL_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.source.disconnect();
  }
}

let shownLevel = 0;

function showLevel(peak) {
  voxline.agentPeak = Math.max(voxline.agentPeak, peak);
  document.body.dataset.agentPeak = voxline.agentPeak.toFixed(3);
  shownLevel = Math.max(peak, shownLevel * LEVEL_DECAY);
  ui.levelFill.style.width = `${Math.min(100, shownLevel * 100)}%`;
  ui.level.setAttribute("aria-valuenow", shownLevel.toFixed(2));
}

// -- the voice changer's controls ---------------------------------------------------

/** Equal voice values: numbers within rounding, or both absent (null / undefined). */
function sameNumber(a, b) {
  if (a == null || b == null) return (a == null) === (b == null);
  return Math.abs(a - b) < 1e-6;
}

function semitonesText(semitones) {
  if (sameNumber(semitones, 0)) return "0 semitones";
  const magnitude = Math.abs(semitones);
  return `${semitones > 0 ? "+" : "−"}${magnitude} semitone${magnitude === 1 ? "" : "s"}`;
}

const formantText = (formant) => `×${Number(formant).toFixed(2)}`;

/**
 * The preset select and the two sliders: the voice the next call offers and, during a
 * voice-changer call, vc.update messages at once (a moving slider throttled to one per
 * VC_UPDATE_INTERVAL_MS). Shows what the server confirmed and its latency.
 */
class VoicePanel {
  constructor(send) {
    this.send = send;  // (event) → true when it went out on the open channel
    // What the form shows (a reload may have kept it), else the server's default preset.
    this.voice = ui.preset.value in PRESETS ? { ...PRESETS[ui.preset.value] }
      : { semitones: Number(ui.semitones.value), formant: Number(ui.formant.value), monotone_hz: null };
    this.sent = null;  // the voice the server has (or will have once it applies what was sent)
    this.pending = {};  // slider values not sent yet
    this.timer = null;
    this.lastSentAt = -Infinity;
    ui.preset.addEventListener("change", () => this.choosePreset(ui.preset.value));
    for (const [input, key] of [[ui.semitones, "semitones"], [ui.formant, "formant"]]) {
      input.addEventListener("input", () => this.slide(key, Number(input.value), false));
      input.addEventListener("change", () => this.slide(key, Number(input.value), true));
    }
    this.show();
  }

  /** The offer's session.vc: the whole voice (and its preset's name, when it is one). */
  offer() {
    const preset = ui.preset.value;
    const vc = { ...this.voice };
    return preset in PRESETS ? { preset, ...vc } : vc;
  }

  choosePreset(name) {
    if (!(name in PRESETS)) return;
    this.voice = { ...PRESETS[name] };
    this.show();
    this.pending = {};
    this.cancelTimer();
    if (this.send({ type: "vc.update", preset: name })) this.markSent(this.voice);
  }

  slide(key, value, final) {
    this.voice[key] = value;
    const match = Object.entries(PRESETS).find(([, voice]) => VOICE_KEYS.every((k) => sameNumber(voice[k], this.voice[k])));
    ui.preset.value = match ? match[0] : "custom";
    this.show();
    this.pending[key] = value;
    const wait = this.lastSentAt + VC_UPDATE_INTERVAL_MS - performance.now();
    if (final || wait <= 0) this.flush();
    else if (this.timer === null) this.timer = setTimeout(() => this.flush(), wait);
  }

  flush() {
    this.cancelTimer();
    const update = {};
    for (const [key, value] of Object.entries(this.pending)) {
      if (!this.sent || !sameNumber(this.sent[key], value)) update[key] = value;
    }
    this.pending = {};
    if (!Object.keys(update).length) return;
    // Not in a call, or its channel not open yet: the offer, or the sync on open, carries it.
    if (this.send({ type: "vc.update", ...update })) this.markSent({ ...this.sent, ...update });
  }

  markSent(voice) {
    this.sent = { ...voice };
    this.lastSentAt = performance.now();
  }

  cancelTimer() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** The events channel opened: send the whole voice (it may have moved since the offer). */
  channelOpen() {
    this.pending = {};
    this.cancelTimer();
    const voice = { ...this.voice };
    if (this.send({ type: "vc.update", ...voice })) this.markSent(voice);
  }

  show() {
    ui.semitones.value = String(this.voice.semitones);
    ui.formant.value = String(this.voice.formant);
    ui.semitonesValue.textContent = semitonesText(this.voice.semitones);
    ui.formantValue.textContent = formantText(this.voice.formant);
    const monotone = this.voice.monotone_hz;
    ui.semitones.disabled = monotone != null;  // one fixed pitch: semitones change nothing
    ui.monotone.hidden = monotone == null;
    ui.monotone.textContent = monotone == null ? "" : `This voice speaks on one pitch (${monotone} Hz); the pitch slider does nothing.`;
  }

  /** A vc.ready or vc.updated: the voice the server now applies. */
  applied(event) {
    const { semitones, formant } = event;
    const monotone = event.monotone_hz ?? null;
    ui.applied.dataset.semitones = String(semitones);
    ui.applied.dataset.formant = String(formant);
    ui.applied.dataset.monotoneHz = monotone == null ? "" : String(monotone);
    ui.applied.textContent = monotone == null
      ? `${semitonesText(semitones)}, formant ${formantText(formant)}`
      : `one pitch ${monotone} Hz, formant ${formantText(formant)}`;
  }

  latency(event) {
    const parts = [event.algorithmic_ms, event.processing_ms, event.buffered_ms].map((ms) => Number(ms) || 0);
    const total = Math.round(parts.reduce((a, b) => a + b, 0));
    ui.latency.dataset.totalMs = String(total);
    const [algorithmic, processing, buffered] = parts.map(Math.round);
    const dropped = Math.round(Number(event.dropped_ms) || 0);
    ui.latency.textContent = `${total} ms (converter ${algorithmic} + processing ${processing} + buffer ${buffered})`
      + (dropped > 0 ? `, ${dropped} ms dropped` : "");
  }

  /** A new call, or none: nothing is confirmed yet. */
  reset(text) {
    this.pending = {};
    this.cancelTimer();
    this.sent = null;
    for (const key of ["semitones", "formant", "monotoneHz"]) delete ui.applied.dataset[key];
    delete ui.latency.dataset.totalMs;
    ui.applied.textContent = text;
    ui.latency.textContent = "–";
  }
}

// -- the call ------------------------------------------------------------------------

class CallRefused extends Error {}

/**
 * One call in one ``mode``: microphone, peer connection, events channel, the audio that
 * comes back. ``session`` is the offer's session options; ``onOpen`` runs when the events
 * channel opens. ``hangUp`` is idempotent.
 */
class Call {
  constructor(mode, session, { onEvent, onEnd, onOpen }) {
    this.mode = mode;
    this.session = session;
    this.onEvent = onEvent;
    this.onEnd = onEnd;
    this.onOpen = onOpen;
    this.ended = false;
    this.pc = null;
    this.channel = null;
    this.mic = null;
    this.context = null;
    this.meter = null;
    this.agentStream = null;
  }

  async start() {
    this.context = new AudioContext();  // made inside the click, so it may start
    this.mic = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
    if (this.ended) {  // stopped while the browser asked for the mic
      this.release();
      return;
    }
    const ice = new URLSearchParams(location.search).getAll("ice");
    this.pc = new RTCPeerConnection(ice.length ? { iceServers: ice.map((urls) => ({ urls })) } : {});
    this.pc.addEventListener("connectionstatechange", () => this.connectionChanged());
    this.pc.addEventListener("track", (event) => this.agentTrack(event));
    for (const track of this.mic.getAudioTracks()) this.pc.addTrack(track, this.mic);
    this.channel = this.pc.createDataChannel("events");
    this.channel.addEventListener("message", (event) => this.message(event.data));
    this.channel.addEventListener("open", () => this.onOpen(this));
    this.channel.addEventListener("close", () => this.hangUp("The server ended the call."));
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await iceGatheringDone(this.pc, ICE_GATHER_TIMEOUT_MS);
    if (this.ended) return;
    const answer = await postOffer(this.pc.localDescription, { ...this.session, ...sessionOptions(this.mode, this.mic) });
    if (this.ended) return;  // the server ends a call whose peer never connects
    await this.pc.setRemoteDescription(answer);
  }

  agentTrack(event) {
    // Your own voice is worth nothing late: ask the browser's jitter buffer for its least delay.
    if (this.mode === "voice_changer" && "jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = 0;
    this.agentStream = event.streams[0] ?? new MediaStream([event.track]);
    ui.audio.srcObject = this.agentStream;  // Chrome only feeds WebAudio a remote stream that also plays
    this.meter?.stop();
    this.meter = new LevelMeter(this.context, this.agentStream, showLevel);
  }

  /** Send ``event`` (JSON) on the events channel; false when it is not open. */
  send(event) {
    if (this.ended || this.channel?.readyState !== "open") return false;
    this.channel.send(JSON.stringify(event));
    return true;
  }

  message(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    this.onEvent(event);
  }

  connectionChanged() {
    const state = this.pc.connectionState;
    ui.connection.textContent = state;
    if (state === "connected") setState("in-call", MODES[this.mode].inCall);
    else if (state === "failed") this.hangUp("The connection failed (no network path to the server).");
  }

  hangUp(error = "") {
    if (this.ended) return;
    this.ended = true;
    this.release();
    this.onEnd(error);
  }

  /** Let go of everything the call holds; safe to repeat. */
  release() {
    this.meter?.stop();
    this.meter = null;
    if (this.channel && this.channel.readyState !== "closed") this.channel.close();
    this.pc?.close();
    for (const track of this.mic?.getTracks() ?? []) track.stop();
    if (this.context && this.context.state !== "closed") this.context.close();
    if (this.agentStream && ui.audio.srcObject === this.agentStream) ui.audio.srcObject = null;
  }
}

function iceGatheringDone(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {  // send the candidates found so far
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    }, timeoutMs);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

/**
 * The browser's own echo canceller works at the loudspeaker with the exact playout
 * reference; when it is on, the server skips its own, whose start-up (until it has
 * learnt that a headset has no echo path) would mute a barge-in over the first reply.
 */
function sessionOptions(mode, mic) {
  if (mode !== "agent") return {};  // only the agent has an echo canceller of its own
  const settings = mic.getAudioTracks()[0]?.getSettings() ?? {};
  return settings.echoCancellation === true ? { echo_cancel: false } : {};
}

async function postOffer(offer, session) {
  let response;
  try {
    response = await fetch(OFFER_URL, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: offer.sdp, type: offer.type, session }),
      signal: AbortSignal.timeout(OFFER_TIMEOUT_MS),
    });
  } catch (error) {
    throw new CallRefused(`Could not reach the server: ${error.message}`);
  }
  const body = await response.json().catch(() => null);
  if (response.ok && body?.sdp) return { sdp: body.sdp, type: body.type };
  // server_busy's message already says when to try again (its Retry-After).
  throw new CallRefused(body?.error?.message ?? `The server answered ${response.status} ${response.statusText}.`);
}

function startError(error) {
  if (error instanceof CallRefused) return error.message;
  if (error?.name === "NotAllowedError") return "Microphone permission was denied.";
  if (error?.name === "NotFoundError") return "No microphone was found.";
  return `Could not start the call: ${error?.message ?? error}`;
}

// -- the page ------------------------------------------------------------------------

/** Fill the preset select and the sliders' ranges from the server; false if it could not be asked. */
async function loadVoices() {
  let voices;
  try {
    const response = await fetch(VOICES_URL, { signal: AbortSignal.timeout(OFFER_TIMEOUT_MS) });
    voices = await response.json();
  } catch (error) {
    console.warn("voice changer presets unavailable:", error);
    return false;
  }
  PRESETS = voices.presets;
  const custom = ui.preset.querySelector("option[value=custom]");
  ui.preset.replaceChildren(...Object.keys(PRESETS).map((name) => new Option(name, name)), custom);
  ui.preset.value = voices.default in PRESETS ? voices.default : Object.keys(PRESETS)[0];
  for (const [input, key] of [[ui.semitones, "semitones"], [ui.formant, "formant"]]) {
    [input.min, input.max] = voices.ranges[key].map(String);
  }
  return true;
}

const transcript = new Transcript(ui.transcript);
const voicePanel = new VoicePanel((event) => voxline.call?.send(event) ?? false);
loadVoices().then((loaded) => {
  if (loaded) {
    voicePanel.choosePreset(ui.preset.value);
    document.body.dataset.voices = "loaded";
    return;
  }
  const radio = document.querySelector("input[name=mode][value=voice_changer]");
  radio.disabled = true;
  radio.closest("label").title = "The server did not say which voices it has.";
});
let lastErrorCode = "";

function selectedMode() {
  const checked = document.querySelector("input[name=mode]:checked");
  return checked && checked.value in MODES ? checked.value : "agent";
}

/** The mode the page is in: the live call's, else the one selected. */
const currentMode = () => voxline.call?.mode ?? selectedMode();

function showMode(mode) {
  const info = MODES[mode];
  document.body.dataset.mode = mode;
  ui.tagline.textContent = info.tagline;
  ui.levelLabel.textContent = info.level;
  ui.level.setAttribute("aria-label", info.meter);
  ui.vcPanel.hidden = mode !== "voice_changer";
  if (!voxline.call) ui.empty.textContent = info.empty;
}

function setState(state, label) {
  document.body.dataset.state = state;
  ui.state.textContent = label;
  ui.button.textContent = state === "idle" ? "Start call" : "Stop call";
  ui.button.classList.toggle("stop", state !== "idle");
  ui.mode.disabled = state !== "idle";  // a call's mode is fixed
}

function showError(message, code = "") {
  ui.error.textContent = message;
  ui.error.hidden = !message;
  lastErrorCode = message ? code : "";
}

function onEvent(event) {
  voxline.events.push(event);
  if (voxline.events.length > MAX_EVENTS_KEPT) voxline.events.shift();
  switch (event.type) {
    case "error":
      showError(`${MODES[currentMode()].error} (${event.code}): ${event.message}`, event.code);
      break;
    case "vc.ready":
    case "vc.updated":
      voicePanel.applied(event);
      if (lastErrorCode === "bad_vc_update") showError("");  // a later update went through
      break;
    case "vc.latency":
      voicePanel.latency(event);
      break;
    default:
      break;
  }
  transcript.apply(event);
  ui.empty.hidden = ui.transcript.childElementCount > 0;
}

function onOpen(call) {
  if (call.mode === "voice_changer") voicePanel.channelOpen();
}

function onEnd(error) {
  voxline.call = null;
  ui.connection.textContent = "";
  shownLevel = 0;
  showLevel(0);
  voicePanel.reset("not in a call");
  showMode(selectedMode());
  setState("idle", "Idle");
  showError(error);
}

async function startCall() {
  showError("");
  transcript.clear();
  voxline.events = [];
  voxline.agentPeak = 0;
  const mode = selectedMode();
  showMode(mode);
  voicePanel.reset("waiting for the server…");
  ui.empty.hidden = false;
  setState("starting", "Connecting…");
  const session = mode === "voice_changer" ? { mode, vc: voicePanel.offer() } : { mode };
  const call = new Call(mode, session, { onEvent, onEnd, onOpen });
  voxline.call = call;
  try {
    await call.start();
  } catch (error) {
    call.hangUp(startError(error));
  }
}

for (const radio of ui.modes) radio.addEventListener("change", () => showMode(selectedMode()));
showMode(selectedMode());  // a reload may keep the last selection

ui.button.addEventListener("click", () => {
  if (voxline.call) voxline.call.hangUp();
  else startCall();
});

// Closing the tab hangs up, so the server frees the call now rather than when ICE
// consent runs out (about 30 s).
window.addEventListener("pagehide", () => voxline.call?.hangUp());
