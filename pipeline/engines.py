"""What the runtime needs from model engines, as protocols (concrete engines live in models/).

The pipeline never imports a concrete model: recipes pass engines in, and any object
with these methods fits (a causal fine-tuned Whisper, a CTC model, a test double).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from typing import Any, Protocol

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
        context_words: Sequence[str] = (),
        final: bool,
        deadline: float,
        session_key: Hashable | None = None,
    ) -> RecognizerResult:
        """Recognise 16 kHz mono ``audio`` continuing after ``prefix_words``.

        ``context_words`` are earlier words of the same stream (not in ``audio``): a
        hint for reading this audio as their continuation; they never come back.
        Returns the words after the prefix with times in seconds from the start of
        ``audio``. Raises ``voxline.errors.Superseded`` when a newer partial of the
        same ``session_key`` replaced this one before it ran.
        """
        ...


class ReplyStream(Protocol):
    """One streamed LLM reply: an async iterator of text pieces.

    ``aclose()`` stops generation (idempotent); ``stats`` has at least
    ``first_token_ms`` (None until the first piece) and ``completion_tokens``.
    """

    @property
    def stats(self) -> Any:
        """Figures of this reply (time to first token, token count)."""
        ...

    def __aiter__(self) -> AsyncIterator[str]:
        """Iterate the reply's text pieces in order."""
        ...

    async def aclose(self) -> None:
        """Stop the reply; pieces not yet read are dropped."""
        ...

    def needed_by(self, deadline: float) -> None:
        """A hint: the listener runs out of audio at ``deadline`` (``time.monotonic()``).

        A shared engine serves the reply whose listener runs dry first; an engine
        without a scheduler ignores it.
        """
        ...


class ChatEngine(Protocol):
    """A shared, streaming chat model (``LlamaEngine`` in-process, ``OpenAIChatEngine`` remote)."""

    async def start(self) -> None:
        """Load or connect; a second call does nothing."""
        ...

    async def close(self) -> None:
        """Release the model or connection. Idempotent."""
        ...

    def stream(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 128, temperature: float = 0.0
    ) -> ReplyStream:
        """Start a reply to OpenAI-style ``messages``; raises ``EngineError`` if not started."""
        ...


class AudioChunkStream(Protocol):
    """Streamed synthesis of one text: float32 chunks at the engine's rate; ``aclose`` stops it."""

    def __aiter__(self) -> AsyncIterator[npt.NDArray[np.float32]]:
        """Iterate the audio chunks in order."""
        ...

    async def aclose(self) -> None:
        """Stop synthesis; chunks not yet read are dropped."""
        ...


class SpeechSynthesizer(Protocol):
    """A shared, streaming text-to-speech engine (e.g. ``voxline.models.tts.PiperEngine``)."""

    @property
    def sample_rate_hz(self) -> int:
        """The rate of the audio it makes."""
        ...

    def stream(self, text: str, *, deadline: float | None = None) -> AudioChunkStream:
        """Start synthesising ``text``; chunks arrive as they are made.

        ``deadline`` (``time.monotonic()``) is when the listener runs out of audio
        without it; a shared engine serves the earliest deadline first.
        """
        ...


class ConversionStream(Protocol):
    """One session's stream through a shared voice converter (``voxline.models.vc_engine``)."""

    @property
    def sample_rate_hz(self) -> int:
        """The rate it takes and returns."""
        ...

    async def convert(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The next converted samples, as many as given, a fixed latency behind; one call at a time."""
        ...


class TurnEndModel(Protocol):
    """An audio end-of-turn model (e.g. Smart Turn): has the voice finished its turn?"""

    window_s: float
    """Seconds of the latest 16 kHz audio it listens to."""

    async def probability(self, audio: npt.NDArray[np.float32]) -> float:
        """P(the speaker has finished) for 16 kHz mono ``audio`` ending now."""
        ...
