"""A causal voice converter: pitch and formants moved apart, live, batched across sessions.

Method: pitch-synchronous overlap-add (TD-PSOLA) with a causal YIN tracker
(``models.pitch``). The input is cut into grains, one per pitch period, each two
periods long (Hann-windowed) and centred on the period's peak; the grains are laid
down again ``ratio`` times as densely, which moves F0 by ``ratio`` while each grain
keeps the shape of the vocal tract's response, so the formants stay. Reading each
grain ``formant`` times faster (linear interpolation) moves the formants by that
factor on their own. Unvoiced sound is cut into fixed 5 ms grains laid down at the
same spacing, which rebuilds it unchanged (Hann windows at their half-width sum to
one), apart from the formant warp.

Why PSOLA (the issue's candidates measured in ``bench/vc.py`` and the README): a phase
vocoder needs windows of 40 ms or more to resolve a low voice's harmonics, twice the
latency budget; WORLD's analysis is not streaming. PSOLA's grains are at most
``latency`` long, it has no phase to lose between frames, and the output is one
continuous overlap-add: there is no chunk join to crossfade, so nothing can click
there (the SOLA that RVC adds is a fix for joins PSOLA does not have).

Latency is fixed: ``latency_samples`` (20 ms by default). A grain half-width ``h`` on
the input reaches ``h / formant`` on the output; a grain is laid down once the input
it needs has arrived, so ``h * (1 + 1 / formant) <= latency`` bounds it. A voice
whose period is longer than that bound gets grains shorter than two periods, still
centred on the peak, so each keeps its pulse.

Everything a session carries between calls is in its ``ConverterState``; the grains of
every session in one ``process`` call are cut, warped, windowed and summed in one
batch of torch operations, on ``device``. The bookkeeping per grain (where the next
peak is) is scalar and stays on the CPU. Output is independent of how the input was
chunked, so a file converted at once equals the same file streamed in 20 ms frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from voxline.errors import ConfigError

from .pitch import yin_periods
from .voice_params import PRESETS, VoiceParams

__all__ = ["PRESETS", "ConverterState", "PsolaConverter", "VoiceParams", "convert_stream"]

FloatAudio = npt.NDArray[np.float32]

F0_MIN_HZ = 60.0
F0_MAX_HZ = 500.0
HOP_S = 0.005
"""The pitch tracker runs every 5 ms."""
UNVOICED_PERIOD_S = 0.005
MAPPING_LOOKAHEAD_S = 0.005
"""An output grain at time t is cut from the last input mark before t + 5 ms: about the
nearest mark for a voice near 100 Hz, so the content is delayed by the latency itself
on average, give or take half a period."""
_INTERPOLATION_MARGIN = 4
_MIN_TAPER = 0.25  # of the half-width: the shortest edge a grain's window gets
_TRACK_SPREAD = 0.1  # the next mark is looked for within +-10 % of a period


@dataclass(slots=True, eq=False)
class ConverterState:
    """One session's stream through the converter: its recent input, marks and pending output.

    Positions are absolute sample indices of the session's input. ``params`` may be
    replaced between calls (a live change); it takes effect at the next grain.
    """

    params: VoiceParams
    history: FloatAudio = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    history_start: int = 0  # input index of history[0]
    received: int = 0  # input samples taken so far
    emitted: int = 0  # output samples returned so far
    periods: dict[int, tuple[float, bool]] = field(default_factory=dict)  # hop index -> (period, voiced)
    next_hop: int = 1  # the next hop index to analyse
    mark: float = 0.0  # the latest analysis mark (input index)
    mark_period: float = 0.0
    mark_voiced: bool = False
    synthesis: float = 0.0  # the next synthesis mark (input index)
    pending: FloatAudio = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # converted output from input index ``emitted - latency`` on


@dataclass(slots=True)
class _Grain:
    session: int
    analysis: float  # input index of the grain's centre
    synthesis: float  # output index (input time line) of its centre
    half_in: float  # half-width on the input (samples)
    taper_in: float  # length of each raised-cosine edge on the input (samples)
    formant: float
    gain: float


class PsolaConverter:
    """The streaming PSOLA converter at one sample rate; one instance serves many sessions.

    ``new_state(params)`` opens a session; ``process(states, chunks)`` takes the next
    chunk of every session given (any lengths) and returns, for each, exactly as
    many output samples: the converted input delayed by ``latency_samples``
    (zeros at first).
    ``sample_rate_hz`` is 8-48 kHz; ``device`` is a torch device (``"cpu"``, ``"cuda"``).
    Not thread-safe: one caller at a time (the engine's worker).
    """

    def __init__(self, sample_rate_hz: int = 16000, *, latency_ms: float = 20.0, device: str = "cpu") -> None:
        if not 8000 <= sample_rate_hz <= 48000:
            raise ConfigError(f"the converter runs at 8-48 kHz, not {sample_rate_hz} Hz")
        if not 10.0 <= latency_ms <= 100.0:
            raise ConfigError(f"converter latency must be 10-100 ms, not {latency_ms}")
        self.sample_rate_hz = sample_rate_hz
        self.device = torch.device(device)
        self.latency_samples = round(latency_ms * sample_rate_hz / 1000)
        self.hop = round(HOP_S * sample_rate_hz)
        self.tau_min = int(sample_rate_hz / F0_MAX_HZ)
        self.tau_max = math.ceil(sample_rate_hz / F0_MIN_HZ)
        self.window = 2 * self.tau_max
        self.unvoiced_period = UNVOICED_PERIOD_S * sample_rate_hz
        self.lookahead = round(MAPPING_LOOKAHEAD_S * sample_rate_hz)
        # input + output half-widths; the margin covers the rounding of grain centres and
        # the interpolator's two samples beyond its position
        self._grain_budget = self.latency_samples - self.lookahead - _INTERPOLATION_MARGIN

    @property
    def latency_ms(self) -> float:
        """The fixed delay from input to output (ms)."""
        return 1000.0 * self.latency_samples / self.sample_rate_hz

    def new_state(self, params: VoiceParams | None = None) -> ConverterState:
        """A fresh session stream (silence before its first sample)."""
        state = ConverterState(params or VoiceParams())
        state.mark_period = self.unvoiced_period
        return state

    # -- the batch --------------------------------------------------------------

    @torch.inference_mode()
    def process(self, states: Sequence[ConverterState], chunks: Sequence[FloatAudio]) -> list[FloatAudio]:
        """Convert the next chunk of each session; returns one array per session, same lengths."""
        if len(states) != len(chunks):
            raise ValueError(f"{len(states)} states for {len(chunks)} chunks")
        for state, chunk in zip(states, chunks, strict=True):
            self._take(state, np.asarray(chunk, dtype=np.float32).reshape(-1))
        self._track_pitch(states)
        grains = [g for i, state in enumerate(states) for g in self._plan(i, state)]
        if grains:
            self._overlap_add(states, grains)
        for state in states:  # input and estimates behind the analysis mark are never read again
            self._forget(state)
            oldest = int(state.mark // self.hop)
            for hop in [h for h in state.periods if h < oldest]:
                del state.periods[hop]
        return [self._emit(state, len(chunk)) for state, chunk in zip(states, chunks, strict=True)]

    def convert(self, audio: FloatAudio, params: VoiceParams | None = None, *, chunk_ms: float = 20.0) -> FloatAudio:
        """Convert a whole recording as a stream of ``chunk_ms`` chunks; same length, aligned."""
        return convert_stream(self, audio, params, chunk_ms=chunk_ms)

    # -- steps --------------------------------------------------------------------

    def _take(self, state: ConverterState, chunk: FloatAudio) -> None:
        state.history = np.concatenate((state.history, chunk))
        state.received += len(chunk)

    def _forget(self, state: ConverterState) -> None:
        """Drop input no later step reads: before the tracker's next window and the mark's period."""
        keep_from = min(state.next_hop * self.hop - self.window, int(state.mark) - self.tau_max) - 8
        drop = min(len(state.history), max(0, keep_from - state.history_start))
        if drop:
            state.history = state.history[drop:]
            state.history_start += drop

    def _track_pitch(self, states: Sequence[ConverterState]) -> None:
        rows: list[FloatAudio] = []
        owners: list[tuple[ConverterState, int]] = []
        for state in states:
            while state.next_hop * self.hop <= state.received:
                end = state.next_hop * self.hop
                rows.append(self._input(state, end - self.window, end))
                owners.append((state, state.next_hop))
                state.next_hop += 1
        if not rows:
            return
        windows = torch.from_numpy(np.stack(rows)).to(self.device)
        periods, voiced = yin_periods(windows, self.tau_min, self.tau_max)
        for (state, hop), period, is_voiced in zip(owners, periods.tolist(), voiced.tolist(), strict=True):
            state.periods[hop] = (period, bool(is_voiced))

    def _period_at(self, state: ConverterState, position: float) -> tuple[float, bool]:
        """The tracker's estimate from the audio up to ``position`` (the last hop at or before it)."""
        hop = int(position // self.hop)
        return state.periods.get(hop, (self.unvoiced_period, False))

    def _half_width(self, period: float, formant: float) -> float:
        """A grain's half-width on the input: a period, or less where the latency bounds it."""
        return min(period, self._grain_budget * formant / (1.0 + formant))

    def _plan(self, session: int, state: ConverterState) -> list[_Grain]:
        """The grains due now: every synthesis mark whose grain reaches the output about to go."""
        params = state.params
        # Output up to input index ``horizon`` leaves in this call; a grain may reach
        # back at most ``latency / (1 + formant)`` from its centre.
        horizon = state.received - self.latency_samples - 1
        reach_back = self._grain_budget / (1.0 + params.formant)
        grains: list[_Grain] = []
        while True:
            if state.synthesis - reach_back > horizon:
                return grains
            self._advance_marks(state, state.synthesis + self.lookahead)
            half_in = self._half_width(state.mark_period, params.formant)
            if state.mark_voiced:
                out_period = (
                    self.sample_rate_hz / params.monotone_hz if params.monotone_hz
                    else state.mark_period / params.pitch_ratio
                )
                gain = math.sqrt(min(2.0, max(0.5, out_period / state.mark_period)))
            else:
                out_period, gain = state.mark_period, 1.0
            taper = max(2.0 * half_in - state.mark_period, _MIN_TAPER * half_in)
            grains.append(_Grain(session, state.mark, state.synthesis, half_in, taper, params.formant, gain))
            state.synthesis += out_period

    def _advance_marks(self, state: ConverterState, until: float) -> None:
        """Move the analysis mark to the last one at or before ``until``."""
        while True:
            if state.mark_voiced:
                earliest = state.mark + (1.0 - _TRACK_SPREAD) * state.mark_period
            else:
                earliest = state.mark + self.unvoiced_period
            if earliest > until:
                return
            period, voiced = self._period_at(state, earliest)
            if not voiced:
                candidate, period = state.mark + self.unvoiced_period, self.unvoiced_period
            elif state.mark_voiced:
                candidate = self._follow_period(state, period)
                period = candidate - state.mark  # the period as followed: grains tile exactly
            else:
                candidate = self._voicing_onset(state, period)
            if candidate > until:
                return
            state.mark, state.mark_period, state.mark_voiced = candidate, period, voiced

    def _follow_period(self, state: ConverterState, period: float) -> float:
        """The next mark: the lag within 10 % of ``period`` that best repeats the period before the mark.

        Following the waveform keeps every grain at the same phase of its pitch cycle,
        so the grains laid down again still add up to a periodic voice.
        """
        mark = int(state.mark)
        width = max(2, round(period))
        lags = np.arange(max(1, math.floor((1 - _TRACK_SPREAD) * period)), math.ceil((1 + _TRACK_SPREAD) * period) + 1)
        lags = lags[mark + lags <= state.received]
        if not len(lags):
            return state.mark + period
        reference = self._input(state, mark - width, mark)
        stretch = self._input(state, mark + int(lags[0]) - width, mark + int(lags[-1]))
        candidates = np.lib.stride_tricks.sliding_window_view(stretch, width)
        score = candidates @ reference / (np.sqrt(np.sum(candidates * candidates, axis=1)) + 1e-9)
        return float(mark + lags[int(np.argmax(score))])

    def _voicing_onset(self, state: ConverterState, period: float) -> float:
        """The first voiced mark: on the loudest sample of the last period heard, moved on by periods.

        Centring grains on the glottal pulse matters when the latency bound makes them
        shorter than two periods: a grain between pulses would be nearly empty.
        """
        end = int(state.mark + self.unvoiced_period)
        width = max(2, round(period))
        peak = end - width + int(np.argmax(np.abs(self._input(state, end - width, end))))
        steps = max(0, math.floor((state.mark - peak) / period) + 1)
        return peak + steps * period

    def _overlap_add(self, states: Sequence[ConverterState], grains: list[_Grain]) -> None:
        """Cut, warp, window and add every grain of the batch into its session's pending output."""
        device, latency = self.device, self.latency_samples
        reach = [0.0] * len(states)
        for g in grains:
            reach[g.session] = max(reach[g.session], g.synthesis + g.half_in / g.formant)
        for state, furthest in zip(states, reach, strict=True):
            need = math.ceil(furthest) + 2 - (state.emitted - latency)
            if len(state.pending) < need:
                state.pending = np.concatenate((state.pending, np.zeros(need - len(state.pending), np.float32)))
        history_offsets = np.cumsum([0] + [len(s.history) for s in states])
        output_offsets = np.cumsum([0] + [len(s.pending) for s in states])
        source = torch.from_numpy(np.concatenate([s.history for s in states])).to(device)
        target = torch.from_numpy(np.concatenate([s.pending for s in states])).to(device)

        def per_grain(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)[:, None]

        owner = [g.session for g in grains]
        formant = per_grain([g.formant for g in grains])
        half_out = per_grain([g.half_in for g in grains]) / formant
        centre_out = per_grain([float(round(g.synthesis)) for g in grains], torch.float64)
        centre_in = per_grain([g.analysis - states[g.session].history_start for g in grains], torch.float64)
        in_low = per_grain([history_offsets[i] for i in owner], torch.int64)
        in_high = per_grain([history_offsets[i + 1] - 1 for i in owner], torch.int64)
        out_start = per_grain([max(0, states[i].emitted - latency) for i in owner], torch.int64)
        out_base = per_grain([output_offsets[i] - (states[i].emitted - latency) for i in owner], torch.int64)
        span = 2 * math.ceil(float(half_out.max())) + 2
        index = torch.floor(centre_out - half_out.double()).long() + 1 + torch.arange(span, device=device)
        offset = (index.double() - centre_out).float()  # output samples from the grain's centre
        taper_out = per_grain([g.taper_in for g in grains]) / formant
        edge = ((half_out - offset.abs()) / taper_out).clamp(0.0, 1.0)  # 0 at the grain's ends
        window = 0.5 - 0.5 * torch.cos(torch.pi * edge)
        position = centre_in + (offset * formant).double() + in_low.double()
        low = torch.floor(position).long()
        t = (position - low.double()).float()

        def tap(k: int) -> torch.Tensor:
            return source[(low + k).clamp(in_low, in_high)]

        # Catmull-Rom cubic: exact on whole samples, and -1 dB at 6 kHz on half
        # samples where linear interpolation loses 8 dB (the voice's brightness).
        p0, p1, p2, p3 = tap(-1), tap(0), tap(1), tap(2)
        sample = p1 + 0.5 * t * (p2 - p0 + t * (2 * p0 - 5 * p1 + 4 * p2 - p3 + t * (3 * (p1 - p2) + p3 - p0)))
        inside = (low - 1 >= in_low) & (low + 2 <= in_high)
        values = sample * window * inside * per_grain([g.gain for g in grains])
        valid = (index >= out_start) & (window > 0)
        target.index_add_(0, (index + out_base)[valid], values[valid])
        result = target.cpu().numpy()
        for i, state in enumerate(states):
            state.pending = result[output_offsets[i] : output_offsets[i + 1]].copy()

    def _emit(self, state: ConverterState, n: int) -> FloatAudio:
        """The next ``n`` output samples; ``pending`` starts at input index ``emitted - latency``."""
        if len(state.pending) < n:
            state.pending = np.concatenate((state.pending, np.zeros(n - len(state.pending), np.float32)))
        out, state.pending = state.pending[:n], state.pending[n:]
        state.emitted += n
        return out

    def _input(self, state: ConverterState, start: int, stop: int) -> FloatAudio:
        """Input samples ``start:stop`` (zeros before the stream or outside the history)."""
        out = np.zeros(stop - start, dtype=np.float32)
        lo = max(start, state.history_start)
        hi = min(stop, state.history_start + len(state.history))
        if hi > lo:
            out[lo - start : hi - start] = state.history[lo - state.history_start : hi - state.history_start]
        return out


def convert_stream(
    converter: Any, audio: FloatAudio, params: VoiceParams | None = None, *, chunk_ms: float = 20.0
) -> FloatAudio:
    """Run ``audio`` through a streaming ``converter`` in ``chunk_ms`` chunks, then its latency of silence.

    The result has the input's length and lines up with it sample for sample (the
    converter's ``latency_samples`` are taken off the front).
    """
    state = converter.new_state(params)
    step = max(1, round(chunk_ms * converter.sample_rate_hz / 1000))
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    latency = converter.latency_samples
    padded = np.concatenate((samples, np.zeros(latency, np.float32)))
    parts = [converter.process([state], [padded[i : i + step]])[0] for i in range(0, len(padded), step)]
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(out[latency : latency + len(samples)])
