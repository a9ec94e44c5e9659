"""The Redis bus: the registry of nodes and sessions, and caption streams any node can serve.

Keys (``voxline:`` prefix):

- ``node:{id}`` hash (url, load report as JSON), TTL ``ttl_s``, refreshed every
  ``heartbeat_s``; ``nodes`` is the set of ids (stale ones are pruned on read).
- ``session:{id}`` hash (``SessionInfo`` fields, ``ended``), TTL ``ttl_s`` while live,
  refreshed by its node's heartbeat, so a dead node's sessions vanish on their own;
  ``retention_s`` once ended.
- ``stream:{id}``: the session's events, entry id ``{seq}-0`` (the publisher's own
  numbering, so a rewrite after a Redis restart is idempotent), ``MAXLEN ~ stream_maxlen``,
  expiring ``retention_s`` after the end.

Faults: the node's own logs are the truth. Each log has an ``acked`` seq (what Redis
holds); the writer sends what is newer. When Redis is unreachable the node keeps
serving its sessions, logs it once, and retries; when it is back the writer asks each
stream's top id (none: Redis lost its data) and sends the rest, finals first kept
whole, so viewers lose no final. A viewer on another node reads the stream from its
last seq again after a reconnect, so it gets nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from voxline.config import BusConfig
from voxline.stream.sessions.log import (
    BusEvent,
    BusUnavailable,
    LocalBus,
    MalformedEvent,
    SessionInfo,
    SessionLog,
    UnknownSession,
    compact_replay,
    local_replay,
)

log = logging.getLogger(__name__)

PREFIX = "voxline:"
RETRY_S = 0.5
READ_BLOCK_MS = 1000
BATCH = 500
MAX_CONNECTIONS = 64


@dataclass
class _Mirror:
    """This node's copy of a remote session's log, and the reader filling it."""

    log: SessionLog
    loaded: asyncio.Event
    task: asyncio.Task[None]
    viewers: int = 0


def _key(kind: str, ident: str) -> str:
    return f"{PREFIX}{kind}:{ident}"


class RedisBus:
    """A node's link to the shared registry and caption streams (see module doc)."""

    def __init__(self, config: BusConfig, local: LocalBus, url: str, report: Callable[[], dict[str, Any]]) -> None:
        self.config = config
        self.local = local
        self.node_url = url
        self.report = report
        # A bounded pool that waits for a free connection: viewers share mirrors, so a few
        # connections serve thousands, and a burst of new viewers cannot exhaust descriptors.
        pool = aioredis.BlockingConnectionPool.from_url(
            config.redis_url, max_connections=MAX_CONNECTIONS, timeout=5.0,
            socket_connect_timeout=1.0, socket_timeout=5.0, decode_responses=True,
        )
        self.redis: Any = aioredis.Redis(connection_pool=pool)
        self.up = False
        self._down_logged = False
        self._acked: dict[str, int] = {}
        self._registered: set[str] = set()
        self._mirrors: dict[str, _Mirror] = {}
        self._malformed_logged: set[str] = set()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        local.on_publish = self._nudge

    # --- lifetime -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer and the heartbeat; Redis need not be up yet."""
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="voxline-bus-writer"),
            asyncio.create_task(self._heartbeat_loop(), name="voxline-bus-heartbeat"),
        ]

    async def close(self) -> None:
        """Flush what Redis can still take (briefly), drop this node's entry, stop the tasks."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._flush()
                await self.redis.delete(_key("node", self.local.node_id))
                await self.redis.srem(PREFIX + "nodes", self.local.node_id)
        readers = [m.task for m in self._mirrors.values()]
        for task in [*self._tasks, *readers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *readers, return_exceptions=True)
        await self.redis.aclose()

    def _nudge(self, _log: SessionLog) -> None:
        self._dirty.set()

    def _went_down(self, exc: Exception) -> None:
        if self.up or not self._down_logged:
            log.warning("redis unreachable (%s): serving this node's sessions; will catch up when it returns", exc)
            self._down_logged = True
        self.up = False
        self._acked.clear()  # ask each stream's top again once it is back: Redis may have lost it
        self._registered.clear()

    def _came_up(self) -> None:
        if not self.up:
            if self._down_logged:
                log.warning("redis reachable again: caught up")
            self.up = True

    # --- writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._flush()
                self._came_up()
            except (RedisError, OSError) as exc:
                self._went_down(exc)
                await asyncio.sleep(RETRY_S)
                self._dirty.set()

    async def _flush(self) -> None:
        logs = list(self.local.logs.values())
        unknown = [lg for lg in logs if lg.id not in self._acked]
        if unknown:
            pipe = self.redis.pipeline(transaction=False)
            for lg in unknown:
                pipe.xrevrange(_key("stream", lg.id), count=1)
            tops = await pipe.execute()
            for lg, top in zip(unknown, tops, strict=True):
                self._acked[lg.id] = int(top[0][0].split("-")[0]) if top else 0
        pipe = self.redis.pipeline(transaction=False)
        sent: list[tuple[SessionLog, int, bool]] = []
        for lg in logs:
            acked = self._acked.get(lg.id, 0)
            if lg.id not in self._registered:  # new to Redis (or Redis lost it): before its first event
                pipe.hset(_key("session", lg.id), mapping=self._session_fields(lg))
                pipe.expire(_key("session", lg.id), self._session_ttl(lg))
                sent.append((lg, 0, lg.ended))
            if lg.last_seq <= acked:
                continue
            pending = lg.since(acked)
            if acked < lg.last_seq - 1:
                pending = compact_replay(pending)
            for event in pending:
                pipe.xadd(_key("stream", lg.id), {"e": event.text}, id=f"{event.seq}-0",
                          maxlen=self.config.stream_maxlen, approximate=True)
            if lg.ended:
                pipe.hset(_key("session", lg.id), "ended", "1")
                pipe.expire(_key("session", lg.id), int(self.config.retention_s))
                pipe.expire(_key("stream", lg.id), int(self.config.retention_s))
            sent.append((lg, lg.last_seq, lg.ended))
        if not sent:
            return
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, (ConnectionError, OSError)):
                raise result
            if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
                log.warning("redis refused a caption event: %s", result)
        for lg, seq, _ended in sent:
            self._registered.add(lg.id)
            if seq:
                self._acked[lg.id] = max(self._acked.get(lg.id, 0), seq)
        for lg_id in [i for i in self._acked if i not in self.local.logs]:
            del self._acked[lg_id]
        self._registered &= set(self.local.logs)

    def _session_fields(self, lg: SessionLog) -> dict[str, str]:
        return {**lg.info.as_fields(), "ended": "1" if lg.ended else "0"}

    def _session_ttl(self, lg: SessionLog) -> int:
        return int(self.config.retention_s) if lg.ended else max(1, round(self.config.ttl_s))

    # --- heartbeat --------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.heartbeat()
                self._came_up()
                self._dirty.set()
            except (RedisError, OSError) as exc:
                self._went_down(exc)
            await asyncio.sleep(self.config.heartbeat_s)

    async def heartbeat(self) -> None:
        """Refresh this node's entry and its live sessions' TTLs (re-creating any Redis lost)."""
        ttl = max(1, round(self.config.ttl_s))
        node_key = _key("node", self.local.node_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(node_key, mapping={"node_id": self.local.node_id, "url": self.node_url,
                                     "report": json.dumps(self.report()), "seen_at": repr(time.time())})
        pipe.expire(node_key, ttl)
        pipe.sadd(PREFIX + "nodes", self.local.node_id)
        for lg in self.local.live_sessions():
            pipe.hset(_key("session", lg.id), mapping=self._session_fields(lg))
            pipe.expire(_key("session", lg.id), ttl)
        await pipe.execute()

    # --- reads ---------------------------------------------------------------------------

    async def nodes(self) -> list[dict[str, Any]]:
        """Every live node's id, URL and last load report; ``BusUnavailable`` when Redis is down."""
        try:
            ids = sorted(await self.redis.smembers(PREFIX + "nodes"))
            pipe = self.redis.pipeline(transaction=False)
            for node_id in ids:
                pipe.hgetall(_key("node", node_id))
            entries = await pipe.execute()
            stale = [i for i, e in zip(ids, entries, strict=True) if not e]
            if stale:
                await self.redis.srem(PREFIX + "nodes", *stale)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"the registry cannot be reached: {exc}") from exc
        nodes = [_node_entry(e) for e in entries if e]
        return [n for n in nodes if n is not None]

    async def session(self, session_id: str) -> tuple[SessionInfo, bool]:
        """``(info, live)`` of any node's session; ``UnknownSession``, or ``BusUnavailable``."""
        try:
            fields = await self.redis.hgetall(_key("session", session_id))
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"the registry cannot be reached: {exc}") from exc
        if not fields:
            raise UnknownSession(session_id)
        return SessionInfo.from_fields(fields, session_id), fields.get("ended") != "1"

    async def transcript(self, session_id: str) -> list[dict[str, Any]]:
        """The finals of any node's session, from its stream."""
        try:
            entries = await self.redis.xrange(_key("stream", session_id))
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"the caption streams cannot be reached: {exc}") from exc
        if not entries:
            await self.session(session_id)  # unknown, or known with nothing said yet
            return []
        events = (_entry_event(entry_id, fields) for entry_id, fields in entries)
        return [e.body() for e in events if e is not None and e.type == "final"]

    async def follow(self, info: SessionInfo, from_start: bool) -> AsyncIterator[BusEvent]:
        """Another node's session's events (replay if asked), up to ``end``; ``info`` from ``session``.

        Every viewer of one remote session on this node reads one mirror of its log, fed
        by one Redis reader (``_mirror``), so a thousand viewers cost one connection. The
        session's entries may expire after ``info`` was read: the mirror then ends it.
        """
        session_id = info.id
        mirror = self._mirrors.get(session_id)
        if mirror is None:
            log_ = SessionLog(info, self.config.stream_maxlen)
            loaded = asyncio.Event()
            task = asyncio.create_task(self._mirror(log_, loaded), name="voxline-bus-mirror")
            mirror = self._mirrors[session_id] = _Mirror(log_, loaded, task)
        mirror.viewers += 1
        try:
            await mirror.loaded.wait()
            async for event in local_replay(mirror.log, from_start):
                yield event
        finally:
            mirror.viewers -= 1
            if mirror.viewers == 0:
                self._mirrors.pop(session_id, None)
                self._malformed_logged.discard(session_id)
                mirror.task.cancel()
                await asyncio.gather(mirror.task, return_exceptions=True)

    async def _mirror(self, log_: SessionLog, loaded: asyncio.Event) -> None:
        """Copy a remote session's stream into ``log_`` until its end.

        Redis outages are waited out (reads resume from the last seq). A session whose
        registry entry stays gone ``2 × heartbeat_s`` past its TTL (its node died) ends
        with ``{"type": "end", "reason": "node_lost"}``; so does one whose stream cannot
        be read (the key is not a stream) or whose copy failed: a viewer gets ``end``,
        never a hang. Cancelled midway (its last viewer left), it ends the copy too.
        """
        try:
            await self._copy_stream(log_, loaded)
        except ResponseError as exc:  # not an outage: the key holds something no node wrote (WRONGTYPE, ...)
            log.warning("session %s: its stream cannot be read (%s); its viewers get end", log_.id, exc)
        except Exception:
            log.exception("session %s: copying its stream failed; its viewers get end", log_.id)
        finally:
            # Whatever stopped the copy, no viewer waits on it for ever.
            log_.end("node_lost")
            loaded.set()

    async def _copy_stream(self, log_: SessionLog, loaded: asyncio.Event) -> None:
        """``_mirror``'s loop: the replay, then new entries, until the log ends.

        Entries no node wrote are skipped (``_entry_event``); ``ResponseError``
        (the key is not a stream) is raised; outages are waited out.
        """
        session_id = log_.id
        stream = _key("stream", session_id)
        last = "0-0"
        while not loaded.is_set():
            try:
                entries = await self.redis.xrange(stream)
            except ResponseError:
                raise
            except (RedisError, OSError):
                await asyncio.sleep(RETRY_S)
                continue
            last = self._mirror_entries(log_, entries, last)
            loaded.set()
        if log_.ended:
            return
        missing_since: float | None = None
        checked_at = 0.0
        while True:
            try:
                reply = await self.redis.xread({stream: last}, count=BATCH, block=READ_BLOCK_MS)
                now = time.monotonic()
                if now - checked_at >= 1.0:
                    checked_at = now
                    alive = await self.redis.exists(_key("session", session_id))
                    missing_since = None if alive else (missing_since or now)
            except ResponseError:
                raise
            except (RedisError, OSError):
                missing_since = None
                await asyncio.sleep(RETRY_S)
                continue
            for _stream, entries in reply or []:
                last = self._mirror_entries(log_, entries, last)
            if log_.ended:
                return
            if missing_since is not None and time.monotonic() - missing_since > 2 * self.config.heartbeat_s:
                log_.end("node_lost")
                return

    def _mirror_entries(self, log_: SessionLog, entries: list[tuple[str, dict[str, Any]]], last: str) -> str:
        """Copy stream entries into ``log_``, skipping (and logging once) those no node wrote; the last entry id."""
        for entry_id, fields in entries:
            last = entry_id
            event = _entry_event(entry_id, fields)
            if event is not None:
                log_.mirror(event)
            elif log_.id not in self._malformed_logged:
                self._malformed_logged.add(log_.id)
                log.warning("session %s: skipping stream entries no node wrote (first: %s)", log_.id, entry_id)
        return last


def _entry_event(entry_id: str, fields: dict[str, Any]) -> BusEvent | None:
    """The event a stream entry holds, or None when no node wrote it.

    A node writes ``{"e": json}`` at entry id ``{seq}-0`` (``_flush``), so an entry
    without ``e``, with text that is not an event, or whose ``seq`` is not its id's, is
    someone else's (or corrupt) and is left out rather than trusted or raised on.
    """
    try:
        event = BusEvent.parse(fields.get("e"))
    except MalformedEvent:
        return None
    return event if entry_id == f"{event.seq}-0" else None


REPORT_NUMBERS = ("sessions", "max_sessions", "calls", "max_calls", "cpu_load", "max_cpu_load")


def _node_entry(fields: dict[str, str]) -> dict[str, Any] | None:
    """A registry node hash as ``nodes()`` lists it, or None (logged) when no node wrote it so.

    Its ``report`` must be a JSON object whose load figures are finite numbers, so that
    placement can compare nodes without tripping over another writer's entry.
    """
    node_id = fields.get("node_id")
    try:
        report = json.loads(fields.get("report") or "{}", parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        report = None
    numbers_ok = isinstance(report, dict) and all(
        isinstance(report[k], int | float) and not isinstance(report[k], bool) and math.isfinite(report[k])
        for k in REPORT_NUMBERS if k in report)
    if not node_id or not isinstance(report, dict) or not numbers_ok:
        log.warning("registry: skipping a node entry no node wrote (node_id %r)", node_id)
        return None
    return {**report, "node_id": node_id, "url": fields.get("url", "")}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a load figure")
