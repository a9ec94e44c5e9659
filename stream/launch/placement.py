"""Which worker a connection goes to: the front's placement, sans I/O.

``parse_request_line`` reads the HTTP request line the front peeked at;
``Placement.choose`` picks a worker from each worker's latest report
(``app.state.node_report()``): the worker ``?node=ID`` names; for
``/v1/sessions/{id}/...`` and ``/watch/{id}`` the worker that reported owning session
``id``; otherwise the one with the most headroom (the lowest fraction of its session and
call limits in use, counting the session-opening connections handed to it since its
report; ties: round robin). When none has headroom, the least loaded one anyway: it
refuses cleanly itself. Times are passed in by the caller, so it is tested without a clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

PENDING_SETTLE_S = 0.5
"""A session-opening connection counts as load on its worker until a report received
this long after the handover (by then the worker counts the session itself)."""
REPORT_STALE_S = 5.0
"""A worker silent this long gets new connections only when every worker is silent."""
MAX_REMEMBERED_OWNERS = 10_000
"""Sessions whose owner the front remembers after they leave the reports (ended sessions
keep their transcript on the owner for ``bus.retention_s``); the oldest are forgotten."""
SESSION_PATHS = {"/v1/captions": "session", "/v1/realtime": "call", "/v1/webrtc/offer": "call"}
"""Paths that open a session, and the limit they count against (calls also count as sessions)."""



@dataclass(frozen=True, slots=True)
class RequestTarget:
    """What routing needs from a request line: method, path, query parameters."""

    method: str
    path: str
    query: dict[str, list[str]]

    @property
    def node(self) -> str | None:
        """The ``?node=ID`` the client asked for, if any."""
        values = self.query.get("node")
        return values[0] if values else None

    @property
    def session_id(self) -> str | None:
        """The session ``/v1/sessions/{id}/...`` or ``/watch/{id}`` is about, if either."""
        parts = self.path.split("/")
        if len(parts) >= 4 and parts[1:3] == ["v1", "sessions"] and parts[3]:
            return parts[3]
        if len(parts) >= 3 and parts[1] == "watch" and parts[2]:
            return parts[2]
        return None


def parse_request_line(data: bytes) -> RequestTarget | None:
    """The target of the HTTP request line at the start of ``data``; None when it is not one."""
    line, crlf, _ = data.partition(b"\r\n")
    if not crlf:
        return None
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    url = urlsplit(target)
    return RequestTarget(method=method, path=url.path or "/", query=parse_qs(url.query))


@dataclass(slots=True)
class WorkerLoad:
    """What the front knows of one worker: its state, latest report, recent handovers."""

    index: int
    node_id: str
    ready: bool = False
    report: dict[str, Any] = field(default_factory=dict)
    reported_at: float = -1.0
    pending: deque[tuple[float, str]] = field(default_factory=deque)
    """(handed over at, kind) of session-opening connections not yet in a report."""

    def load(self, kind: str | None) -> float:
        """The fraction of this worker's limits in use, counting pending handovers."""
        self.pending_settle()
        sessions = _count(self.report, "sessions") + len(self.pending)
        fraction = sessions / max(1, _count(self.report, "max_sessions"))
        if kind == "call":
            calls = _count(self.report, "calls") + sum(k == "call" for _, k in self.pending)
            max_calls = _count(self.report, "max_calls")
            fraction = max(fraction, calls / max_calls if max_calls > 0 else 1.0)
        return fraction

    def pending_settle(self) -> None:
        while self.pending and self.pending[0][0] + PENDING_SETTLE_S <= self.reported_at:
            self.pending.popleft()

    def headroom(self, kind: str | None) -> bool:
        """Room for one more of ``kind``: the worker says so and the pending ones leave some."""
        said = self.report.get("headroom", True)
        if kind == "call":
            said = self.report.get("call_headroom", said)
        return bool(said) and self.load(kind) < 1.0

    def session_ids(self) -> list[str]:
        ids = self.report.get("session_ids")
        return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _count(report: dict[str, Any], key: str) -> int:
    value = report.get(key, 0)
    return value if isinstance(value, int) else 0


class Placement:
    """Which worker a connection goes to: fed reports and handovers, asked ``choose``.

    Times are ``time.monotonic()`` seconds, passed in by the caller.
    """

    def __init__(self, node_ids: list[str]) -> None:
        self.workers = [WorkerLoad(i, node_id) for i, node_id in enumerate(node_ids)]
        self.owners: OrderedDict[str, int] = OrderedDict()
        """Session id → index of the worker that reported it, latest reports last."""
        self._next = 0  # round robin among equals

    def reported(self, index: int, state: str, report: dict[str, Any], now: float) -> None:
        """A worker's status message: ``ready`` (with its report) or ``stopping``."""
        worker = self.workers[index]
        worker.ready = state == "ready"
        worker.report = report
        worker.reported_at = now
        for session_id in worker.session_ids():
            self.owners[session_id] = index
            self.owners.move_to_end(session_id)
        while len(self.owners) > MAX_REMEMBERED_OWNERS:
            self.owners.popitem(last=False)

    def down(self, index: int) -> None:
        """The worker is gone (or restarting): route nothing to it until it reports ready."""
        worker = self.workers[index]
        worker.ready, worker.report, worker.reported_at = False, {}, -1.0
        worker.pending.clear()
        for session_id in [i for i, owner in self.owners.items() if owner == index]:
            del self.owners[session_id]  # its logs died with it

    def ready_count(self) -> int:
        return sum(w.ready for w in self.workers)

    def choose(self, target: RequestTarget | None, now: float, exclude: frozenset[int] = frozenset()) -> int | None:
        """The index of the worker for ``target`` (None: no worker is ready); records the handover.

        ``target`` None (no readable request line) goes where a plain request would.
        """
        ready = [w for w in self.workers if w.ready and w.index not in exclude]
        if not ready:
            return None
        fresh = [w for w in ready if now - w.reported_at < REPORT_STALE_S] or ready
        kind = SESSION_PATHS.get(target.path) if target else None
        chosen = self._pinned(target, ready) if target else None
        if chosen is None:
            roomy = [w for w in fresh if w.headroom(kind)]
            chosen = self._least_loaded(roomy or fresh, kind)
        if kind is not None:
            chosen.pending.append((now, kind))
        return chosen.index

    def _pinned(self, target: RequestTarget, ready: list[WorkerLoad]) -> WorkerLoad | None:
        """The worker ``?node=`` names, else the owner of the session in the path (if ready)."""
        node, session_id = target.node, target.session_id
        if node is not None:
            named = next((w for w in ready if w.node_id == node), None)
            if named is not None:
                return named
        if session_id is not None and session_id in self.owners:
            owner = self.workers[self.owners[session_id]]
            return owner if owner in ready else None
        return None

    def _least_loaded(self, workers: list[WorkerLoad], kind: str | None) -> WorkerLoad:
        lowest = min(w.load(kind) for w in workers)
        tied = [w for w in workers if w.load(kind) == lowest]
        n = len(self.workers)
        chosen = min(tied, key=lambda w: (w.index - self._next) % n)
        self._next = (chosen.index + 1) % n
        return chosen
