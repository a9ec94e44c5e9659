"""The client side of a voice call: an aiortc peer talking to a voxline server.

``CallClient`` posts its offer to ``POST /v1/webrtc/offer``, sends a microphone
track, receives the session's audio (the agent, the changed voice, the re-spoken
words), reads the ``events`` data channel and sends on it (``send``: a live
``vc.update``). It is what
``voxline mic --url``, ``bench/agent.py --url`` and the end-to-end tests use.

The microphone is any ``read(n)`` callable returning ``n`` float32 samples at 48 kHz:
``microphone_track`` calls it once per 20 ms frame on the same real-time schedule as
the server's outgoing track (``paced_audio_track``). Received audio goes to ``on_audio`` as
48 kHz float32 mono, frame by frame, as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from voxline.errors import VoxlineError
from voxline.pipeline.tasks import wait_for_tasks
from voxline.stream.webrtc.call import (
    FRAME_SAMPLES,
    WEBRTC_RATE_HZ,
    aiortc_module,
    from_av_frame,
    paced_audio_track,
    release_audio_on_arrival,
)

FloatAudio = npt.NDArray[np.float32]
ReadAudio = Callable[[int], FloatAudio]
OnAudio = Callable[[FloatAudio], None]


class CallRefusedError(VoxlineError):
    """The server did not take the offer: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"the server refused the call ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


def microphone_track(read: ReadAudio) -> Any:
    """A live ``aiortc.MediaStreamTrack`` sending ``read(960)`` every 20 ms (48 kHz mono)."""
    return paced_audio_track(lambda: read(FRAME_SAMPLES))


class CallClient:
    """One voice call to a voxline server at ``url`` (``http://HOST:PORT``)."""

    def __init__(
        self,
        url: str,
        microphone: ReadAudio,
        *,
        on_audio: OnAudio | None = None,
        session: dict[str, Any] | None = None,
        max_events: int = 1024,
    ) -> None:
        aiortc = aiortc_module()
        self.url = url.rstrip("/")
        self.session = session or {}
        self.on_audio = on_audio
        self.pc = aiortc.RTCPeerConnection()
        self.session_id: str | None = None  # set by the answer
        self.mic = microphone_track(microphone)
        self.pc.addTrack(self.mic)
        release_audio_on_arrival(self.pc)  # the caller's speaker buffer smooths playback instead
        self.channel = self.pc.createDataChannel("events")
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(max_events)
        self.events_dropped = 0
        self.closed = asyncio.Event()
        self._opened = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.channel.on("open", self._opened.set)
        self.channel.on("message", self._on_message)
        self.channel.on("close", self._on_gone)

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                task = asyncio.create_task(self._listen(track), name="voxline-client-listen")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed", "disconnected"):
                self._on_gone()

    def _on_message(self, message: Any) -> None:
        try:
            event = json.loads(message)
        except (TypeError, ValueError):
            return
        if self._events.full():  # a reader that fell behind loses the oldest events
            self._events.get_nowait()
            self.events_dropped += 1
        self._events.put_nowait(event)

    def _on_gone(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            with contextlib.suppress(asyncio.QueueFull):
                self._events.put_nowait(None)

    async def _listen(self, track: Any) -> None:
        aiortc = aiortc_module()
        while True:
            try:
                frame = await track.recv()
            except aiortc.mediastreams.MediaStreamError:
                return
            if self.on_audio is not None:
                samples, rate = from_av_frame(frame)
                if rate == WEBRTC_RATE_HZ:
                    self.on_audio(samples)

    async def connect(self, timeout_s: float = 20.0) -> None:
        """Offer, get the server's answer, and wait until the events channel is open.

        Raises ``CallRefusedError`` when the server says no (busy: ``retry_after_s``
        is set), ``VoxlineError`` when it cannot be reached or the call does not come up.
        """
        aiortc = aiortc_module()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type, "session": self.session}
        try:
            async with httpx.AsyncClient(timeout=timeout_s) as http:
                response = await http.post(f"{self.url}/v1/webrtc/offer", json=offer)
        except httpx.HTTPError as exc:
            raise VoxlineError(f"cannot reach the voxline server at {self.url}: {exc}") from exc
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:200]
            retry = response.headers.get("Retry-After")
            raise CallRefusedError(response.status_code, code, message, float(retry) if retry else None)
        answer = response.json()
        self.session_id = answer.get("session_id")  # the call's captions: /v1/sessions/{id}/captions
        await self.pc.setRemoteDescription(aiortc.RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        try:
            await asyncio.wait_for(self._opened.wait(), timeout_s)
        except TimeoutError as exc:
            raise VoxlineError(f"the call to {self.url} did not connect within {timeout_s:.0f} s") from exc

    def send(self, event: dict[str, Any]) -> None:
        """Send ``event`` (a JSON object, e.g. ``{"type": "vc.update", "semitones": 3}``) to the session.

        Raises:
            VoxlineError: the events channel is not open (not connected yet, or hung up).
        """
        if self.channel.readyState != "open":
            raise VoxlineError(f"the call's events channel is {self.channel.readyState}, not open")
        self.channel.send(json.dumps(event))

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The server's events in order, until the call ends."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def close(self) -> None:
        """Hang up: stop the microphone and the listener, close the connection. Idempotent."""
        self.mic.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        await wait_for_tasks(list(self._tasks), 5.0, "call client")
        self._on_gone()
