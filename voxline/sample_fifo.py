"""A FIFO of float32 samples: written in chunks of any size, read in exact frames. Sans I/O.

Audio crosses between parts that chunk it differently (a resampler's uneven output and
20 ms frames, 20 ms frames and the echo canceller's 10 ms): ``SampleFifo`` holds the
chunks as they came and hands out exactly ``n`` samples, padding with silence when it
runs short. It is always bounded (``max_samples``): writing past it drops the oldest
samples (counted in ``dropped``), so a stalled reader costs audio, never memory or
delay. Not thread-safe (``clients.agent_mic.SampleRing`` adds a lock).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

FloatAudio = npt.NDArray[np.float32]


class SampleFifo:
    """Chunks in, exact frames out; at most ``max_samples`` kept (the oldest dropped past it)."""

    def __init__(self, max_samples: int) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        self.max_samples = max_samples
        self.dropped = 0
        self._chunks: deque[FloatAudio] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def write(self, samples: npt.ArrayLike) -> None:
        """Append ``samples`` (copied); past ``max_samples`` the oldest are dropped."""
        chunk = np.array(samples, dtype=np.float32).reshape(-1)
        if not len(chunk):
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self.max_samples:
            excess = self._size - self.max_samples
            self._take(np.zeros(excess, dtype=np.float32), excess)
            self.dropped += excess

    def read(self, n_samples: int) -> FloatAudio:
        """Exactly ``n_samples``: the oldest buffered, then silence if there were fewer."""
        out = np.zeros(n_samples, dtype=np.float32)
        self._take(out, n_samples)
        return out

    def peek(self, n_samples: int) -> FloatAudio:
        """The oldest ``n_samples`` buffered (fewer if fewer are), without taking them."""
        parts, left = [], n_samples
        for chunk in self._chunks:
            if left <= 0:
                break
            parts.append(chunk[:left])
            left -= len(parts[-1])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def clear(self) -> None:
        """Drop everything buffered (not counted as dropped)."""
        self._chunks.clear()
        self._size = 0

    def _take(self, out: FloatAudio, n: int) -> int:
        filled = 0
        while filled < n and self._chunks:
            head = self._chunks[0]
            take = min(len(head), n - filled)
            out[filled : filled + take] = head[:take]
            filled += take
            if take == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[take:]
        self._size -= filled
        return filled
