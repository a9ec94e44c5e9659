"""Where caption audio comes from: a decoded file (paced or fast) or the microphone.

Each source is an async iterator of ``(samples, sample_rate_hz)`` chunks of mono
float32 audio. File sources pace themselves at real time when ``realtime`` is set
(as a live stream would arrive) and otherwise go as fast as the consumer takes them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import numpy as np

from voxline.errors import VoxlineError

from .audio_files import DecodedAudio

CHUNK_S = 0.1
MIC_RATE_HZ = 16000
MIC_QUEUE_CHUNKS = 100


async def file_chunks(
    audio: DecodedAudio,
    *,
    realtime: bool,
    chunk_s: float = CHUNK_S,
    on_progress: Callable[[float], None] | None = None,
) -> AsyncIterator[np.ndarray]:
    """Yield ``audio`` in ``chunk_s`` pieces; at real-time pace if ``realtime``."""
    step = max(1, int(chunk_s * audio.sample_rate_hz))
    started = time.monotonic()
    for start in range(0, len(audio.samples), step):
        if realtime:
            due = started + start / audio.sample_rate_hz
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        chunk = audio.samples[start : start + step]
        yield chunk
        if on_progress is not None:
            on_progress(len(chunk) / audio.sample_rate_hz)


async def mic_chunks(
    sample_rate_hz: int = MIC_RATE_HZ, chunk_s: float = CHUNK_S, stop: asyncio.Event | None = None
) -> AsyncIterator[np.ndarray]:
    """Yield microphone audio until ``stop`` is set (then end normally) or cancelled.

    Ending through ``stop`` lets the consumer drain: the last words still get their
    final. Capture runs on PortAudio's thread; chunks cross to the loop through a
    bounded queue that drops the oldest chunk if the consumer stalls (live audio).
    """
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise VoxlineError(
            "the microphone needs the sounddevice package and the PortAudio library "
            "(pip install sounddevice; apt-get install libportaudio2)"
        ) from exc
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[np.ndarray] = asyncio.Queue(MIC_QUEUE_CHUNKS)

    def push(chunk: np.ndarray) -> None:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(chunk)

    def callback(indata, frames, time_info, status):
        loop.call_soon_threadsafe(push, indata[:, 0].copy())

    stream = sounddevice.InputStream(
        samplerate=sample_rate_hz, channels=1, dtype="float32", blocksize=int(chunk_s * sample_rate_hz), callback=callback
    )
    stop = stop or asyncio.Event()
    with stream:
        while not stop.is_set():
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (getter, stopper):
                    waiter.cancel()
                await asyncio.gather(getter, stopper, return_exceptions=True)
            if getter.done() and not getter.cancelled():
                yield getter.result()
    while not queue.empty():
        yield queue.get_nowait()
