"""The one send/close helper every WebSocket endpoint uses: what a slow or gone peer costs."""

from __future__ import annotations

import asyncio
import json

from starlette.websockets import WebSocketDisconnect, WebSocketState

from voxline.stream.bounded_socket import MAX_CLOSE_REASON_BYTES, BoundedSender, close_websocket
from voxline.stream.stalled_peers import TRANSPORT_KEY


class Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class PeerSocket:
    """The part of a Starlette WebSocket the helper uses; ``reading`` False: sends never finish."""

    def __init__(self, *, reading: bool = True, state: WebSocketState = WebSocketState.CONNECTED) -> None:
        self.reading = reading
        self.application_state = state
        self.transport = Transport()
        self.scope = {TRANSPORT_KEY: self.transport}
        self.sent: list[str] = []
        self.calls: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self.left = False

    async def accept(self) -> None:
        self.calls.append("accept")
        self.application_state = WebSocketState.CONNECTED

    async def send_text(self, text: str) -> None:
        if self.left:
            raise WebSocketDisconnect(1001)
        if not self.reading:
            await asyncio.Event().wait()
        self.calls.append("send")
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.calls.append("close")
        self.closed_with = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED


async def test_a_peer_that_stops_reading_is_dropped_once_and_never_waited_for_again() -> None:
    peer = PeerSocket(reading=False)
    sender = BoundedSender(peer, 0.05, "a test client")  # type: ignore[arg-type]
    assert not await sender.send_json({"type": "partial"})
    assert sender.stalled and sender.gone and peer.transport.aborted
    started = asyncio.get_running_loop().time()
    assert not await sender.send_json({"type": "final"})
    await sender.close(1000)
    assert asyncio.get_running_loop().time() - started < 0.01
    assert peer.closed_with is None  # an aborted connection gets no close frame


async def test_sends_go_out_in_order_one_at_a_time_and_stop_once_the_peer_left() -> None:
    peer = PeerSocket()
    sender = BoundedSender(peer, 1.0, "a test client")  # type: ignore[arg-type]
    assert all(await asyncio.gather(*(sender.send_json({"n": n}) for n in range(5))))
    assert [json.loads(text)["n"] for text in peer.sent] == [0, 1, 2, 3, 4]
    peer.left = True
    assert not await sender.send_text("late")
    assert sender.gone and not sender.stalled and not peer.transport.aborted


async def test_close_accepts_a_fresh_socket_sends_its_last_message_and_cuts_the_reason_to_fit() -> None:
    peer = PeerSocket(state=WebSocketState.CONNECTING)
    await close_websocket(peer, 4403, "é" * 200, last_message='{"type":"error"}')  # type: ignore[arg-type]
    assert peer.calls == ["accept", "send", "close"]
    assert peer.closed_with is not None and peer.closed_with[0] == 4403
    assert len(peer.closed_with[1].encode()) <= MAX_CLOSE_REASON_BYTES and peer.closed_with[1].startswith("é")
    await close_websocket(peer, 1000)  # closed already: nothing more
    assert peer.calls == ["accept", "send", "close"]


async def test_a_close_to_a_peer_that_never_reads_ends_within_its_bound(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("voxline.stream.bounded_socket.CLOSE_TIMEOUT_S", 0.05)
    peer = PeerSocket(reading=False)
    async with asyncio.timeout(1.0):
        await close_websocket(peer, 1011, "bye", last_message="{}")  # type: ignore[arg-type]
    assert peer.closed_with is None
