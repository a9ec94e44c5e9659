"""Every WebSocket's sends and closes, each bounded in time: the one helper all endpoints use.

A peer that stops reading fills its TCP window and the server's next send waits
forever. ``BoundedSender`` serialises a socket's sends and bounds each by the
server's ``send_timeout_s``: past it the peer has stopped reading, so its connection
is dropped at once (``abort_peer``), ``stalled`` is set and every later send returns
False without waiting. A peer that left (a disconnect, a reset) sets ``gone`` the
same way. ``close_websocket`` closes within ``CLOSE_TIMEOUT_S``, accepting first
where the handshake is still open (closing before accept would turn the reason
into a bare HTTP 403) and optionally sending one last text message (an error
event); a peer already gone is not an error.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxline.stream.stalled_peers import abort_peer

CLOSE_TIMEOUT_S = 5.0
"""The longest a close (with its last message) may take before the peer is left to go."""
MAX_CLOSE_REASON_BYTES = 123
"""A close frame's payload is at most 125 bytes, two of them the code."""
PEER_GONE = (WebSocketDisconnect, RuntimeError, OSError)
"""What a send or close raises once the peer has left (Starlette raises RuntimeError after a close)."""


def fit_close_reason(message: str) -> str:
    """``message`` cut to fit a WebSocket close frame's reason (``MAX_CLOSE_REASON_BYTES`` of UTF-8)."""
    return message.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


def compact_json(message: dict[str, Any]) -> str:
    """One JSON text message, without spaces."""
    return json.dumps(message, separators=(",", ":"))


async def close_websocket(websocket: WebSocket, code: int, reason: str = "", *, last_message: str | None = None) -> None:
    """Close ``websocket`` with ``code`` and ``reason`` (cut to fit), sending ``last_message`` first if given.

    Accepts first when the handshake is still open. Bounded by ``CLOSE_TIMEOUT_S``;
    never raises for a peer that is gone or too slow. Closing a closed socket does nothing.
    """
    if websocket.application_state is WebSocketState.DISCONNECTED:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            if websocket.application_state is WebSocketState.CONNECTING:
                await websocket.accept()
            if last_message is not None:
                await websocket.send_text(last_message)
            await websocket.close(code, fit_close_reason(reason))
    except (*PEER_GONE, TimeoutError):
        pass  # the peer is gone already, or will be when the server drops it


class BoundedSender:
    """One socket's sends, one at a time, each within ``timeout_s``; a peer that stops reading is dropped.

    ``peer`` names the other side in the log line a drop writes ("a caption client").
    The owner sets ``gone`` itself when its reader sees the peer leave.
    """

    def __init__(self, websocket: WebSocket, timeout_s: float, peer: str) -> None:
        self.websocket = websocket
        self.timeout_s = timeout_s
        self.peer = peer
        self.gone = False
        self.stalled = False
        self._lock = asyncio.Lock()
        self._closed = False

    async def send_text(self, text: str) -> bool:
        """Send one text message; False (nothing sent) once the peer is gone or was dropped."""
        if self.gone:
            return False
        async with self._lock:
            if self.gone:  # went while this send waited its turn
                return False
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.websocket.send_text(text)
            except TimeoutError:  # first: it is an OSError too
                self.gone = self.stalled = True
                abort_peer(self.websocket, f"{self.peer} took no message for {self.timeout_s:g} s")
                return False
            except PEER_GONE:
                self.gone = True
                return False
        return True

    async def send_json(self, message: dict[str, Any]) -> bool:
        """``send_text`` of ``message`` as compact JSON."""
        return await self.send_text(compact_json(message))

    async def close(self, code: int, reason: str = "") -> None:
        """Close the socket (``close_websocket``) unless it was closed or dropped; no send follows. Idempotent."""
        if self._closed:
            return
        self._closed = self.gone = True
        if not self.stalled:  # an aborted connection takes no close frame
            await close_websocket(self.websocket, code, reason)
