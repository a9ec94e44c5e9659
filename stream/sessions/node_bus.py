"""A node's view of every session: its own logs, and (with Redis) every other node's.

``NodeBus`` is what routes use. Without ``bus.redis_url`` it is the node alone (the
embedded default); with it, sessions of other nodes can be watched and transcribed
here, and ``nodes()`` lists the registry. A session of this node is always served
from its own log, so its viewers carry on while Redis is away.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from voxline.config import Config
from voxline.stream.sessions.log import (
    BusEvent,
    LocalBus,
    SessionInfo,
    SessionLog,
    UnknownSession,
    local_replay,
)


def node_id_for(config: Config) -> str:
    """This process's node id: the configured one, else host name and pid."""
    import os

    return config.bus.node_id or f"{socket.gethostname()}-{os.getpid()}"


def advertise_url_for(config: Config) -> str:
    """The URL other nodes and placement hand out for this node."""
    return config.bus.advertise_url or f"http://{config.server.host}:{config.server.port}"


class NodeBus:
    """Sessions of this node and, with Redis, of every node (see module doc)."""

    def __init__(self, config: Config, report: Callable[[], dict[str, Any]]) -> None:
        self.node_id = node_id_for(config)
        self.url = advertise_url_for(config)
        self.local = LocalBus(self.node_id, config.bus.stream_maxlen, config.bus.retention_s)
        self.report = report
        self.redis: Any = None
        if config.bus.redis_url:
            from voxline.stream.sessions.redis_bus import RedisBus

            self.redis = RedisBus(config.bus, self.local, self.url, report)

    async def start(self) -> None:
        """Start the Redis link, if any (Redis need not be up)."""
        if self.redis is not None:
            await self.redis.start()

    async def close(self) -> None:
        """Stop the Redis link, if any."""
        if self.redis is not None:
            await self.redis.close()

    def open(self, kind: str, owner: str = "", session_id: str | None = None) -> SessionLog:
        """A new session's log on this node."""
        return self.local.open(kind, owner, session_id)

    async def lookup(self, session_id: str) -> tuple[SessionInfo, bool]:
        """``(info, live)`` of a session anywhere; ``UnknownSession`` / ``BusUnavailable``."""
        log = self.local.get(session_id)
        if log is not None:
            return log.info, not log.ended
        if self.redis is None:
            raise UnknownSession(session_id)
        info, live = await self.redis.session(session_id)
        return info, live

    def follow(self, info: SessionInfo, from_start: bool) -> AsyncIterator[BusEvent]:
        """The session's events for a viewer (``info`` as ``lookup`` found it), up to ``end``."""
        log = self.local.get(info.id)
        if log is not None:
            return local_replay(log, from_start)
        if self.redis is None:
            raise UnknownSession(info.id)
        events: AsyncIterator[BusEvent] = self.redis.follow(info, from_start)
        return events

    async def transcript(self, session_id: str) -> list[dict[str, Any]]:
        """The session's finals so far."""
        log = self.local.get(session_id)
        if log is not None:
            return log.transcript()
        if self.redis is None:
            raise UnknownSession(session_id)
        finals: list[dict[str, Any]] = await self.redis.transcript(session_id)
        return finals

    async def nodes(self) -> list[dict[str, Any]]:
        """Every live node with its load report (this node alone without Redis)."""
        if self.redis is None:
            return [{"node_id": self.node_id, "url": self.url, **self.report()}]
        nodes: list[dict[str, Any]] = await self.redis.nodes()
        return nodes


def claim_session(connection: Any, action: str = "publish") -> tuple[str | None, str]:
    """The session id a publishing client may use, and its owner (the token's subject).

    ``?session=ID`` asks for an id (a token must grant ``publish:ID`` or ``publish:*``);
    without it a token granting exactly one ``publish:ID`` gets that id, any other a
    fresh one (which only ``publish:*`` covers). Raises ``auth.AuthError``.
    """
    from voxline.stream.auth import Need, access_policy

    requested = connection.query_params.get("session") or None
    policy = access_policy(connection)
    if not policy.enabled:
        return requested, ""
    token = policy.token_from(connection.headers, connection.query_params)
    from voxline.stream.auth import verify_token

    claims = verify_token(policy.secret, token, now=policy.clock())
    if requested is None:
        scoped = [g.scope for g in claims.grants if g.action == action and g.scope not in (None, "*")]
        if len(scoped) == 1 and not any(g.action == action and g.scope == "*" for g in claims.grants):
            requested = scoped[0]
    granted = policy.check(connection.headers, connection.query_params, Need(action, requested))
    return requested, (granted.subject or "") if granted is not None else ""
