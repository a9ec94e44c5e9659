"""The audio a live session sends back, between its graph and the transport's clock. Sans I/O.

A voice changer's graph writes converted frames as the caller's frames arrive (about
every 20 ms, unevenly); the transport reads a frame every 20 ms on its own clock.
``LiveOutput`` joins the two with a small jitter buffer:

- it starts playing once ``target_s`` is buffered (priming), and primes again after
  running dry, so an early read gives silence rather than a frame with a hole;
- past ``max_s`` buffered (the reader stalled, or frames came in a burst) it drops the
  oldest audio down to ``target_s``, so the delay cannot grow for good;
- below that, a surplus that stands (for ``settle_s`` the buffer always held more
  than 5 ms beyond each read: a late frame and its successor arrived together once)
  is dropped at the next quiet moment, so one hiccup does not add a frame of delay
  for the rest of the call;
- drops and underruns are counted, and ``delay_s`` says what the buffer adds now.

A phrase-by-phrase writer (the anonymizer) has no steady stream to smooth: it uses
``target_s = 0``, a large ``max_s`` and no settling (``settle_s = None``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxline.sample_fifo import SampleFifo

FloatAudio = npt.NDArray[np.float32]
SETTLED_HEADROOM_S = 0.005
"""What a settled buffer keeps beyond each read: room for a frame 5 ms late."""
QUIET_PEAK = 0.01
"""Audio below this peak (-40 dBFS) may be dropped to take out a standing surplus."""


class LiveOutput:
    """A bounded jitter buffer of float32 samples at ``sample_rate_hz``."""

    def __init__(
        self, sample_rate_hz: int, *, target_s: float = 0.02, max_s: float = 0.12, settle_s: float | None = 1.0
    ) -> None:
        if not 0 <= target_s < max_s:
            raise ValueError(f"need 0 <= target_s < max_s, got {target_s}, {max_s}")
        self.sample_rate_hz = sample_rate_hz
        self._target = round(target_s * sample_rate_hz)
        self._max = round(max_s * sample_rate_hz)
        self._settle = None if settle_s is None else round(settle_s * sample_rate_hz)
        self._headroom = round(SETTLED_HEADROOM_S * sample_rate_hz)
        self._lowest = self._max  # the least buffered beyond a read, this settling window
        self._window = 0  # samples read this settling window
        self._fifo = SampleFifo(self._max + sample_rate_hz)  # a backstop: write() keeps it under _max
        self._playing = False
        self.underruns = 0
        self.dropped_samples = 0
        self.settled_samples = 0  # standing surplus dropped at quiet moments
        self.written_samples = 0

    @property
    def delay_s(self) -> float:
        """Seconds of audio waiting to be read."""
        return len(self._fifo) / self.sample_rate_hz

    def write(self, samples: FloatAudio) -> None:
        """Queue ``samples``; past ``max_s`` the oldest are dropped down to ``target_s``."""
        self._fifo.write(samples)
        self.written_samples += len(samples)
        if len(self._fifo) > self._max:
            excess = len(self._fifo) - max(self._target, 1)
            self._fifo.read(excess)
            self.dropped_samples += excess

    def read(self, n_samples: int) -> FloatAudio:
        """Exactly ``n_samples``: buffered audio once primed, silence while priming."""
        if not self._playing:
            if len(self._fifo) < max(self._target, 1):
                return np.zeros(n_samples, dtype=np.float32)
            self._playing = True
        if len(self._fifo) < n_samples:
            self.underruns += 1
            self._playing = self._target == 0
        elif self._settle is not None:
            self._settle_surplus(n_samples)
        return self._fifo.read(n_samples)

    def _settle_surplus(self, n_samples: int) -> None:
        self._lowest = min(self._lowest, len(self._fifo) - n_samples)
        self._window += n_samples
        if self._window < self._settle:  # type: ignore[operator]
            return
        surplus = self._lowest - self._headroom
        if surplus >= n_samples // 4 and self._quiet(surplus):
            self._fifo.read(surplus)
            self.settled_samples += surplus
        self._lowest, self._window = self._max, 0

    def _quiet(self, n: int) -> bool:
        """Whether the next ``n`` samples are near silence (dropping them is not heard)."""
        ahead = self._fifo.peek(n)
        return bool(len(ahead) == 0 or np.abs(ahead).max() < QUIET_PEAK)

    def clear(self) -> None:
        """Drop everything queued (a barge-in, a mode change); not counted as dropped."""
        self._fifo.clear()
        self._playing = False
