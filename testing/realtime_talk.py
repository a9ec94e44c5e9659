"""Driving voxline's ``/v1/realtime`` with the official ``openai`` SDK, as a client would (tests and bench).

``RealtimeTalk`` wraps one SDK connection (GA: ``client.realtime``; beta:
``client.beta.realtime``): a microphone task streams 20 ms appends at real-time pace
(the speech queued by ``say``, silence between), and every server event received is
checked against the SDK's own pydantic models (``violations`` lists any that fail,
``unparsed`` counts messages that are not JSON).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pydantic
from openai import AsyncOpenAI

from voxline.resampler import StreamResampler

RATE_HZ = 24000
FRAME = RATE_HZ // 50


def ga_adapter() -> pydantic.TypeAdapter[Any]:
    from openai.types.realtime import RealtimeServerEvent

    return pydantic.TypeAdapter(RealtimeServerEvent)


def beta_adapter() -> pydantic.TypeAdapter[Any]:
    from openai.types.beta.realtime import RealtimeServerEvent

    return pydantic.TypeAdapter(RealtimeServerEvent)


def pcm24(audio16: np.ndarray) -> bytes:
    """16 kHz float speech as the wire's PCM16 at 24 kHz."""
    audio = StreamResampler(16000, RATE_HZ).process(np.asarray(audio16, np.float32))
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def decode_pcm(delta: str) -> np.ndarray:
    """Float samples (24 kHz) of one audio delta."""
    return np.frombuffer(base64.b64decode(delta), dtype="<i2").astype(np.float32) / 32768.0


class RealtimeTalk:
    """One SDK session against a voxline server, with a real-time microphone and checked events."""

    def __init__(self, connection: Any, *, beta: bool) -> None:
        self.connection = connection
        self.beta = beta
        self.adapter = beta_adapter() if beta else ga_adapter()
        self.events: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.unparsed = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending = bytearray()
        self._mic: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self.streaming = True

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, http_url: str, *, beta: bool = False, intent: str | None = None, key: str = "sk-any", mic: bool = True,
    ) -> AsyncIterator[RealtimeTalk]:
        """Connect the SDK to ``http_url`` (``http://host:port``), the way its README says."""
        client = AsyncOpenAI(api_key=key, base_url=f"{http_url}/v1", websocket_base_url=http_url.replace("http", "ws", 1) + "/v1")
        realtime = client.beta.realtime if beta else client.realtime
        query = {"intent": intent} if intent else {}
        try:
            async with realtime.connect(model="voxline-agent", extra_query=query) as connection:
                talk = cls(connection, beta=beta)
                talk._reader = asyncio.create_task(talk._read())
                if mic:
                    talk._mic = asyncio.create_task(talk._microphone())
                try:
                    yield talk
                finally:
                    for task in (talk._mic, talk._reader):
                        if task is not None:
                            task.cancel()
                            with contextlib.suppress(BaseException):
                                await task
        finally:
            await client.close()

    async def _read(self) -> None:
        while True:
            raw = await self.connection.recv_bytes()
            try:
                event = json.loads(raw)
            except ValueError:
                self.unparsed += 1
                continue
            try:
                self.adapter.validate_python(event)
            except pydantic.ValidationError as exc:
                self.violations.append(f"{event.get('type')}: {exc}")
            event["_at"] = time.monotonic()
            self.events.append(event)
            await self._queue.put(event)

    async def _microphone(self) -> None:
        start = time.monotonic()
        sent = 0
        while True:
            if self.streaming:
                chunk = bytes(self._pending[: FRAME * 2])
                del self._pending[: FRAME * 2]
                chunk = chunk.ljust(FRAME * 2, b"\0")
                await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * 0.02 - time.monotonic()))

    def say(self, audio16: np.ndarray) -> float:
        """Queue speech (16 kHz float) for the microphone; the time (monotonic) it will have been said."""
        self._pending.extend(pcm24(audio16))
        return time.monotonic() + len(self._pending) / 2 / RATE_HZ

    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event through the SDK."""
        await self.connection.send(event)

    async def ask(self, text: str, *, respond: bool = True) -> None:
        """Add a user text message to the conversation, then (``respond``) ask for a response."""
        await self.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}],
        }})
        if respond:
            await self.send({"type": "response.create"})

    async def next(self, *types: str, within_s: float = 30.0) -> dict[str, Any]:
        """The next event of one of ``types`` (others are kept in ``events`` and skipped)."""
        async with asyncio.timeout(within_s):
            while True:
                event = await self._queue.get()
                if event["type"] in types:
                    return event

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Every event of ``kind`` received so far."""
        return [e for e in self.events if e["type"] == kind]
