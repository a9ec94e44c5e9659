"""Synthesized speech for tests and benchmarks (Piper, voice en_US-joe-medium).

``synthesize(text)`` returns mono float32 audio in [-1, 1] at the requested rate
(16 kHz by default, what VAD and ASR take). The voice is loaded once per process,
on first use, under a lock; later calls reuse it. Piper runs on the calling
thread: call it from a worker thread (``asyncio.to_thread``) inside a loop.

Needs the ``tts`` extra (``pip install 'voxline[tts]'``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from voxline.models.registry import ModelNotFoundError, piper_voice_path

if TYPE_CHECKING:
    from piper import PiperVoice

__all__ = ["PIPER_SAMPLE_RATE_HZ", "synthesize"]

PIPER_SAMPLE_RATE_HZ = 22050
"""Native output rate of the packaged joe-medium voice (Hz)."""

_voice: PiperVoice | None = None
_voice_lock = threading.Lock()


def _load_voice() -> PiperVoice:
    global _voice
    with _voice_lock:
        if _voice is None:
            try:
                from piper import PiperVoice
            except ImportError as exc:
                raise ModelNotFoundError(
                    "piper-tts is not installed; install it with: pip install 'voxline[tts]'"
                ) from exc
            _voice = PiperVoice.load(piper_voice_path())
        return _voice


def synthesize(
    text: str, sample_rate_hz: int = 16000, *, vary: bool = False, length_scale: float | None = None
) -> npt.NDArray[np.float32]:
    """Speak ``text`` and return mono float32 samples at ``sample_rate_hz`` (Hz).

    By default the voice's generator noise is off, so the same text always gives the
    same samples (reproducible tests and benchmarks); ``vary=True`` turns Piper's
    default noise on, for natural variation from call to call. ``length_scale`` above
    1 speaks slower, below 1 faster (Piper's own knob; None keeps the voice's).
    Leading/trailing whitespace is ignored; empty text gives an empty array.
    Several sentences are spoken one after another with Piper's own pauses.
    Thread-safe: synthesis of concurrent calls is serialised on the shared voice.

    Raises:
        ModelNotFoundError: piper-tts or the voice package is not installed.
    """
    text = text.strip()
    if not text:
        return np.zeros(0, dtype=np.float32)
    voice = _load_voice()
    from piper import SynthesisConfig  # loaded with the voice

    with _voice_lock:  # one onnxruntime session; Piper keeps per-call state on it
        config = None if vary else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        if length_scale is not None:
            config = config or SynthesisConfig()
            config.length_scale = length_scale
        chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=config)]
        native_hz = voice.config.sample_rate
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if sample_rate_hz != native_hz:
        import soxr

        audio = soxr.resample(audio, native_hz, sample_rate_hz).astype(np.float32, copy=False)
    return np.clip(audio, -1.0, 1.0)
