"""G.711 μ-law and A-law, both ways, by the ITU-T tables (the classic ``g711.c``). Sans I/O.

One byte a sample at 8 kHz: the Realtime wire's ``audio/pcmu`` / ``audio/pcma`` and every
carrier's phone audio.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _ulaw_to_linear(byte: int) -> int:
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return _ULAW_BIAS - t if u & 0x80 else t - _ULAW_BIAS


def _alaw_to_linear(byte: int) -> int:
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    if segment == 0:
        t += 8
    else:
        t = (t + 0x108) << (segment - 1) if segment > 1 else t + 0x108
    return t if a & 0x80 else -t


_ULAW_TABLE = np.array([_ulaw_to_linear(b) for b in range(256)], dtype=np.int16)
_ALAW_TABLE = np.array([_alaw_to_linear(b) for b in range(256)], dtype=np.int16)


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """16-bit samples of G.711 μ-law bytes."""
    return _ULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """16-bit samples of G.711 A-law bytes."""
    return _ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """G.711 μ-law bytes of 16-bit samples."""
    pcm = np.asarray(samples, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude)
    value = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    value = np.where(segment >= 8, 0x7F, value)
    return ((value ^ mask) & 0xFF).astype(np.uint8).tobytes()


def alaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """G.711 A-law bytes of 16-bit samples."""
    pcm = np.asarray(samples, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude)
    low = np.where(segment < 2, magnitude >> 1, magnitude >> np.maximum(segment, 1)) & 0x0F
    value = np.where(segment >= 8, 0x7F, (segment << 4) | low)
    return ((value ^ mask) & 0xFF).astype(np.uint8).tobytes()
