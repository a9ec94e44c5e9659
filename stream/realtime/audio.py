"""Audio on the OpenAI-Realtime wire: the formats, base64 in and out, G.711 μ-law and A-law. Sans I/O.

Groundwork for ``WS /v1/realtime`` (issue 15). A Realtime client names its formats in
``session.update``: in the GA shape as objects (``{"type": "audio/pcm", "rate": 24000}``,
``{"type": "audio/pcmu"}``, ``{"type": "audio/pcma"}``), in the beta shape as names
(``"pcm16"``, ``"g711_ulaw"``, ``"g711_alaw"``). ``RealtimeAudioFormat`` reads either,
decodes an ``input_audio_buffer.append``'s base64 into float32 samples and encodes
float32 samples into a ``response.output_audio.delta``'s base64. PCM is 16-bit
little-endian mono at 24 kHz (the only rate the API defines); G.711 is 8 kHz (``g711``).

Everything a client can get wrong raises ``RealtimeAudioError`` with a message for its
``error`` event: an unknown format, a rate other than 24 kHz, text that is not base64,
an odd number of bytes of PCM, a chunk over ``MAX_CHUNK_S``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.errors import VoxlineError
from voxline.stream.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

__all__ = ["MAX_CHUNK_S", "RealtimeAudioError", "RealtimeAudioFormat"]

FloatAudio = npt.NDArray[np.float32]

PCM_RATE_HZ = 24000
G711_RATE_HZ = 8000
MAX_CHUNK_S = 15.0
"""The longest audio one append may carry (s); the API's own limit is 15 MiB of base64."""
_BETA_NAMES = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}


class RealtimeAudioError(VoxlineError):
    """Audio or an audio format a Realtime client sent that voxline cannot take; the message says why."""


@dataclass(frozen=True, slots=True)
class RealtimeAudioFormat:
    """One direction's audio format: ``kind`` is ``audio/pcm``, ``audio/pcmu`` or ``audio/pcma``."""

    kind: str = "audio/pcm"

    @property
    def rate_hz(self) -> int:
        """Samples per second on the wire."""
        return PCM_RATE_HZ if self.kind == "audio/pcm" else G711_RATE_HZ

    @property
    def beta_name(self) -> str:
        """The beta protocol's name for it (``pcm16``, ``g711_ulaw``, ``g711_alaw``)."""
        return next(name for name, kind in _BETA_NAMES.items() if kind == self.kind)

    @classmethod
    def from_ga(cls, value: Any) -> RealtimeAudioFormat:
        """Read the GA shape, e.g. ``{"type": "audio/pcm", "rate": 24000}``.

        Raises:
            RealtimeAudioError: not an object, an unknown type, or a PCM rate other than 24000.
        """
        if not isinstance(value, Mapping) or value.get("type") not in _BETA_NAMES.values():
            raise RealtimeAudioError(
                f"an audio format is {{'type': 'audio/pcm', 'rate': 24000}}, 'audio/pcmu' or 'audio/pcma'; got {value!r}"
            )
        kind = str(value["type"])
        rate = value.get("rate")
        if kind == "audio/pcm" and rate is not None and rate != PCM_RATE_HZ:
            raise RealtimeAudioError(f"audio/pcm is 24000 Hz; got rate {rate!r}")
        return cls(kind)

    @classmethod
    def from_beta(cls, value: Any) -> RealtimeAudioFormat:
        """Read the beta shape: ``"pcm16"``, ``"g711_ulaw"`` or ``"g711_alaw"``.

        Raises:
            RealtimeAudioError: any other value.
        """
        if not isinstance(value, str) or value not in _BETA_NAMES:
            raise RealtimeAudioError(f"an audio format is one of {sorted(_BETA_NAMES)}; got {value!r}")
        return cls(_BETA_NAMES[value])

    def as_ga(self) -> dict[str, Any]:
        """The GA shape of this format, as ``session.updated`` reports it."""
        return {"type": "audio/pcm", "rate": PCM_RATE_HZ} if self.kind == "audio/pcm" else {"type": self.kind}

    def decode(self, audio_b64: Any) -> FloatAudio:
        """Float32 samples in [-1, 1] of one append's base64 ``audio``.

        Raises:
            RealtimeAudioError: not base64 text, an odd number of PCM bytes, or over ``MAX_CHUNK_S``.
        """
        if not isinstance(audio_b64, str):
            raise RealtimeAudioError("'audio' must be base64 text")
        try:
            data = base64.b64decode(audio_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RealtimeAudioError(f"'audio' is not valid base64: {exc}") from None
        width = 2 if self.kind == "audio/pcm" else 1
        if len(data) % width:
            raise RealtimeAudioError(f"audio/pcm is 16-bit: got {len(data)} bytes, an odd number")
        if len(data) / width > MAX_CHUNK_S * self.rate_hz:
            raise RealtimeAudioError(f"one append may carry at most {MAX_CHUNK_S:g} s of audio")
        if self.kind == "audio/pcm":
            samples = np.frombuffer(data, dtype="<i2")
        elif self.kind == "audio/pcmu":
            samples = ulaw_decode(data)
        else:
            samples = alaw_decode(data)
        return (samples.astype(np.float32) / 32768.0).astype(np.float32)

    def encode(self, samples: FloatAudio) -> str:
        """The base64 of float32 ``samples`` (at ``rate_hz``) in this format."""
        pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)
        if self.kind == "audio/pcm":
            data = pcm.astype("<i2").tobytes()
        elif self.kind == "audio/pcmu":
            data = ulaw_encode(pcm)
        else:
            data = alaw_encode(pcm)
        return base64.b64encode(data).decode("ascii")
