"""Caption clients that stop reading or vanish: the server drops them and everyone else carries on.

Real models and a real server on loopback. A client that stops reading fills its TCP
window; the server must neither buffer for it without bound nor let it hold up the
other sessions, and must free its place: by the send timeout (its sends stop being
taken) or by the keepalive (its pings go unanswered), whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import numpy as np
import psutil
import websockets
from conftest import get, running_server
from speech_fixtures import FOX, TRAIN, silence, speech, word_errors
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from voxline.clients.caption_client import pcm16

CONFIG = json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le", "language": "en"})


async def healthy_captions(url: str, text: str) -> str:
    """Stream ``text`` spoken, at twice real time, reading every event; its finals' words."""
    audio = np.concatenate([silence(0.3), speech(text), silence(0.8)])
    finals: list[str] = []
    async with websockets.connect(url + "/v1/captions") as ws:
        await ws.send(CONFIG)

        async def send() -> None:
            for start in range(0, len(audio), 1600):
                await ws.send(pcm16(audio[start : start + 1600]))
                await asyncio.sleep(0.05)
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        async for message in ws:
            event = json.loads(message)
            if event["type"] == "final":
                finals.append(event["text"])
        await sender
    return " ".join(finals)


class DeafClient:
    """A WebSocket client that never reads after the handshake: websockets' sans-I/O
    protocol over a raw socket whose receive buffer is as small as the kernel allows."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock, self.protocol = sock, protocol
        self.closed_after_s: float | None = None  # when the server dropped it, from the first send
        self._first_send: float | None = None

    @classmethod
    async def connect(cls, url: str) -> DeafClient:
        """Open ``url`` (ws://host:port/path), complete the handshake, read nothing more."""
        host, port = url.removeprefix("ws://").split("/", 1)[0].split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, int(port)))
        protocol = ClientProtocol(parse_uri(url))
        protocol.send_request(protocol.connect())
        await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
        async with asyncio.timeout(10):
            while protocol.state is not State.OPEN:
                protocol.receive_data(await loop.sock_recv(sock, 4096))
                protocol.events_received()
        return cls(sock, protocol)

    async def send(self, message: str | bytes) -> bool:
        """Send one message (waiting while the server does not read); False once the server has dropped us."""
        if self.closed_after_s is not None:
            return False
        now = time.monotonic()
        self._first_send = self._first_send or now
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, b"".join(self.protocol.data_to_send()))
        except OSError:  # reset: the server aborted the connection
            self.closed_after_s = now - self._first_send
            return False
        return True

    def close(self) -> None:
        """Drop the socket."""
        self.sock.close()


async def until_sessions(url: str, count: int, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        state = await asyncio.to_thread(get, url, "/healthz")
        body: dict[str, Any] = state.json()
        if body["sessions"] == count or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.2)


async def test_a_caption_client_that_stops_reading_is_dropped_by_the_send_timeout(caption_engines) -> None:  # type: ignore[no-untyped-def]
    """It asks for subtitles as fast as it can and never reads: the answers fill its window.

    (No audio: a client sending audio faster than the server takes it is held back by
    the server not reading, which is the back-pressure it should get.)
    """
    with running_server(caption_engines, send_timeout_s=1.5, ws_ping_interval_s=600.0) as url:
        assert word_errors(TRAIN, await healthy_captions(url, TRAIN)) <= 1  # warm: the models' memory is taken
        idle = get(url, "/healthz").json()
        rss_before = psutil.Process().memory_info().rss
        healthy = asyncio.create_task(healthy_captions(url, FOX))
        deaf = await DeafClient.connect(url + "/v1/captions")
        await deaf.send(CONFIG)
        request = json.dumps({"type": "subtitles", "format": "srt"})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while await deaf.send(request):
                    pass
        deaf.close()
        assert deaf.closed_after_s is not None, "the server never dropped the client that stopped reading"
        assert word_errors(FOX, await healthy) <= 1
        state = await until_sessions(url, 0, within_s=5)
        assert (state["sessions"], state["graphs"]) == (0, 0)
        assert psutil.Process().memory_info().rss - rss_before < 50 * 2**20  # nothing kept for the deaf client
        settled = await _settled(url, idle)
        assert settled["open_fds"] <= idle["open_fds"], (idle, settled)


async def test_a_caption_client_that_stops_reading_is_dropped_by_the_keepalive(caption_engines) -> None:  # type: ignore[no-untyped-def]
    """It streams audio in real time but never reads: its pings go unanswered."""
    with running_server(caption_engines, ws_ping_interval_s=1.0, ws_ping_timeout_s=1.0) as url:
        healthy = asyncio.create_task(healthy_captions(url, TRAIN))
        deaf = await DeafClient.connect(url + "/v1/captions")
        await deaf.send(CONFIG)
        assert (await until_sessions(url, 2, within_s=5))["sessions"] == 2
        audio = np.tile(speech(FOX), 10)
        started = time.monotonic()
        for start in range(0, len(audio), 1600):
            if not await deaf.send(pcm16(audio[start : start + 1600])) or time.monotonic() - started > 15:
                break
            await asyncio.sleep(0.1)
        deaf.close()
        assert deaf.closed_after_s is not None and deaf.closed_after_s < 6, deaf.closed_after_s
        assert word_errors(TRAIN, await healthy) <= 1
        state = await until_sessions(url, 0, within_s=5)
        assert (state["sessions"], state["graphs"]) == (0, 0)


async def test_a_caption_client_that_vanishes_mid_caption_frees_its_place(caption_engines) -> None:  # type: ignore[no-untyped-def]
    with running_server(caption_engines, max_sessions=1) as url:
        ws = await websockets.connect(url + "/v1/captions")
        await ws.send(CONFIG)
        audio = speech(FOX)
        for start in range(0, len(audio) // 2, 1600):
            await ws.send(pcm16(audio[start : start + 1600]))
        assert (await until_sessions(url, 1, within_s=5))["sessions"] == 1
        ws.transport.abort()  # no close frame: the process was killed, the cable pulled
        state = await until_sessions(url, 0, within_s=5)
        assert (state["sessions"], state["graphs"]) == (0, 0)
        assert word_errors(TRAIN, await healthy_captions(url, TRAIN)) <= 1  # its one place is free again


async def _settled(url: str, idle: dict[str, Any], within_s: float = 5.0) -> dict[str, Any]:
    """/healthz once the open descriptors are back to idle (or after ``within_s``)."""
    deadline = time.monotonic() + within_s
    while True:
        state: dict[str, Any] = (await asyncio.to_thread(get, url, "/healthz")).json()
        if state["open_fds"] <= idle["open_fds"] or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.2)
