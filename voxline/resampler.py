"""A streaming resampler with a small, fixed latency. Sans I/O.

soxr's high-quality streaming filters hold audio back: 48 → 16 kHz in 20 ms chunks
delays each sample by 7-37 ms (it works in internal blocks), 22.05 → 48 kHz by 40 ms.
On a voice call that lag is paid twice per turn and again on every barge-in, so
``StreamResampler`` picks, per rate pair:

- an integer decimation (48 → 16 kHz, the WebRTC microphone): a linear-phase FIR
  low-pass (Kaiser-windowed sinc, ``DECIMATOR_TAPS`` taps, -6 dB at 90 % of the new
  Nyquist frequency, over 70 dB down where it would alias into speech) keeping one
  output sample in ``factor``. Its delay is fixed: half the filter, 1.5 ms at 48 kHz;
  the output is shifted back by it, so output sample k is the input at k × factor.
- an integer interpolation (8 → 16 kHz, a phone call's caller): zeros stuffed between
  the samples, then the same kind of low-pass at the new rate (-6 dB at 90 % of the old
  Nyquist frequency), scaled back to unit gain. Its delay is half the filter at the new
  rate, 4.5 ms at 16 kHz, also shifted back: output sample k × factor is input k.
  (soxr held 8 → 16 kHz back 33 ms on average, 61 at worst, in 20 ms chunks.)
- any other pair (22.05 → 48 kHz, the agent's voice): soxr's ``LQ`` stream, which
  holds back 1-20 ms instead of 30-40 (16-bit quality, plenty for speech).

Either way the filter's state spans chunk joins, so a chunked stream equals the whole
signal resampled at once: no clicks at joins. ``flush`` returns the tail at the end.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

FloatAudio = npt.NDArray[np.float32]

DECIMATOR_TAPS = 145
"""FIR length of the integer decimator (odd: the delay is a whole number of samples)."""
_KAISER_BETA = 8.0
_CUTOFF = 0.9  # of the output Nyquist frequency


def decimator_taps(factor: int, taps: int = DECIMATOR_TAPS) -> FloatAudio:
    """The low-pass FIR for decimating (or interpolating) by ``factor``: unit gain at DC, symmetric.

    It runs at the higher rate; its cut-off is 90 % of the lower rate's Nyquist frequency.
    """
    n = np.arange(taps) - (taps - 1) / 2
    cutoff = _CUTOFF / factor  # in cycles per input sample x 2 (1.0 = input Nyquist)
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, _KAISER_BETA)
    return (h / h.sum()).astype(np.float32)


class _FirDecimator:
    """Filters with ``taps`` and keeps one sample in ``factor``, shifted back by the filter's delay."""

    def __init__(self, factor: int, taps: FloatAudio | None = None) -> None:
        self.factor = factor
        self.taps = decimator_taps(factor) if taps is None else taps
        self.delay = (len(self.taps) - 1) // 2  # input samples
        self._history = np.zeros(len(self.taps) - 1, dtype=np.float32)
        self._consumed = 0  # input samples taken so far

    def process(self, samples: FloatAudio) -> FloatAudio:
        buffer = np.concatenate((self._history, samples))
        filtered = np.convolve(buffer, self.taps, mode="valid")  # one per input sample
        self._history = buffer[len(buffer) - len(self._history) :]
        # filtered[i] is the filter's output at input index consumed + i; its content is
        # the input ``delay`` samples earlier. Keep outputs at delay + k * factor.
        first = self._consumed
        self._consumed += len(samples)
        keep = max(first, self.delay)
        keep += -(keep - self.delay) % self.factor
        return np.ascontiguousarray(filtered[keep - first :: self.factor], dtype=np.float32)

    def flush(self) -> FloatAudio:
        return self.process(np.zeros(self.delay, dtype=np.float32))


class _FirInterpolator:
    """Stuffs ``factor - 1`` zeros after each sample, then low-passes (a factor-1 ``_FirDecimator``)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self._filter = _FirDecimator(1, decimator_taps(factor) * np.float32(factor))

    def process(self, samples: FloatAudio) -> FloatAudio:
        stuffed = np.zeros(len(samples) * self.factor, dtype=np.float32)
        stuffed[:: self.factor] = samples
        return self._filter.process(stuffed)

    def flush(self) -> FloatAudio:
        return self._filter.flush()


class StreamResampler:
    """Mono float32 audio from ``in_rate_hz`` to ``out_rate_hz``, chunk by chunk.

    ``process`` takes any number of samples and returns what is ready; after the last
    chunk, ``flush`` returns the rest, so the output holds ``len(input) * out / in``
    samples (give or take one), aligned with the input. Equal rates pass through.
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate_hz} -> {out_rate_hz}")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._fir: _FirDecimator | _FirInterpolator | None = None
        self._soxr: soxr.ResampleStream | None = None
        if in_rate_hz == out_rate_hz:
            pass
        elif in_rate_hz % out_rate_hz == 0:
            self._fir = _FirDecimator(in_rate_hz // out_rate_hz)
        elif out_rate_hz % in_rate_hz == 0:
            self._fir = _FirInterpolator(out_rate_hz // in_rate_hz)
        else:
            self._soxr = soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, dtype="float32", quality="LQ")

    def process(self, samples: npt.ArrayLike) -> FloatAudio:
        """Resample the next chunk; returns the output samples ready so far."""
        audio = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if self._fir is not None:
            return self._fir.process(audio)
        if self._soxr is not None:
            return np.ascontiguousarray(self._soxr.resample_chunk(audio), dtype=np.float32)
        return audio

    def flush(self) -> FloatAudio:
        """The output still held in the filter, at the end of the stream."""
        if self._fir is not None:
            return self._fir.flush()
        if self._soxr is not None:
            return np.ascontiguousarray(
                self._soxr.resample_chunk(np.zeros(0, dtype=np.float32), last=True), dtype=np.float32
            )
        return np.zeros(0, dtype=np.float32)
