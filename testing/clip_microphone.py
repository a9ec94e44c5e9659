"""A scripted microphone for ``CallClient``: queued clips, back to back, then silence. For tests and benches."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

FloatAudio = npt.NDArray[np.float32]


class ClipMicrophone:
    """A scripted microphone for a ``CallClient``: queued clips, back to back, then silence.

    ``say`` queues a 48 kHz float32 clip. Each clip's ``started_at`` / ``ended_at`` are
    the wall times (``time.monotonic()``) its first and last samples were handed to the
    track, which is when the user "said" them.
    """

    def __init__(self) -> None:
        self._clips: list[SaidClip] = []
        self._offset = 0

    def say(self, audio_48k: FloatAudio) -> SaidClip:
        """Queue ``audio_48k`` after what is already queued; the returned record fills in as it is sent."""
        clip = SaidClip(np.asarray(audio_48k, dtype=np.float32))
        self._clips.append(clip)
        return clip

    @property
    def speaking(self) -> bool:
        """True while a queued clip has samples left to send."""
        return bool(self._clips)

    def __call__(self, n_samples: int) -> FloatAudio:
        """The next ``n_samples`` (what the track sends every 20 ms)."""
        out = np.zeros(n_samples, np.float32)
        filled = 0
        now = time.monotonic()
        while filled < n_samples and self._clips:
            clip = self._clips[0]
            if clip.started_at is None:
                clip.started_at = now
            part = clip.audio[self._offset : self._offset + n_samples - filled]
            out[filled : filled + len(part)] = part
            filled += len(part)
            self._offset += len(part)
            if self._offset >= len(clip.audio):
                clip.ended_at = now
                self._clips.pop(0)
                self._offset = 0
        return out


class SaidClip:
    """One clip given to a ``ClipMicrophone`` and when it went out."""

    def __init__(self, audio: FloatAudio) -> None:
        self.audio = audio
        self.started_at: float | None = None
        self.ended_at: float | None = None
