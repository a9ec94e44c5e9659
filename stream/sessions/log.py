"""Caption sessions shared with viewers: ids, each session's event log, the in-process bus.

Every caption-making session (a ``/v1/captions`` socket, a call, a Realtime socket)
opens a ``SessionLog`` on the node's bus and publishes its partials and finals there,
each numbered (``seq``) and stamped (``emitted_at``, Unix seconds); ``end`` closes it.
Viewers read a log from the start (replay, superseded partials left out) or from now,
and stop after its ``end`` event. ``LocalBus`` keeps logs in this process (the embedded
default); ``redis_bus.RedisBus`` adds Redis so that any node can serve any viewer.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
KINDS = ("captions", "call", "realtime")
MAX_FINALS = 20000
"""Finals a log keeps for its transcript (hours of speech), whatever its event bound."""
ENDED_LOGS_KEPT = 256
"""Ended sessions whose logs a node keeps in memory (Redis keeps them longer when set)."""


def new_session_id() -> str:
    """A fresh, unguessable session id (URL-safe)."""
    return secrets.token_urlsafe(12)


class UnknownSession(LookupError):
    """No live or retained session has this id."""


class BusUnavailable(RuntimeError):
    """The shared bus cannot be reached now (only sessions of this node can be served)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who a session is: its id, kind, node, start time (Unix s) and owner (a token's subject)."""

    id: str
    kind: str
    node: str
    started_at: float
    owner: str = ""

    def event(self, *, live: bool) -> dict[str, Any]:
        """The ``session`` event a viewer gets first."""
        return {"type": "session", "id": self.id, "kind": self.kind, "node": self.node,
                "started_at": self.started_at, "live": live}

    def as_fields(self) -> dict[str, str]:
        """The registry's hash fields."""
        return {"id": self.id, "kind": self.kind, "node": self.node, "started_at": repr(self.started_at),
                "owner": self.owner}

    @classmethod
    def from_fields(cls, fields: dict[str, str], session_id: str | None = None) -> SessionInfo:
        """Read ``as_fields`` back; ``session_id`` (the key's) wins over the hash's ``id``.

        The hash comes from Redis, which any writer can reach: a field missing or
        malformed takes its default (kind ``captions``, start time 0) rather than raise.
        """
        kind = fields.get("kind", "captions")
        return cls(session_id or fields.get("id", ""), kind if kind in KINDS else "captions", fields.get("node", ""),
                   _finite_float(fields.get("started_at")), fields.get("owner", ""))


def _finite_float(text: str | None) -> float:
    """``text`` as a finite float; 0.0 for anything else (missing, not a number, NaN, infinite)."""
    try:
        value = float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


class MalformedEvent(ValueError):
    """A stored event that no node wrote: not a JSON object with an integer ``seq`` and a string ``type``."""


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One event of a session's log, with its JSON text made once for every viewer."""

    seq: int
    type: str
    text: str

    @classmethod
    def make(cls, seq: int, event: dict[str, Any]) -> BusEvent:
        """Number and stamp ``event`` (a caption event, or ``end``)."""
        body = {**event, "seq": seq, "emitted_at": round(time.time(), 4)}
        return cls(seq, str(event.get("type", "")), json.dumps(body, separators=(",", ":")))

    @classmethod
    def parse(cls, text: Any) -> BusEvent:
        """Read an event's JSON text back (as the Redis stream holds it).

        Raises:
            MalformedEvent: not a JSON object with an integer ``seq`` of at least 1 and a string ``type``.
        """
        if not isinstance(text, str):
            raise MalformedEvent(f"an event is JSON text, not {type(text).__name__}")
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise MalformedEvent(f"an event is one JSON object: {exc}") from None
        if not isinstance(body, dict):
            raise MalformedEvent("an event is one JSON object")
        seq, kind = body.get("seq"), body.get("type")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1 or not isinstance(kind, str):
            raise MalformedEvent("an event has an integer 'seq' of at least 1 and a string 'type'")
        return cls(seq, kind, text)

    def body(self) -> dict[str, Any]:
        """The event as a dict."""
        decoded: dict[str, Any] = json.loads(self.text)
        return decoded


def compact_replay(events: Iterable[BusEvent]) -> list[BusEvent]:
    """A replay without the partials a later event superseded: every final, the last partial, ``end``."""
    events = list(events)
    last = max((i for i, e in enumerate(events) if e.type != "partial"), default=-1)
    kept = [e for e in events[: last + 1] if e.type != "partial"]
    tail = [e for e in events[last + 1 :] if e.type == "partial"]
    return kept + tail[-1:]


class SessionLog:
    """One session's events in order: bounded, waitable, ended once by ``end``.

    ``publish`` never blocks (partials and finals are made on the event loop);
    ``on_publish`` (the Redis writer's nudge) is called after each.
    """

    def __init__(self, info: SessionInfo, maxlen: int, on_publish: Callable[[SessionLog], None] | None = None) -> None:
        self.info = info
        self.events: collections.deque[BusEvent] = collections.deque(maxlen=maxlen)
        self.finals: collections.deque[BusEvent] = collections.deque(maxlen=MAX_FINALS)
        self.last_seq = 0
        self.ended_at: float | None = None
        self._changed = asyncio.Event()
        self._on_publish = on_publish

    @property
    def id(self) -> str:
        """The session's id."""
        return self.info.id

    @property
    def ended(self) -> bool:
        """True once ``end`` was published."""
        return self.ended_at is not None

    def publish(self, event: dict[str, Any]) -> None:
        """Append a caption event (``partial`` or ``final``); ignored after ``end``."""
        if self.ended:
            return
        self._append(event)

    def end(self, reason: str = "ended") -> None:
        """Append the ``end`` event; idempotent."""
        if self.ended:
            return
        self._append({"type": "end", "reason": reason})
        self.ended_at = time.monotonic()
        self._compact()

    def _append(self, event: dict[str, Any]) -> None:
        self.last_seq += 1
        item = BusEvent.make(self.last_seq, event)
        self.events.append(item)
        if item.type == "final":
            self.finals.append(item)
        self._changed.set()
        self._changed.clear()
        if self._on_publish is not None:
            self._on_publish(self)

    def mirror(self, event: BusEvent) -> None:
        """Append an event another node numbered (a copy of its log); older seqs are ignored."""
        if (event.seq and event.seq <= self.last_seq) or self.ended:
            return
        self.last_seq = event.seq or self.last_seq + 1
        self.events.append(event)
        if event.type == "final":
            self.finals.append(event)
        if event.type == "end":
            self.ended_at = time.monotonic()
            self._compact()
        self._changed.set()
        self._changed.clear()

    def _compact(self) -> None:
        # An ended log is kept for replays and its transcript, which never show a
        # superseded partial: holding only finals and ``end`` keeps ended logs small.
        self.events = collections.deque(compact_replay(self.since(0)), maxlen=self.events.maxlen)

    def since(self, seq: int) -> list[BusEvent]:
        """Retained events after ``seq``; finals trimmed from the bounded log come from the finals."""
        newer = [e for e in self.events if e.seq > seq]
        if self.events and self.events[0].seq > seq + 1:
            first = self.events[0].seq
            newer = [f for f in self.finals if seq < f.seq < first] + newer
        return newer

    def transcript(self) -> list[dict[str, Any]]:
        """Every final so far, as dicts."""
        return [f.body() for f in self.finals]

    async def follow(self, after_seq: int) -> AsyncIterator[BusEvent]:
        """Events after ``after_seq`` as they come, ending with ``end``."""
        seq = after_seq
        while True:
            for event in self.since(seq):
                seq = event.seq
                yield event
                if event.type == "end":
                    return
            await self._changed.wait()


@dataclass
class LocalBus:
    """The in-process bus: this node's logs, live and recently ended; no other node sees them."""

    node_id: str
    maxlen: int = 20000
    retention_s: float = 3600.0
    on_publish: Callable[[SessionLog], None] | None = None
    logs: dict[str, SessionLog] = field(default_factory=dict)

    def open(self, kind: str, owner: str = "", session_id: str | None = None) -> SessionLog:
        """A new live session's log (a fresh id unless one is asked for and free)."""
        if session_id is None or session_id in self.logs:
            session_id = new_session_id()
        info = SessionInfo(session_id, kind, self.node_id, round(time.time(), 3), owner)
        log = SessionLog(info, self.maxlen, self.on_publish)
        self._forget_old()
        self.logs[session_id] = log
        if self.on_publish is not None:
            self.on_publish(log)  # registered on the shared bus at once, before its first event
        return log

    def live_sessions(self) -> list[SessionLog]:
        """Logs of sessions not yet ended."""
        return [log for log in self.logs.values() if not log.ended]

    def get(self, session_id: str) -> SessionLog | None:
        """This node's log of ``session_id``, if it has one."""
        return self.logs.get(session_id)

    def _forget_old(self) -> None:
        now = time.monotonic()
        ended = [log for log in self.logs.values() if log.ended_at is not None]
        for log in ended:
            if log.ended_at is not None and now - log.ended_at > self.retention_s:
                del self.logs[log.id]
        ended = [log for log in self.logs.values() if log.ended]
        for log in ended[: max(0, len(ended) - ENDED_LOGS_KEPT)]:
            del self.logs[log.id]


async def local_replay(log: SessionLog, from_start: bool) -> AsyncIterator[BusEvent]:
    """A viewer's events from a local log: the replay (if asked), then live ones, up to ``end``."""
    top = log.last_seq
    if from_start:
        replay = compact_replay(log.since(0))
    else:
        replay = [log.events[-1]] if log.ended and log.events else []
    for event in replay:
        yield event
        if event.type == "end":
            return
    async for event in log.follow(top):
        yield event


def caption_from_agent_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """The viewer caption an agent event makes (the user's words, the agent's words heard), if any."""
    kind = event.get("type")
    if kind in ("user_partial", "user_final"):
        return {"type": "final" if kind == "user_final" else "partial", "speaker": "user",
                "utterance": event.get("utterance", 0), "text": event.get("text", ""),
                "start": event.get("start_s"), "end": event.get("end_s")}
    if kind == "agent_done" and event.get("text"):
        return {"type": "final", "speaker": "agent", "reply": event.get("reply"), "text": event["text"]}
    if kind == "interrupted" and event.get("heard"):  # cut short: the words the caller heard
        return {"type": "final", "speaker": "agent", "reply": event.get("reply"), "text": event["heard"],
                "interrupted": True}
    return None
