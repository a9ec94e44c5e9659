"""Voice activity detection: Silero VAD v6 on onnxruntime, and a speech segmenter.

Three pieces, from the model outwards:

- ``SileroVadModel``: the ONNX session, one per process (``SileroVadModel.shared()``),
  single-threaded inside (intra/inter-op threads = 1) so many sessions share the cores
  fairly. ``run`` is thread-safe and stateless: the recurrent state goes in and out.
- ``SileroVadStream``: one per audio stream. Fed 16 kHz float32 audio in chunks of any
  size, it runs the model on consecutive 512-sample windows (each preceded by the
  64 samples before it, as the v5/v6 model expects) and returns one
  ``VadProbability`` per window, stamped with the window's first sample.
- ``SpeechSegmenter``: sans-I/O hysteresis over those probabilities, emitting
  ``SpeechStarted`` / ``SpeechEnded`` with positions in samples.

Cost: one window is roughly a tenth of a millisecond of one core (``bench`` measures
it), so a stage may feed 20 ms chunks inline on its event loop; feed long buffers
from a worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from voxline.errors import EngineError
from voxline.models.registry import silero_vad_onnx_path

__all__ = [
    "VAD_CONTEXT_SAMPLES",
    "VAD_SAMPLE_RATE_HZ",
    "VAD_WINDOW_SAMPLES",
    "SileroVadModel",
    "SileroVadStream",
    "SpeechEnded",
    "SpeechEvent",
    "SpeechSegmenter",
    "SpeechStarted",
    "VadProbability",
]

VAD_SAMPLE_RATE_HZ = 16000
"""The only rate the streams accept (Hz); resample before feeding."""
VAD_WINDOW_SAMPLES = 512
"""Samples per model call at 16 kHz (32 ms)."""
VAD_CONTEXT_SAMPLES = 64
"""Samples of the previous window prepended to each call (v5/v6 model)."""
_STATE_SHAPE = (2, 1, 128)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class VadProbability:
    """Speech probability in [0, 1] of the 512-sample window starting at ``pts_samples``."""

    pts_samples: int
    probability: float


class SileroVadModel:
    """The Silero VAD ONNX session shared by every stream of the process.

    ``run`` takes a batch of windows with their context and recurrent states and
    returns probabilities and the next states; it keeps no state itself and may be
    called from any thread at once (onnxruntime's ``run`` is thread-safe).
    """

    _shared: ClassVar[SileroVadModel | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, onnx_path: str | None = None) -> None:
        """Load the model from ``onnx_path`` (default: the packaged silero_vad.onnx)."""
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        path = onnx_path or silero_vad_onnx_path()
        try:
            self._session = onnxruntime.InferenceSession(
                path, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineError(f"cannot load Silero VAD from {path}: {exc}") from exc
        self._sr = np.array(VAD_SAMPLE_RATE_HZ, dtype=np.int64)

    @classmethod
    def shared(cls) -> SileroVadModel:
        """The process-wide instance, created on first use (thread-safe)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def run(
        self, windows: FloatArray, state: FloatArray
    ) -> tuple[npt.NDArray[np.float32], FloatArray]:
        """Score windows: ``windows`` is (batch, 64 + 512) float32, ``state`` (2, batch, 128).

        Returns (probabilities of shape (batch,), next state of shape (2, batch, 128)).
        """
        out, next_state = self._session.run(
            None, {"input": windows, "state": state, "sr": self._sr}
        )
        return np.asarray(out, dtype=np.float32).reshape(-1), np.asarray(next_state)


class SileroVadStream:
    """Streaming VAD over one 16 kHz stream; not thread-safe (one owner).

    ``feed(audio)`` accepts any number of samples and returns the probabilities of
    every window completed so far; samples short of a full window wait for the next
    call. ``pts_samples`` counts from the first sample ever fed (or ``start_pts``).
    """

    def __init__(self, model: SileroVadModel | None = None, *, start_pts: int = 0) -> None:
        self._model = model or SileroVadModel.shared()
        self._start_pts = start_pts
        self.reset()

    def reset(self) -> None:
        """Forget audio and model state; the next sample fed is at ``start_pts`` again."""
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._buffer = np.zeros(VAD_CONTEXT_SAMPLES, dtype=np.float32)
        self._next_pts = self._start_pts

    def feed(self, audio: FloatArray) -> list[VadProbability]:
        """Append mono float32 samples at 16 kHz; return one probability per completed window.

        Raises:
            ValueError: ``audio`` is not one-dimensional.
        """
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"VAD takes mono audio (1-D), got shape {samples.shape}")
        # _buffer always starts with the 64 context samples of the next window.
        self._buffer = np.concatenate((self._buffer, samples))
        results: list[VadProbability] = []
        span = VAD_CONTEXT_SAMPLES + VAD_WINDOW_SAMPLES
        offset = 0
        while len(self._buffer) - offset >= span:
            window = self._buffer[offset : offset + span].reshape(1, span)
            probs, self._state = self._model.run(window, self._state)
            results.append(VadProbability(self._next_pts, float(probs[0])))
            self._next_pts += VAD_WINDOW_SAMPLES
            offset += VAD_WINDOW_SAMPLES
        if offset:
            self._buffer = self._buffer[offset:].copy()
        return results


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began at ``start_samples`` (already moved earlier by the pre-roll pad)."""

    start_samples: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Speech ended at ``end_samples`` (already moved later by the pad, within the hangover)."""

    end_samples: int


SpeechEvent = SpeechStarted | SpeechEnded


class SpeechSegmenter:
    """Turns window probabilities into speech start/end events (sans-I/O).

    Hysteresis: a window at or above ``threshold`` may open speech, one below
    ``neg_threshold`` may close it; windows in between change nothing. Speech opens
    once it has lasted ``min_speech_ms`` without a window below ``neg_threshold``;
    the start reported is the first loud window moved back by ``speech_pad_ms`` (never
    before ``start_pts``), so the first word is never cut. Speech closes after
    ``min_silence_ms`` (the hangover) below ``neg_threshold``; the end reported is the
    first quiet window moved forward by ``speech_pad_ms`` (at most the hangover).
    Events come out at most one window after the condition holds.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        neg_threshold: float = 0.35,
        min_speech_ms: float = 250.0,
        min_silence_ms: float = 300.0,
        speech_pad_ms: float = 200.0,
        sample_rate_hz: int = VAD_SAMPLE_RATE_HZ,
        window_samples: int = VAD_WINDOW_SAMPLES,
        start_pts: int = 0,
    ) -> None:
        if not 0.0 <= neg_threshold <= threshold <= 1.0:
            raise ValueError("need 0 <= neg_threshold <= threshold <= 1")
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self._window = window_samples
        self._min_speech = round(min_speech_ms * sample_rate_hz / 1000)
        self._min_silence = round(min_silence_ms * sample_rate_hz / 1000)
        self._pad = round(speech_pad_ms * sample_rate_hz / 1000)
        self._floor = start_pts
        self._speaking = False
        self._candidate: int | None = None  # first loud window of a possible onset
        self._quiet_since: int | None = None  # first quiet window while speaking
        self._last_end = start_pts

    @property
    def speaking(self) -> bool:
        """True between a ``SpeechStarted`` and its ``SpeechEnded``."""
        return self._speaking

    @property
    def quiet_since_samples(self) -> int | None:
        """While speaking: the first quiet window (under ``neg_threshold``) of the current pause.

        None when there is no pause. A pause that lasts the hangover becomes a
        ``SpeechEnded``; one broken by a window at or above ``threshold`` was a pause
        inside speech. Stages use it to start work before the end is sure. (A hint
        taken earlier, at the first window under ``threshold``, gave finals 10–20 ms
        sooner, but it can fire inside a soft last syllable, so it was dropped.)
        """
        return self._quiet_since if self._speaking else None

    def push(self, pts_samples: int, probability: float) -> list[SpeechEvent]:
        """Take the probability of the window starting at ``pts_samples``; return events."""
        end = pts_samples + self._window
        self._last_end = end
        events: list[SpeechEvent] = []
        if not self._speaking:
            if probability >= self.threshold and self._candidate is None:
                self._candidate = pts_samples
            elif probability < self.neg_threshold:
                self._candidate = None
            if self._candidate is not None and end - self._candidate >= self._min_speech:
                self._speaking = True
                self._quiet_since = None
                start = max(self._floor, self._candidate - self._pad)
                self._candidate = None
                events.append(SpeechStarted(start))
        else:
            if probability >= self.threshold:
                self._quiet_since = None
            elif probability < self.neg_threshold and self._quiet_since is None:
                self._quiet_since = pts_samples
            if self._quiet_since is not None and end - self._quiet_since >= self._min_silence:
                events.append(self._close(min(self._quiet_since + self._pad, end)))
        return events

    def push_many(self, probabilities: list[VadProbability]) -> list[SpeechEvent]:
        """``push`` each probability in order; return all events."""
        events: list[SpeechEvent] = []
        for p in probabilities:
            events.extend(self.push(p.pts_samples, p.probability))
        return events

    def flush(self) -> list[SpeechEvent]:
        """End of stream: close open speech at the end of the last window seen."""
        if not self._speaking:
            self._candidate = None
            return []
        end = self._last_end
        if self._quiet_since is not None:
            end = min(self._quiet_since + self._pad, end)
        return [self._close(end)]

    def _close(self, end_samples: int) -> SpeechEnded:
        self._speaking = False
        self._quiet_since = None
        self._candidate = None
        self._floor = end_samples
        return SpeechEnded(end_samples)
