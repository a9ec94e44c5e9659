"""A stand-in for the ``sounddevice`` module: a microphone playing a WAV file, a speaker recording one.

For tests of ``voxline mic`` on machines without audio devices. Like PortAudio, each
stream calls its callback from its own thread every ``blocksize`` frames at real-time
pace. The microphone plays ``VOXLINE_TEST_MIC_WAV`` (float32 mono at the stream's
rate) once, then silence; the speaker's output is saved to ``VOXLINE_TEST_SPEAKER_WAV``
when its stream closes.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import soundfile


class _Stream:
    def __init__(self, *, samplerate: int, channels: int, dtype: str, latency: Any, blocksize: int, callback: Any) -> None:
        self.rate = samplerate
        self.block = blocksize
        self.callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.closed()

    def _run(self) -> None:
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            self.tick()
            n += 1
            time.sleep(max(0.0, start + n * self.block / self.rate - time.monotonic()))

    def tick(self) -> None:
        raise NotImplementedError

    def closed(self) -> None:
        pass


class InputStream(_Stream):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        audio, rate = soundfile.read(os.environ["VOXLINE_TEST_MIC_WAV"], dtype="float32")
        assert rate == self.rate, f"the test WAV is {rate} Hz, the stream {self.rate} Hz"
        self.audio = audio
        self.pos = 0

    def tick(self) -> None:
        block = np.zeros((self.block, 1), np.float32)
        part = self.audio[self.pos : self.pos + self.block]
        block[: len(part), 0] = part
        self.pos += self.block
        self.callback(block, self.block, None, None)


class OutputStream(_Stream):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.played: list[np.ndarray] = []

    def tick(self) -> None:
        block = np.zeros((self.block, 1), np.float32)
        self.callback(block, self.block, None, None)
        self.played.append(block[:, 0].copy())

    def closed(self) -> None:
        audio = np.concatenate(self.played) if self.played else np.zeros(0, np.float32)
        soundfile.write(os.environ["VOXLINE_TEST_SPEAKER_WAV"], audio, self.rate, subtype="FLOAT")
