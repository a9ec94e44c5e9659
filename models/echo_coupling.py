"""Is the agent's voice reaching the microphone at all? An echo-path detector. Sans I/O.

WebRTC's AEC3 starts out assuming a strong echo path and suppresses the microphone
hard while the far end plays, until it has learnt the path (about 2-3 s of far-end
audio). With headphones there is no echo path to learn, so for those first seconds
it removes the *user*: a barge-in over the agent's first reply is lost (measured:
1 % of the user's energy kept 1 s into the reply, 54 % at 3 s, 97 % at 8 s).

``EchoCouplingDetector`` measures the path directly: every ``every_s`` of audio while
the far end is active, the peak normalized cross-correlation (each lag normalized by
its own reference segment) between the last ``window_s`` of microphone audio and the
reference over lags 0..``max_lag_ms``. Echo through a loudspeaker correlates (0.82-0.84
through a simulated room at 120-450 ms, gain 0.5); a headset does not (0.05-0.13, the
user talking over the agent included; a chance peak of 0.36 was seen once with both
sides in the same voice).

``bypass`` (pass the microphone through) becomes true once ``absent_after_s`` of checks
found no coupling; only checks made after the far end has played for the lag range
plus the window count (an echo 500 ms late cannot have arrived 300 ms into a reply),
so with a headset the microphone is passed through from about 1.2 s into the
session's first reply, and from the first sample of every later one. It becomes false
when two checks in a row find coupling (one chance peak while both sides talk does
not switch it), and stays false for at least ``hold_s``. The verdict outlives the
silences between replies.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

FloatAudio = npt.NDArray[np.float32]


class EchoCouplingDetector:
    """Tracks whether played audio comes back in the microphone (16 kHz, fed frame by frame)."""

    def __init__(
        self,
        sample_rate_hz: int = 16000,
        *,
        window_s: float = 0.4,
        max_lag_ms: float = 500.0,
        every_s: float = 0.1,
        threshold: float = 0.4,
        absent_after_s: float = 0.3,
        hold_s: float = 5.0,
        active_rms: float = 0.003,
    ) -> None:
        self.rate = sample_rate_hz
        self.window = int(window_s * sample_rate_hz)
        self.max_lag = int(max_lag_ms * sample_rate_hz / 1000)
        self.every = int(every_s * sample_rate_hz)
        self.threshold = threshold
        self.absent_after = int(absent_after_s * sample_rate_hz)
        self.hold = int(hold_s * sample_rate_hz)
        self.active_rms = active_rms
        self._mic: deque[FloatAudio] = deque()
        self._ref: deque[FloatAudio] = deque()
        self._mic_n = 0
        self._ref_n = 0
        self._since_check = 0
        self._absent_evidence = 0
        self._since_coupled: int | None = None
        self._ref_active = 0  # samples since the far end became active (0 while quiet)
        self._coupled_checks = 0  # consecutive checks at or above the threshold
        self._ref_quiet = 0
        self.coupling = 0.0
        """The last measured peak normalized cross-correlation."""

    @property
    def bypass(self) -> bool:
        """True when the far end has played for a while and never come back: use the raw mic."""
        return self._since_coupled is None and self._absent_evidence >= self.absent_after

    def feed(self, reference: FloatAudio, mic: FloatAudio) -> None:
        """Take one aligned pair of frames: what was played and what the microphone heard."""
        self._push(self._ref, reference, self.window + self.max_lag, is_ref=True)
        self._push(self._mic, mic, self.window, is_ref=False)
        n = len(mic)
        if np.sqrt(np.mean(np.square(reference, dtype=np.float32))) >= self.active_rms:
            self._ref_active += n
            self._ref_quiet = 0
        else:
            self._ref_quiet += n
            if self._ref_quiet > self.rate // 2:  # half a second of quiet ends a stretch
                self._ref_active = 0
        if self._since_coupled is not None:
            self._since_coupled += n
            if self._since_coupled > self.hold:
                self._since_coupled = None
        self._since_check += n
        if self._since_check >= self.every and self._mic_n >= self.window:
            self._since_check = 0
            self._check(n_new=self.every)

    def _push(self, ring: deque[FloatAudio], frame: FloatAudio, keep: int, *, is_ref: bool) -> None:
        ring.append(np.asarray(frame, dtype=np.float32))
        total = (self._ref_n if is_ref else self._mic_n) + len(frame)
        while ring and total - len(ring[0]) >= keep:
            total -= len(ring.popleft())
        if is_ref:
            self._ref_n = total
        else:
            self._mic_n = total

    def _check(self, n_new: int) -> None:
        ref = np.concatenate(self._ref)
        mic = np.concatenate(self._mic)[-self.window :]
        recent_ref = ref[-self.window :]
        if np.sqrt(np.mean(recent_ref**2)) < self.active_rms:
            return  # the far end is quiet: nothing to learn
        # Evidence of no echo needs far-end audio old enough for its echo to have arrived.
        covered = self._ref_active >= self.max_lag + self.window
        mic_energy = float(np.dot(mic, mic))
        if mic_energy <= 0:
            if covered:
                self._absent_evidence += n_new
            return
        # Correlate the mic window with every reference window ending up to max_lag earlier.
        size = 1 << int(np.ceil(np.log2(len(ref) + len(mic))))
        spectrum = np.fft.rfft(ref, size) * np.conj(np.fft.rfft(mic, size))
        corr = np.fft.irfft(spectrum, size)
        start = len(ref) - len(mic)  # lag 0: the reference window aligned with the mic window
        first = max(0, start - self.max_lag)
        lags = corr[first : start + 1]
        # Normalize each lag by the energy of its own reference segment (so |ncc| <= 1);
        # near-silent segments cannot show an echo and are left out.
        cumulative = np.concatenate(([0.0], np.cumsum(ref.astype(np.float64) ** 2)))
        segment_energy = cumulative[first + len(mic) : start + len(mic) + 1] - cumulative[first : start + 1]
        usable = segment_energy >= len(mic) * self.active_rms**2
        if not usable.any():
            return
        ncc = np.abs(lags[usable]) / np.sqrt(mic_energy * segment_energy[usable])
        self.coupling = float(ncc.max())
        self._coupled_checks = self._coupled_checks + 1 if self.coupling >= self.threshold else 0
        # Two checks in a row: a real echo path stays coupled, a chance peak between two
        # voices talking at once (double talk) does not.
        if self._coupled_checks >= 2 or (self.coupling >= self.threshold and not self.bypass):
            self._since_coupled = 0
            self._absent_evidence = 0
        elif self.coupling < self.threshold and self._since_coupled is None and covered:
            self._absent_evidence += n_new
