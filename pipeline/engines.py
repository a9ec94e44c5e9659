"""What the runtime needs from model engines, as protocols (concrete engines live in models/).

The pipeline never imports a concrete model: recipes pass engines in, and any object
with these methods fits (a causal fine-tuned Whisper, a CTC model, a test double).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .frames import Word


class RecognizerResult(Protocol):
    """A recognition result: the words after the forced prefix, times relative to the audio."""

    @property
    def words(self) -> tuple[Word, ...]:
        """The recognised words in order."""
        ...


class SpeechRecognizer(Protocol):
    """A shared, batching speech recogniser (e.g. ``voxline.models.asr.WhisperEngine``)."""

    async def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        prefix_words: Sequence[str] = (),
        final: bool,
        deadline: float,
        session_key: Hashable | None = None,
    ) -> RecognizerResult:
        """Recognise 16 kHz mono ``audio`` continuing after ``prefix_words``.

        Returns the words after the prefix with times in seconds from the start of
        ``audio``. Raises ``voxline.errors.Superseded`` when a newer partial of the
        same ``session_key`` replaced this one before it ran.
        """
        ...


class SpeechProbability(Protocol):
    """A per-session streaming voice-activity detector."""

    def feed(self, audio: npt.NDArray[np.float32]) -> list[tuple[int, float]]:
        """Feed 16 kHz audio; returns (window end in samples, speech probability) per window."""
        ...
