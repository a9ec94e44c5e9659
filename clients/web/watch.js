// The voxline viewer page, /watch/{id}: one session's live captions, read from
// WS /v1/sessions/{id}/captions. As a page: a header (session id, kind, status), the
// finals in a scrolling list and the current partial greyed below them. With
// ?transparent=1 it is a streaming overlay (an OBS browser source): no chrome, a
// transparent background, large white outlined text, the last few lines only.
//
// Query options: ?token=T (passed on to the socket), ?from=start|now (start, the
// default: replay what was said, then live), ?transparent=1, ?lines=N (how many recent
// lines to show: 3 in the overlay, all otherwise), ?speaker=1 (speaker labels).
//
// The socket sends {"type": "session", ...}, then partial / final caption events (a
// partial replaces its utterance's current line, a final fixes it), then {"type":
// "end", "reason": "ended" | "node_lost"} and closes 1000; a refusal is an error event
// and a close 4401 / 4403 / 4404 (or 1013 when the server is busy). An unexpected close
// (1006, 1011, 1013, 45xx...) reconnects with backoff, always from=start, and skips the
// seqs already shown; after an end or a 4000-4499 refusal it does not. No dependencies.
//
// What tests read: document.body.dataset.state ("connecting", "live", "replay",
// "reconnecting", "ended", "error"), #status (its text), #error[data-code] (the error
// text, hidden when there is none), #captions li.line.final[data-seq][data-utterance]
// each with a .text (and a .who with ?speaker=1), #partial .line.partial (the open
// utterances), window.watch.events (the events received, the newest MAX_EVENTS_KEPT),
// window.watch.sockets (sockets opened so far) and window.watch.receive(event), which
// shows an event as if it came from the server.

const SOCKET_PATH = (id) => `/v1/sessions/${encodeURIComponent(id)}/captions`;
const CONNECT_TIMEOUT_MS = 10000;  // a socket not open by then is closed and retried
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const OVERLAY_LINES = 3;
const MAX_LINES = 1000;  // the history drops its oldest lines past this
const MAX_EVENTS_KEPT = 500;  // window.watch.events drops the oldest past this
const FROM_VALUES = ["start", "now"];
// A refusal's code when the server closed without an error event first.
const REFUSAL_CODES = { 4401: "invalid_token", 4403: "forbidden", 4404: "unknown_session" };

const END_STATUS = { ended: "ended", node_lost: "the session's server was lost" };
const ERROR_TITLES = {
  unknown_session: "No such session",
  missing_token: "This server needs a token in the link (?token=)",
  invalid_token: "The link's token is not valid",
  expired_token: "The link's token has expired",
  forbidden: "This link may not watch this session",
  server_busy: "The server is busy; trying again",
  bus_unavailable: "The session store is out of reach; trying again",
};

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), error: $("error"), captions: $("captions"), partial: $("partial"),
  empty: $("empty"), sessionId: $("session-id"), sessionKind: $("session-kind"),
  scroller: document.querySelector("main"),
};
const FOLLOW_SLACK_PX = 48;  // this close to the bottom, new lines keep the history scrolled down

const flag = (value) => value === "1" || value === "true" || value === "yes";

/** The page's options: the session id from the path's last segment, the rest from the query. */
function watchOptions(url) {
  const query = url.searchParams;
  const segment = url.pathname.replace(/\/+$/, "").split("/").pop() ?? "";
  let id = segment;
  try {
    id = decodeURIComponent(segment);
  } catch {
    // a malformed escape: the server answers for the id as it was typed
  }
  const transparent = flag(query.get("transparent"));
  const lines = Number.parseInt(query.get("lines") ?? "", 10);
  return {
    id,
    token: query.get("token") ?? "",
    from: FROM_VALUES.includes(query.get("from")) ? query.get("from") : "start",
    transparent,
    lines: lines > 0 ? Math.min(lines, MAX_LINES) : (transparent ? OVERLAY_LINES : null),
    speaker: flag(query.get("speaker")),
  };
}

// -- the captions ---------------------------------------------------------------------

/**
 * Caption lines, one per utterance (and speaker): a partial shows below the finals until
 * its final takes its place in the list. Events at or below the highest seq applied are
 * skipped, so a replay after a reconnect adds only what was missed. With ``lines`` only
 * that many recent lines show, the open partials counted first.
 */
class Captions {
  constructor(list, partials, { lines, speaker }) {
    this.list = list;
    this.partials = partials;
    this.lines = lines;  // null: the whole history (up to MAX_LINES)
    this.speaker = speaker;
    this.finals = new Map();  // utterance key → li in the list
    this.open = new Map();  // utterance key → the partial's line
    this.lastSeq = -Infinity;
  }

  /** Apply one partial or final; false when it was a seq already shown. */
  apply(event) {
    if (typeof event.seq === "number") {
      if (event.seq <= this.lastSeq) return false;
      this.lastSeq = event.seq;
    }
    const key = `${event.speaker ?? ""}:${event.utterance}`;
    const text = typeof event.text === "string" ? event.text : "";
    if (event.type === "partial") this.partial(key, event, text);
    else this.final(key, event, text);
    this.layout();
    return true;
  }

  partial(key, event, text) {
    let line = this.open.get(key);
    if (!text.trim()) {  // nothing heard yet (or any more) in this utterance
      line?.remove();
      this.open.delete(key);
      return;
    }
    if (!line) {
      line = this.newLine("p", "partial", event);
      this.open.set(key, line);
      this.partials.append(line);
    }
    this.fill(line, event, text);
  }

  final(key, event, text) {
    this.open.get(key)?.remove();
    this.open.delete(key);
    if (!text.trim()) return;  // a noise the recogniser heard no words in
    let li = this.finals.get(key);
    if (!li) {
      li = this.newLine("li", "final", event);
      li.dataset.key = key;
      this.finals.set(key, li);
      this.list.append(li);
    }
    this.fill(li, event, text);
  }

  newLine(tag, kind, event) {
    const line = document.createElement(tag);
    line.className = `line ${kind}`;
    line.dataset.utterance = String(event.utterance);
    if (event.speaker) {
      line.dataset.speaker = event.speaker;
      line.classList.add(event.speaker);
    }
    if (this.speaker && event.speaker) {
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = event.speaker;
      line.append(who);
    }
    const text = document.createElement("span");
    text.className = "text";
    line.append(text);
    return line;
  }

  fill(line, event, text) {
    line.querySelector(".text").textContent = text;
    if (typeof event.seq === "number") line.dataset.seq = String(event.seq);
    if (typeof event.start === "number") line.dataset.start = event.start.toFixed(2);
    if (typeof event.end === "number") line.dataset.end = event.end.toFixed(2);
  }

  /** Keep the list bounded and, with ``lines``, only the most recent lines showing. */
  layout() {
    const keep = this.lines ?? MAX_LINES;
    while (this.list.childElementCount > keep) this.dropOldest();
    const open = [...this.partials.children];
    const partialsShown = Math.min(open.length, keep);
    open.forEach((line, i) => { line.hidden = i < open.length - partialsShown; });
    if (this.lines !== null) {
      const finalsShown = keep - partialsShown;
      const finals = [...this.list.children];
      finals.forEach((li, i) => { li.hidden = i < finals.length - finalsShown; });
    }
    this.partials.hidden = partialsShown === 0;
  }

  dropOldest() {
    const li = this.list.firstElementChild;
    this.finals.delete(li.dataset.key);
    li.remove();
  }

  get count() {
    return this.list.childElementCount + this.open.size;
  }
}

// -- the socket -----------------------------------------------------------------------

/**
 * The viewer socket for one session, reconnected with backoff after an unexpected close
 * (from=start: ``Captions`` skips what it has shown). It stops for good after an
 * ``end`` event, a 4000-4499 refusal, or ``stop()``; ``stop`` is idempotent.
 */
class Viewer {
  constructor(options, { onEvent, onRetry, onRefused }) {
    this.options = options;
    this.onEvent = onEvent;
    this.onRetry = onRetry;  // (delayMs, closeEvent) before a reconnect
    this.onRefused = onRefused;  // (closeEvent, told) after a 44xx close; told: an error event came first
    this.socket = null;
    this.sockets = 0;
    this.attempts = 0;  // failed connections since the last session event
    this.retryTimer = null;
    this.stopped = false;
    this.told = false;  // the current socket sent an error event
  }

  url(from) {
    const query = new URLSearchParams({ from });
    if (this.options.token) query.set("token", this.options.token);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${SOCKET_PATH(this.options.id)}?${query}`;
  }

  connect(from) {
    if (this.stopped) return;
    const socket = new WebSocket(this.url(from));
    this.socket = socket;
    this.sockets += 1;
    this.told = false;
    const timer = setTimeout(() => {
      if (socket.readyState === WebSocket.CONNECTING) socket.close();  // fires close: retried
    }, CONNECT_TIMEOUT_MS);
    socket.addEventListener("message", (message) => this.message(message.data));
    socket.addEventListener("close", (event) => {
      clearTimeout(timer);
      if (socket === this.socket) this.closed(event);
    });
  }

  message(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      console.warn("viewer socket: a message that is not JSON:", data);
      return;
    }
    if (!event || typeof event.type !== "string") return;
    if (event.type === "session") this.attempts = 0;
    if (event.type === "error") this.told = true;
    if (event.type === "end") this.stopped = true;  // the server closes 1000 next
    this.onEvent(event);
  }

  closed(event) {
    this.socket = null;
    if (this.stopped) return;
    if (event.code >= 4000 && event.code < 4500) {  // a refusal (like HTTP 4xx); 45xx is the server's trouble
      this.stopped = true;
      this.onRefused(event, this.told);
      return;
    }
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempts);
    const delay = Math.round(backoff * (0.5 + Math.random() / 2));  // viewers of one lost node spread out
    this.attempts += 1;
    this.onRetry(delay, event);
    this.retryTimer = setTimeout(() => this.connect("start"), delay);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.socket?.close(1000);
    this.socket = null;
  }
}

// -- the page -------------------------------------------------------------------------

const options = watchOptions(new URL(location.href));
const captions = new Captions(ui.captions, ui.partial, options);
const viewer = new Viewer(options, { onEvent: receive, onRetry: retrying, onRefused: refused });

export const watch = {
  options, events: [], receive: (event) => receive(event),
  get sockets() { return viewer.sockets; },
};
window.watch = watch;

function setStatus(state, text) {
  document.body.dataset.state = state;
  ui.status.textContent = text;
}

function showError(message, code = "") {
  ui.error.textContent = message;
  ui.error.hidden = !message;
  if (code) ui.error.dataset.code = code;
  else delete ui.error.dataset.code;
}

function showSession(event) {
  ui.sessionId.textContent = event.id ?? options.id;
  ui.sessionKind.textContent = event.kind ?? "–";
  const started = typeof event.started_at === "number" ? new Date(event.started_at * 1000) : null;
  ui.sessionKind.title = [event.node && `node ${event.node}`, started && `started ${started.toLocaleString()}`]
    .filter(Boolean).join(", ");
  if (event.live === false) setStatus("replay", "ended (replaying what was said)");
  else setStatus("live", "live");
  showError("");
}

/** True when the history shows its newest line (a reader who scrolled up is left there). */
function following() {
  const { scrollTop, clientHeight, scrollHeight } = ui.scroller;
  return scrollTop + clientHeight >= scrollHeight - FOLLOW_SLACK_PX;
}

function receive(event) {
  watch.events.push(event);
  if (watch.events.length > MAX_EVENTS_KEPT) watch.events.shift();
  switch (event.type) {
    case "session":
      showSession(event);
      break;
    case "partial":
    case "final": {
      const follow = following();
      captions.apply(event);
      ui.empty.hidden = captions.count > 0;
      if (follow) ui.scroller.scrollTop = ui.scroller.scrollHeight;
      break;
    }
    case "end":
      setStatus("ended", END_STATUS[event.reason] ?? "ended");
      document.body.dataset.reason = event.reason ?? "ended";
      break;
    case "error":
      showError(`${ERROR_TITLES[event.code] ?? "Error"} (${event.code}): ${event.message ?? ""}`, event.code);
      break;
    default:
      break;
  }
}

function retrying(delayMs, event) {
  const seconds = Math.max(1, Math.round(delayMs / 1000));
  setStatus("reconnecting", `connection lost; reconnecting in ${seconds} s`);
  console.info(`viewer socket closed (${event.code}); reconnecting in ${delayMs} ms`);
}

function refused(event, told) {
  setStatus("error", "not available");
  if (told) return;  // the error event before the close said why
  const code = REFUSAL_CODES[event.code] ?? "";
  const title = ERROR_TITLES[code] ?? "The server refused to show this session";
  showError(`${title} (close ${event.code})${event.reason ? `: ${event.reason}` : ""}`, code);
}

document.documentElement.classList.toggle("overlay", options.transparent);
document.body.classList.toggle("overlay", options.transparent);
document.body.classList.toggle("speakers", options.speaker);
ui.sessionId.textContent = options.id || "–";
if (options.id) document.title = `voxline · captions · ${options.id}`;

if (!options.id) {
  setStatus("error", "not available");
  showError("No session in the address: open /watch/SESSION_ID.");
} else {
  setStatus("connecting", "connecting…");
  viewer.connect(options.from);
}

window.addEventListener("pagehide", () => viewer.stop());
