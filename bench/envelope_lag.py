"""The delay between two recordings of the same speech, read off their loudness envelopes.

A converted voice has other harmonics than the original (pitch, formants, Opus), so
its waveform does not correlate with the input's; its loudness over time does:
syllables start and stop at the same moments. The envelope is the RMS of short blocks
(``block_ms``), each placed at its centre on a time axis, so two envelopes need not
share a clock or a regular grid: a stream received frame by frame is placed at the
frames' arrival times.

``best_lag`` slides the second envelope against the first in ``step_s`` steps, reads
it at the first's times shifted by each lag (linear interpolation), and keeps the lag
with the highest correlation (Pearson), refined by a parabola through its
neighbours.

    times, env = rms_envelope(audio, 16000)
    lag_s, r = best_lag(times, env, times_out, env_out, 0.0, 0.1)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def rms_envelope(
    audio: npt.ArrayLike, rate_hz: int, *, block_ms: float = 10.0, hop_ms: float | None = None, start_s: float = 0.0
) -> tuple[FloatArray, FloatArray]:
    """RMS of ``block_ms`` blocks every ``hop_ms`` (default: the block) of ``audio``: (centre times s, values)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    block = max(1, round(block_ms * rate_hz / 1000))
    hop = max(1, round((hop_ms if hop_ms is not None else block_ms) * rate_hz / 1000))
    if len(x) < block:
        return np.zeros(0), np.zeros(0)
    power = np.concatenate(([0.0], np.cumsum(x * x)))
    starts = np.arange(0, len(x) - block + 1, hop)
    values = np.sqrt((power[starts + block] - power[starts]) / block)
    return start_s + (starts + block / 2) / rate_hz, values


def frames_envelope(
    frames: Sequence[tuple[float, npt.ArrayLike]], rate_hz: int, *, block_ms: float = 10.0
) -> tuple[FloatArray, FloatArray]:
    """The envelope of frames stamped with wall times: each ``(time_s, samples)`` cut into blocks from its time on."""
    times: list[FloatArray] = []
    values: list[FloatArray] = []
    for stamp, samples in frames:
        t, v = rms_envelope(samples, rate_hz, block_ms=block_ms, start_s=stamp)
        times.append(t)
        values.append(v)
    if not times:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(np.concatenate(times), kind="stable")
    return np.concatenate(times)[order], np.concatenate(values)[order]


def best_lag(
    times_a: FloatArray, env_a: FloatArray, times_b: FloatArray, env_b: FloatArray,
    min_lag_s: float, max_lag_s: float, *, step_s: float = 0.001,
) -> tuple[float | None, float]:
    """The lag ``L`` in [min, max] for which ``env_b(t + L)`` best follows ``env_a(t)``: (L in s, its correlation).

    ``None`` (and 0.0) when either envelope is empty or flat, or no lag keeps ``times_a``
    inside ``times_b``'s span.
    """
    if len(env_a) < 3 or len(env_b) < 3 or np.std(env_a) == 0:
        return None, 0.0
    lags = np.arange(min_lag_s, max_lag_s + step_s / 2, step_s)
    scores = np.full(len(lags), -np.inf)
    for i, lag in enumerate(lags):
        shifted = times_a + lag
        inside = (shifted >= times_b[0]) & (shifted <= times_b[-1])
        if inside.mean() < 0.9:
            continue
        read = np.interp(shifted[inside], times_b, env_b)
        if np.std(read) > 0:
            scores[i] = float(np.corrcoef(env_a[inside], read)[0, 1])
    if not np.isfinite(scores).any():
        return None, 0.0
    k = int(np.argmax(scores))
    lag = float(lags[k])
    if 0 < k < len(lags) - 1 and np.isfinite(scores[k - 1]) and np.isfinite(scores[k + 1]):
        a, b, c = scores[k - 1], scores[k], scores[k + 1]
        curvature = a - 2 * b + c
        if curvature < 0:
            lag += step_s * 0.5 * (a - c) / curvature
    return float(lag), float(scores[k])
