"""A ``/v1/captions`` WebSocket client: streams audio to a voxline server, yields events.

Sends the config, then PCM16 audio chunks as they come, then ``{"type": "end"}``,
while a reader task receives caption events concurrently; returns once the server
closes (after the last final). A server error event raises ``CaptionServerError``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import websockets

from voxline.errors import VoxlineError

EVENT_QUEUE = 1024
OPEN_TIMEOUT_S = 10.0


class CaptionServerError(VoxlineError):
    """The server reported an error for this stream (``code``, ``message``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def pcm16(samples: np.ndarray) -> bytes:
    """Float32 samples in [-1, 1] as little-endian 16-bit PCM bytes."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


async def caption_remote(
    url: str,
    chunks: AsyncIterator[np.ndarray],
    sample_rate_hz: int,
    *,
    subtitles: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield every event the server sends for the audio in ``chunks``.

    ``url`` is the server's base (``ws://host:port``) or the full ``/v1/captions`` URL.
    """
    if not url.rstrip("/").endswith("/v1/captions"):
        url = url.rstrip("/") + "/v1/captions"
    url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    config: dict[str, Any] = {"type": "config", "sample_rate": sample_rate_hz, "encoding": "pcm_s16le", "language": "en"}
    if subtitles:
        config["subtitles"] = subtitles
    async with websockets.connect(url, open_timeout=OPEN_TIMEOUT_S, max_size=None) as ws:
        await ws.send(json.dumps(config))

        async def send_audio() -> None:
            try:
                async for chunk in chunks:
                    await ws.send(pcm16(chunk))
                await ws.send(json.dumps({"type": "end"}))
            except Exception:
                # Our source failed: stop the read loop below instead of waiting for
                # the server's idle timeout; the error is re-raised after it.
                await ws.close(1011, "client audio source failed")
                raise

        sender = asyncio.create_task(send_audio(), name="captions:send")
        try:
            async for message in ws:
                event = json.loads(message)
                if event.get("type") == "error":
                    raise CaptionServerError(event.get("code", "error"), event.get("message", ""))
                yield event
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]
        except websockets.ConnectionClosedError as exc:
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                raise sender.exception() from exc  # type: ignore[misc]
            raise CaptionServerError("connection_closed", str(exc)) from exc
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
