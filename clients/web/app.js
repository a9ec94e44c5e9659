// The voxline call page: one WebRTC call with the agent, live captions of both sides,
// a latency waterfall per turn and the agent's audio level. No dependencies.
//
// Call set-up (aiortc does not trickle ICE): getUserMedia → RTCPeerConnection → mic
// track + "events" data channel → offer → wait for ICE gathering to complete →
// POST /v1/webrtc/offer → answer. The server's JSON events arrive on the channel.
//
// What tests read: document.body.dataset.state ("idle", "starting", "in-call"),
// window.voxline.agentPeak (running peak of the agent's audio, 0..1), and the
// transcript lines: li.line.user[data-utterance] / li.line.agent[data-reply], each
// with a .text; agent lines carry .waterfall[data-v2v-ms] once the turn is measured.
// window.voxline.receive(event) shows an event as if it came from the server.

const OFFER_URL = "/v1/webrtc/offer";
const ICE_GATHER_TIMEOUT_MS = 5000;
const OFFER_TIMEOUT_MS = 20000;
const LEVEL_INTERVAL_MS = 50;
const LEVEL_DECAY = 0.85;
const MAX_EVENTS_KEPT = 500;  // window.voxline.events drops the oldest past this
const MAX_LINES = 400;  // the transcript drops its oldest lines past this
const MIC_CONSTRAINTS = { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } };

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
  }

  clear() {
    this.list.replaceChildren();
    this.users.clear();
    this.agents.clear();
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
      default:
        return undefined;
    }
  }

  line(who, key, map, label) {
    let li = map.get(key);
    if (!li) {
      li = document.createElement("li");
      li.className = `line ${who}`;
      li.dataset[who === "user" ? "utterance" : "reply"] = String(key);
      const name = document.createElement("span");
      name.className = "who";
      name.textContent = label;
      const text = document.createElement("span");
      text.className = "text";
      li.append(name, text);
      map.set(key, li);
      this.list.append(li);
      if (this.list.childElementCount > MAX_LINES) this.dropOldest();
      li.scrollIntoView({ block: "nearest" });
    }
    return li;
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
    else this.agents.delete(Number(li.dataset.reply));
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

// -- the call ------------------------------------------------------------------------

class CallRefused extends Error {}

/** One call: microphone, peer connection, events channel, agent audio. ``hangUp`` is idempotent. */
class Call {
  constructor(onEvent, onEnd) {
    this.onEvent = onEvent;
    this.onEnd = onEnd;
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
    this.channel.addEventListener("close", () => this.hangUp("The server ended the call."));
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await iceGatheringDone(this.pc, ICE_GATHER_TIMEOUT_MS);
    if (this.ended) return;
    const answer = await postOffer(this.pc.localDescription, sessionOptions(this.mic));
    if (this.ended) return;  // the server ends a call whose peer never connects
    await this.pc.setRemoteDescription(answer);
  }

  agentTrack(event) {
    this.agentStream = event.streams[0] ?? new MediaStream([event.track]);
    ui.audio.srcObject = this.agentStream;  // Chrome only feeds WebAudio a remote stream that also plays
    this.meter?.stop();
    this.meter = new LevelMeter(this.context, this.agentStream, showLevel);
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
    if (state === "connected") setState("in-call", "In call: ask something");
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
function sessionOptions(mic) {
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

const transcript = new Transcript(ui.transcript);

function setState(state, label) {
  document.body.dataset.state = state;
  ui.state.textContent = label;
  ui.button.textContent = state === "idle" ? "Start call" : "Stop call";
  ui.button.classList.toggle("stop", state !== "idle");
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function onEvent(event) {
  voxline.events.push(event);
  if (voxline.events.length > MAX_EVENTS_KEPT) voxline.events.shift();
  if (event.type === "error") showError(`Agent error (${event.code}): ${event.message}`);
  transcript.apply(event);
  ui.empty.hidden = ui.transcript.childElementCount > 0;
}

function onEnd(error) {
  voxline.call = null;
  ui.connection.textContent = "";
  shownLevel = 0;
  showLevel(0);
  setState("idle", "Idle");
  showError(error);
}

async function startCall() {
  showError("");
  transcript.clear();
  voxline.events = [];
  voxline.agentPeak = 0;
  ui.empty.hidden = false;
  setState("starting", "Connecting…");
  const call = new Call(onEvent, onEnd);
  voxline.call = call;
  try {
    await call.start();
  } catch (error) {
    call.hangUp(startError(error));
  }
}

ui.button.addEventListener("click", () => {
  if (voxline.call) voxline.call.hangUp();
  else startCall();
});

// Closing the tab hangs up, so the server frees the call now rather than when ICE
// consent runs out (about 30 s).
window.addEventListener("pagehide", () => voxline.call?.hangUp());
