"""What the WebRTC end-to-end tests share: a caller's speech at 48 kHz, a call's events, the server's health."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np
import soxr

from tests.speech_fixtures import speech
from voxline.clients.webrtc_client import CallClient


def said(text: str) -> np.ndarray:
    """``text`` in the Piper voice at 48 kHz, as a user's microphone would send it."""
    return soxr.resample(speech(text), 16000, 48000).astype(np.float32)


class Events:
    """Collects a call's events; ``wait_for`` a type (with an explicit timeout)."""

    def __init__(self, client: CallClient) -> None:
        self.seen: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: CallClient) -> None:
        async for event in client.events():
            async with self._changed:
                self.seen.append(event)
                self._changed.notify_all()

    async def wait_for(self, kind: str, within_s: float = 30.0, after: int = 0) -> dict[str, Any]:
        async def found() -> dict[str, Any]:
            async with self._changed:
                while True:
                    match = [e for e in self.seen[after:] if e["type"] == kind]
                    if match:
                        return match[0]
                    await self._changed.wait()

        return await asyncio.wait_for(found(), within_s)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == kind]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def health(url: str) -> dict[str, Any]:
    """The server's ``/healthz`` (``url`` is its http:// base)."""
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(f"{url}/healthz")).json()  # type: ignore[no-any-return]


async def until_no_calls(url: str, within_s: float = 10.0) -> dict[str, Any]:
    """``/healthz`` once it counts no call, or as it stands after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        state = await health(url)
        if state["calls"] == 0 or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.1)
