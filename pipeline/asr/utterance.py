"""The ASR stage's per-utterance state: audio buffer, stable prefix, hypotheses.

Plain data with a little arithmetic; the stage (``pipeline.stages.asr``) decides when
to decode and what to emit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..frames import Word
from .stable_prefix import StablePrefix

ASR_RATE_HZ = 16000


@dataclass(frozen=True, slots=True)
class Continuation:
    """Words heard after an utterance's committed prefix, at a point in its audio.

    Kept for a partial (``Utterance.last_partial``) and for a speculative final
    decoded at a pause (``Utterance.speculative``); valid as the utterance's final
    while ``epoch`` (bumped when speech resumes) and the committed count still hold.
    """

    epoch: int
    committed: int
    upto_samples: int
    continuation: list[Word]


@dataclass(slots=True)
class Utterance:
    """One utterance's audio buffer and recognition state (owned by the ASR stage).

    Sample positions are counted from the utterance start; ``window`` returns the
    audio from ``trim_samples`` on, and ``cut_before`` moves the window start and
    releases the audio before it.
    """

    index: int
    start_s: float
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    trim_samples: int = 0  # where the current window starts, from the utterance start
    dropped_samples: int = 0  # audio released from the front of the buffer
    stable: StablePrefix = field(default_factory=StablePrefix)
    partials_sent: int = 0
    last_text: str = ""
    paused_at_s: float | None = None
    epoch: int = 0
    speculative: Continuation | None = None
    last_partial: Continuation | None = None

    def append(self, audio: np.ndarray) -> None:
        """Add audio at the end."""
        self.chunks.append(audio)
        self.samples += len(audio)

    def window(self, upto_samples: int) -> np.ndarray:
        """The audio from the window start up to ``upto_samples``."""
        if not self.chunks:
            return np.zeros(0, np.float32)
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0][self.trim_samples - self.dropped_samples : upto_samples - self.dropped_samples]

    def cut_before(self, samples: int) -> None:
        """Start the window at ``samples`` (from the utterance start) and free the audio before it."""
        self.window(self.samples)  # joins the chunks
        if self.chunks:
            self.chunks = [self.chunks[0][samples - self.dropped_samples :].copy()]
        self.trim_samples = self.dropped_samples = samples

    @property
    def window_start_s(self) -> float:
        """Stream time (s) of the window's first sample."""
        return self.start_s + self.trim_samples / ASR_RATE_HZ
