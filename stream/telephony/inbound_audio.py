"""The caller's audio from a carrier's media frames, put back in order, with its timing kept. Sans I/O.

Telnyx documents that media frames may arrive out of order and carry anything from
20 ms to seconds of audio; Twilio's arrive in order over one TCP stream. Either way
``InboundAudio.add`` takes each ``MediaChunk`` as it arrives and returns the float32
8 kHz samples that may go to the recogniser now:

- frames leave in chunk-number order (``ReorderWindow``: a frame that overtook
  another waits until the gap fills or ``window`` later frames have come);
- a frame given up as lost, or a jump in the carrier's timestamps, leaves silence of
  the missing length in its place (at most ``MAX_FILL_MS``), so the voice activity
  detector and the end of turn see the caller's pauses as long as they were;
- G.711 μ-law (``PCMU``) or A-law (``PCMA``) is decoded to float32 in [-1, 1).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxline.stream.g711 import alaw_decode, ulaw_decode
from voxline.stream.telephony.media_streams import PHONE_RATE_HZ, MediaChunk
from voxline.stream.webrtc.rtp_reorder import REORDER_WINDOW_PACKETS, ReorderWindow

FloatAudio = npt.NDArray[np.float32]

MAX_FILL_MS = 2000.0
"""The longest silence put in for missing audio (ms); a longer jump (a restarted clock) is not filled."""
FIRST_CHUNK = 1
"""Both carriers number a stream's media chunks from 1."""
_JITTER_MS = 2.0  # timestamps are whole ms: differences this small are rounding, not gaps


class InboundAudio:
    """Media chunks in, in any order; the caller's 8 kHz float32 audio out, in order (see module doc)."""

    def __init__(self, encoding: str = "PCMU", window: int = REORDER_WINDOW_PACKETS) -> None:
        if encoding not in ("PCMU", "PCMA"):
            raise ValueError(f"encoding must be PCMU or PCMA, not {encoding!r}")
        self._decode = ulaw_decode if encoding == "PCMU" else alaw_decode
        self.order: ReorderWindow[MediaChunk] = ReorderWindow(window, first=FIRST_CHUNK)
        self._next_ms: float | None = None
        self.filled_ms = 0.0
        self.samples_out = 0

    def add(self, chunk: MediaChunk) -> FloatAudio:
        """Take one frame; the audio that may leave now (often empty while a gap waits)."""
        parts: list[FloatAudio] = []
        for item in self.order.add(chunk.chunk, chunk):
            if item is None:
                continue  # a lost frame: the next one's timestamp says how long it was
            if self._next_ms is not None:
                gap_ms = item.timestamp_ms - self._next_ms
                if _JITTER_MS < gap_ms <= MAX_FILL_MS:
                    parts.append(np.zeros(round(gap_ms * PHONE_RATE_HZ / 1000), dtype=np.float32))
                    self.filled_ms += gap_ms
            samples = self._decode(item.payload).astype(np.float32) / np.float32(32768.0)
            parts.append(samples)
            self._next_ms = item.timestamp_ms + len(item.payload) * 1000 / PHONE_RATE_HZ
        if not parts:
            return np.zeros(0, dtype=np.float32)
        audio = np.concatenate(parts)
        self.samples_out += len(audio)
        return audio
