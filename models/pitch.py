"""Pitch: a causal YIN estimator in torch (batched), and an offline F0 measure in numpy.

``yin_periods`` is what the voice converter runs live: each row of its input is the
audio that ends at one analysis point (nothing after it), so an estimate never waits
for future samples. Rows from any number of sessions go through in one batch, on the
CPU or a GPU alike. It follows de Cheveigné and Kawahara's YIN (2002): the difference
function, its cumulative-mean normalisation, the first dip under a threshold, and a
parabola through the dip for a sub-sample period.

``measure_f0`` is the yardstick for tests and benchmarks, deliberately a different
method: a normalised cross-correlation over centred 40 ms windows (it may look ahead;
it is never used live), so a converter checked with it is not graded by its own
tracker.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

FloatAudio = npt.NDArray[np.float32]

YIN_THRESHOLD = 0.25
"""A row whose best normalised difference is above this is unvoiced (YIN's paper: 0.1-0.2;
looser here, since a 33 ms window over running speech sees F0 move)."""
MIN_VOICED_RMS = 0.002
"""Quieter rows (about -54 dBFS) are unvoiced whatever their periodicity."""
_OCTAVE_SHARE = 0.9


def yin_periods(
    windows: torch.Tensor, tau_min: int, tau_max: int, threshold: float = YIN_THRESHOLD
) -> tuple[torch.Tensor, torch.Tensor]:
    """Period (samples, fractional) and voicing of each row of ``windows`` ([N, W]).

    The difference function compares the first ``W - tau_max`` samples with the same
    span ``tau`` samples later, for ``tau`` in ``[tau_min, tau_max]``; so ``W`` must be
    more than ``tau_max`` (``2 * tau_max`` is usual). Returns ``(periods, voiced)``:
    float and bool tensors of shape [N]; an unvoiced row's period is its best guess.
    """
    n_rows, width = windows.shape
    span = width - tau_max
    if span <= 0 or not 1 <= tau_min < tau_max:
        raise ValueError(f"need 1 <= tau_min < tau_max < window width; got {tau_min}, {tau_max}, {width}")
    x = windows.to(torch.float32)
    x = x - x.mean(dim=1, keepdim=True)
    size = 1 << (width + span - 1).bit_length()
    spectrum = torch.fft.rfft(x, size)
    head = torch.fft.rfft(x[:, :span], size)
    # cross[tau] = sum_j x[j] * x[j + tau] over the first ``span`` samples
    cross = torch.fft.irfft(spectrum * head.conj(), size)[:, : tau_max + 1]
    energy = torch.cumsum(torch.nn.functional.pad(x * x, (1, 0)), dim=1)
    head_energy = energy[:, span : span + 1]
    taus = torch.arange(tau_max + 1, device=x.device)
    shifted_energy = energy[:, taus + span] - energy[:, taus]
    diff = (head_energy + shifted_energy - 2 * cross).clamp_min(0.0)
    # cumulative-mean normalised difference; d'(0) = 1
    running = torch.cumsum(diff[:, 1:], dim=1)
    cmnd = torch.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus[1:] / running.clamp_min(1e-12)
    search = cmnd[:, tau_min : tau_max + 1]
    below = search < threshold
    first = torch.where(below.any(dim=1), below.to(torch.int8).argmax(dim=1), search.argmin(dim=1))
    # From the first dip under the threshold, walk down to its local minimum.
    index = torch.arange(search.shape[1], device=x.device).expand_as(search)
    in_run = (index >= first[:, None]) & (below | (index == first[:, None]))
    started = index < first[:, None]
    contiguous = torch.cumprod((in_run | started).to(torch.int8), dim=1).bool() & ~started
    best = torch.where(contiguous, search, torch.full_like(search, float("inf"))).argmin(dim=1)
    tau = best + tau_min
    rows = torch.arange(n_rows, device=x.device)
    left = cmnd[rows, (tau - 1).clamp_min(1)]
    mid = cmnd[rows, tau]
    right = cmnd[rows, (tau + 1).clamp_max(tau_max)]
    curvature = left - 2 * mid + right
    offset = torch.where(curvature > 1e-9, 0.5 * (left - right) / curvature.clamp_min(1e-9), torch.zeros_like(mid))
    periods = tau.to(torch.float32) + offset.clamp(-0.5, 0.5)
    rms = torch.sqrt(torch.mean(x * x, dim=1))
    voiced = (mid < threshold) & (rms > MIN_VOICED_RMS)
    return periods, voiced


def measure_f0(
    audio: FloatAudio, sample_rate_hz: int, *, hop_s: float = 0.01, f0_min: float = 60.0, f0_max: float = 500.0,
    min_correlation: float = 0.7,
) -> FloatAudio:
    """F0 (Hz) every ``hop_s`` of ``audio``; 0 where unvoiced. Offline (centred windows).

    Each 40 ms window is compared with itself shifted by every lag in the
    F0 range (normalised cross-correlation); the best lag, refined by a parabola, is
    the period when its correlation reaches ``min_correlation`` and the window is
    louder than ``MIN_VOICED_RMS``. Of the lags whose correlation is a local peak within
    10 % of the best, the shortest wins (a signal periodic in T is periodic in 2T and 3T too).
    """
    x = np.asarray(audio, dtype=np.float64)
    hop = max(1, round(hop_s * sample_rate_hz))
    lag_min = max(2, int(sample_rate_hz / f0_max))
    lag_max = int(sample_rate_hz / f0_min) + 1
    width = round(0.04 * sample_rate_hz)
    out = np.zeros(max(0, (len(x) - width - lag_max) // hop + 1), dtype=np.float32)
    lags = np.arange(lag_min, lag_max + 1)
    for i in range(len(out)):
        start = i * hop
        head = x[start : start + width]
        head = head - head.mean()
        if np.sqrt(np.mean(head * head)) < MIN_VOICED_RMS:
            continue
        segment = x[start : start + width + lag_max + 1]
        segment = segment - segment[:width].mean()
        windows = np.lib.stride_tricks.sliding_window_view(segment, width)[lags]
        dots = windows @ head
        norms = np.sqrt(np.sum(windows * windows, axis=1) * np.dot(head, head)) + 1e-12
        ncc = dots / norms
        peaks = np.flatnonzero((ncc[1:-1] >= ncc[:-2]) & (ncc[1:-1] >= ncc[2:])) + 1
        if not len(peaks) or ncc[peaks].max() < min_correlation:
            continue
        strong = peaks[ncc[peaks] >= _OCTAVE_SHARE * ncc[peaks].max()]
        best = int(strong[0])  # the shortest lag that correlates almost as well as any
        if ncc[best] < min_correlation:
            continue
        lag = float(lags[best])
        if 0 < best < len(lags) - 1:
            a, b, c = ncc[best - 1], ncc[best], ncc[best + 1]
            curvature = a - 2 * b + c
            if curvature < 0:
                lag += 0.5 * (a - c) / curvature
        out[i] = sample_rate_hz / lag
    return out
