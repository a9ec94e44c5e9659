"""What a phone line does to a recording: the 8 kHz band and G.711 companding.

Twilio and Telnyx carry a caller's voice as G.711 (μ-law or A-law) at 8000 Hz, one byte
a sample. ``telephone`` turns a 16 kHz clip into what such a call delivers: soxr's
high-quality resampler takes it to 8 kHz (everything above 4 kHz goes: the phone
band), the samples are clipped to [-1, 1], quantized to 16 bits, G.711-encoded with
voxline's own codec (``stream/g711.py``, the one the phone endpoints use) and
decoded back. The benches feed the result to a graph at 8 kHz, as a phone call does.

``to_listen_rate`` takes it back to 16 kHz with the same streaming resampler the graph's
``ResampleStage`` uses, for the decodes that take 16 kHz audio directly (the caption
bench's offline WER).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

from voxline.resampler import StreamResampler
from voxline.stream.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

FloatAudio = npt.NDArray[np.float32]

WIDE_RATE_HZ = 16000
"""The rate of the benches' recordings and of the recogniser's input (Hz)."""
PHONE_RATE_HZ = 8000
"""G.711's rate (Hz): what Twilio's and Telnyx's media streams carry."""
_INT16_FULL_SCALE = 32767
_CODECS = {"ulaw": (ulaw_encode, ulaw_decode), "alaw": (alaw_encode, alaw_decode)}


def telephone(audio_16k: npt.ArrayLike, law: Literal["ulaw", "alaw"] = "ulaw") -> FloatAudio:
    """``audio_16k`` (mono float32 at 16 kHz, full scale ±1) as a phone call delivers it.

    Returns float32 mono at ``PHONE_RATE_HZ`` (8 kHz), ``len(audio_16k) / 2`` samples
    (rounded up), aligned with the input (sample k is the input at 2k: soxr's one-shot
    resampling compensates its filter delay). Content above ~4 kHz is removed; what is
    left carries G.711's quantization noise (~38 dB below a loud tone, less at low
    levels: the companding keeps the ratio roughly constant). Samples beyond ±1 are
    clipped, as a 16-bit line would. Silence (exact zeros) stays exact zeros.
    """
    if law not in _CODECS:
        raise ValueError(f"law must be 'ulaw' or 'alaw', got {law!r}")
    encode, decode = _CODECS[law]
    wide = np.ascontiguousarray(audio_16k, dtype=np.float32).reshape(-1)
    if wide.size == 0:
        return np.zeros(0, dtype=np.float32)
    narrow = soxr.resample(wide, WIDE_RATE_HZ, PHONE_RATE_HZ, quality="HQ")
    pcm = np.round(np.clip(narrow, -1.0, 1.0) * _INT16_FULL_SCALE).astype(np.int16)
    return (decode(encode(pcm)).astype(np.float32) / 32768.0).astype(np.float32)


def to_listen_rate(audio_8k: npt.ArrayLike) -> FloatAudio:
    """8 kHz audio back at 16 kHz, through the graph's own ``StreamResampler`` (8 → 16 kHz).

    Returns ``2 × len(audio_8k)`` samples (give or take one), as the caption and agent
    graphs' resample stage would hand them to the VAD and the recogniser.
    """
    stream = StreamResampler(PHONE_RATE_HZ, WIDE_RATE_HZ)
    narrow = np.ascontiguousarray(audio_8k, dtype=np.float32).reshape(-1)
    return np.concatenate((stream.process(narrow), stream.flush())).astype(np.float32)
