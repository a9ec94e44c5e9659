"""Dropping a WebSocket peer that stopped reading, at once, unsent bytes and all.

A client that stops reading fills its TCP window; the server's sends then wait on
the transport's write buffer. Closing politely does not help: the close frame queues
behind the rest and ``transport.close()`` waits for a buffer that will never drain,
so the connection (its descriptor, its buffer) would stay forever. A session that
gives up on such a peer calls ``abort_peer``, which aborts the transport.

Starlette does not expose the transport, so ``TransportAccess``, a middleware, puts
the server's (uvicorn's WebSocket protocol passes its bound ``send``, whose object
holds it) in the scope as ``voxline.transport``. Under another server it finds none and
``abort_peer`` says so; the sessions still end, the connection then waits on the
server's own keepalive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

log = logging.getLogger(__name__)

TRANSPORT_KEY = "voxline.transport"


class TransportAccess:
    """ASGI middleware: each WebSocket scope gets the connection's transport under ``TRANSPORT_KEY``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the call on, the transport added to a WebSocket's scope."""
        if scope["type"] == "websocket":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if isinstance(transport, asyncio.WriteTransport):
                scope[TRANSPORT_KEY] = transport
        await self.app(scope, receive, send)


def abort_peer(websocket: WebSocket, why: str) -> bool:
    """Drop ``websocket``'s connection now (nothing more is sent); False when its transport is unknown."""
    transport: Any = websocket.scope.get(TRANSPORT_KEY)
    if transport is None:
        log.warning("cannot abort a WebSocket peer (%s): its transport is unknown", why)
        return False
    log.info("dropped a WebSocket peer: %s", why)
    transport.abort()
    return True
