"""End of turn from the audio: Smart Turn v3.2 (ONNX, BSD-2) on onnxruntime.

``SmartTurnModel.probability(audio)`` answers "has the speaker finished their turn?"
from how the last 8 s of 16 kHz speech sounds (intonation, a trailing "and...", a
word cut off), not from the words. Call it when the VAD reports a pause; pipecat
calls a turn complete above 0.5.

The model's input is what pipecat 1.14 (``LocalSmartTurnAnalyzerV3``) feeds it, and
so what it was trained on (transformers' ``WhisperFeatureExtractor(chunk_length=8)``
with ``do_normalize=True``):

1. the last 8 s (128,000 samples), zeros *in front* when there is less;
2. the whole window, zeros included, scaled to zero mean and unit variance;
3. Whisper's log-mel: periodic Hann, n_fft 400, hop 160, centred (reflect) frames,
   Slaney 80-band filterbank, log10, floor at max - 8, (x + 4) / 4, the last of the
   801 frames dropped: 80 × 800 float32.

Step 3 reproduces transformers' numpy path rounding for rounding (FFT in float64
stored as complex64, power and mel projection in float64, float32 from the log on),
with faster-whisper's float64 Slaney filterbank (a voxline dependency already):
on Piper speech and synthetic signals the features equal transformers 5.2's bit for
bit. That matters more than it seems: the model is int8-quantized and its output moves
in steps, so features 1e-5 off (faster-whisper's own float32 ``FeatureExtractor``) moved
the probability by up to 0.007 on Piper speech and 0.07 on synthetic signals, and even
pipecat's vendored copy (1.2e-7 off) by up to 0.06 on the synthetic ones.

The ONNX graph ends in a sigmoid: its output (named ``logits``) is already P(complete).

Cost on one core (``bench/turn_model.py``, 2-core dev machine under load): 60-76 ms
a call p50, of which the features are 6 ms (8 %); the rest is the model. The cost
does not depend on the audio's length (the model always hears 8 s). The file ships
inside the ``pipecat-ai`` wheel; it is located without importing pipecat.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from voxline.errors import EngineError
from voxline.models.registry import ModelNotFoundError, smart_turn_onnx_path

__all__ = ["SmartTurnEngine", "SmartTurnModel", "smart_turn_onnx_path"]


_NORM_EPS = 1e-7  # transformers' zero_mean_unit_var_norm
_N_FFT = 400
_HOP_SAMPLES = 160
_N_MELS = 80
_N_FRAMES = 800
_MEL_FLOOR = 1e-10
_LOG_RANGE = 8.0  # log10 units kept below the loudest bin

FloatArray = npt.NDArray[np.float32]



class SmartTurnModel:
    """The Smart Turn v3.2 session shared by every stream of the process.

    Stateless: each call scores one window on its own. ``probability`` and
    ``log_mel`` may be called from any thread at once (onnxruntime's ``run`` is
    thread-safe; features are computed from the arguments alone). They block
    for tens of milliseconds: call them from an engine's worker thread, never on
    the event loop. One intra-op and one inter-op thread, so sessions share cores
    fairly instead of fighting over a thread pool.
    """

    SAMPLE_RATE_HZ: ClassVar[int] = 16000
    """The only rate accepted (Hz); resample before calling."""
    WINDOW_S: ClassVar[float] = 8.0
    """Seconds of audio the model hears; earlier audio is ignored."""
    WINDOW_SAMPLES: ClassVar[int] = 128000
    """``WINDOW_S`` at ``SAMPLE_RATE_HZ``."""

    _shared: ClassVar[SmartTurnModel | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, onnx_path: str | None = None) -> None:
        """Load the model from ``onnx_path`` (default: the one in the pipecat-ai wheel).

        Raises:
            ModelNotFoundError: no path given and pipecat-ai is missing, or the given
                path is not a file.
            EngineError: onnxruntime cannot load the file.
        """
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        path = onnx_path or smart_turn_onnx_path()
        if not Path(path).is_file():
            raise ModelNotFoundError(f"Smart Turn model file {path} does not exist")
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = onnxruntime.InferenceSession(
                path, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineError(f"cannot load Smart Turn from {path}: {exc}") from exc
        self._input_name = self._session.get_inputs()[0].name
        self._mel_filters: npt.NDArray[np.float64] = np.asarray(
            FeatureExtractor.get_mel_filters(self.SAMPLE_RATE_HZ, _N_FFT, n_mels=_N_MELS),
            dtype=np.float64,
        )  # (80, 201)
        self._hann = np.hanning(_N_FFT + 1)[:-1]  # periodic, float64

    @classmethod
    def shared(cls) -> SmartTurnModel:
        """The process-wide instance, created on first use (thread-safe)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def window(self, audio: FloatArray) -> FloatArray:
        """The 128,000 samples the model hears: the last 8 s, zero-padded in front.

        Raises:
            ValueError: ``audio`` is not one-dimensional.
        """
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"Smart Turn takes mono audio (1-D), got shape {samples.shape}")
        n = self.WINDOW_SAMPLES
        if len(samples) >= n:
            return samples[-n:]
        out = np.zeros(n, dtype=np.float32)
        if len(samples):
            out[-len(samples) :] = samples
        return out

    def log_mel(self, audio: FloatArray) -> FloatArray:
        """The model's input for ``audio`` (16 kHz mono, ends now): float32 of shape (80, 800).

        Raises:
            ValueError: ``audio`` is not one-dimensional.
        """
        x = self.window(audio)
        # Normalized over the padded window, zeros included, as pipecat feeds it.
        x = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)
        padded = np.pad(x, _N_FFT // 2, mode="reflect").astype(np.float64)
        frames = sliding_window_view(padded, _N_FFT)[::_HOP_SAMPLES][:_N_FRAMES]
        # The dtypes follow transformers step by step; see the module docstring.
        spectrum = np.fft.rfft(frames * self._hann, axis=-1).astype(np.complex64)
        power = np.abs(spectrum, dtype=np.float64) ** 2
        mel = np.maximum(_MEL_FLOOR, self._mel_filters @ power.T)
        log_mel = np.log10(mel).astype(np.float32)
        log_mel = np.maximum(log_mel, log_mel.max() - _LOG_RANGE)
        return (log_mel + 4.0) / 4.0

    def probability(self, audio: FloatArray) -> float:
        """P(turn complete) in [0, 1] for the last 8 s of 16 kHz float32 mono audio ending now.

        Shorter audio is zero-padded in front; longer audio is cut to its last 8 s.

        Raises:
            ValueError: ``audio`` is not one-dimensional.
            EngineError: onnxruntime failed.
        """
        features = self.log_mel(audio)
        try:
            (out,) = self._session.run(None, {self._input_name: features[np.newaxis]})
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineError(f"Smart Turn inference failed: {exc}") from exc
        return float(np.asarray(out).reshape(-1)[0])


class SmartTurnEngine:
    """``SmartTurnModel.shared()`` for the event loop: ``await probability(audio)`` runs the
    model on a worker thread, at most ``max_concurrent`` calls at once across sessions
    (the rest wait their turn), so a burst of pauses never takes more than its cores."""

    window_s = SmartTurnModel.WINDOW_S

    def __init__(self, model: SmartTurnModel | None = None, max_concurrent: int = 2) -> None:
        self.model = model or SmartTurnModel.shared()
        self._slots = asyncio.Semaphore(max_concurrent)

    async def probability(self, audio: FloatArray) -> float:
        """P(the speaker finished) for the latest 16 kHz ``audio`` (see ``SmartTurnModel``)."""
        async with self._slots:
            return await asyncio.to_thread(self.model.probability, audio)
