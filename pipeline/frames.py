"""Frames: the immutable records that flow along a graph's edges.

Data frames (audio, transcripts) queue in order. Control frames mark events in the
stream (speech start and stop, end of stream) and keep their place among the data,
because their meaning depends on it; only ``FLUSH`` overtakes queued data on an edge.
Barge-in needs no frame of its own: the agent hears the user's speech start in the
VAD's ``SPEECH_START`` and stops its own playout (see ``pipeline.agent``).

Units are in the names: ``pts_samples`` is a position in samples at the frame's own
``sample_rate_hz``; ``*_s`` are seconds of media time from the start of the stream;
``capture_time`` is ``time.monotonic()`` seconds when the audio entered the process.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from voxline.words import Word

FloatAudio = npt.NDArray[np.float32]

__all__ = [
    "AudioFrame", "ControlFrame", "ControlKind", "ErrorFrame", "Frame", "TranscriptFrame", "Word",
]


@dataclass(frozen=True, slots=True)
class Frame:
    """Base of every frame that flows along an edge."""


@dataclass(frozen=True, slots=True)
class AudioFrame(Frame):
    """A chunk of mono float32 audio in [-1, 1].

    ``pts_samples`` is the index of the first sample in the stream, at ``sample_rate_hz``.
    ``capture_time`` is the monotonic time (s) the chunk arrived, for latency figures.
    """

    samples: FloatAudio
    sample_rate_hz: int
    pts_samples: int
    capture_time: float = 0.0

    @property
    def duration_s(self) -> float:
        """Length of the chunk in seconds."""
        return len(self.samples) / self.sample_rate_hz

    @property
    def start_s(self) -> float:
        """Media time of the first sample, in seconds."""
        return self.pts_samples / self.sample_rate_hz

    @property
    def end_s(self) -> float:
        """Media time just after the last sample, in seconds."""
        return (self.pts_samples + len(self.samples)) / self.sample_rate_hz


@dataclass(frozen=True, slots=True)
class TranscriptFrame(Frame):
    """A partial or final hypothesis for one utterance.

    A partial's ``committed`` words are a stable prefix: later partials and the final
    of the same ``utterance`` start with exactly these words. ``words`` holds the whole
    hypothesis (committed + tentative). ``audio_end_s`` is how far into the stream the
    recogniser had heard when it made this hypothesis.
    """

    utterance: int
    is_final: bool
    words: tuple[Word, ...]
    committed: int
    audio_end_s: float
    made_time: float = 0.0

    @property
    def text(self) -> str:
        """The hypothesis as one string, words joined by single spaces."""
        return " ".join(w.text for w in self.words)

    @property
    def start_s(self) -> float:
        """Media time of the first word, or of the audio end when there are none."""
        return self.words[0].start_s if self.words else self.audio_end_s

    @property
    def end_s(self) -> float:
        """Media time of the end of the last word, or the audio end when there are none."""
        return self.words[-1].end_s if self.words else self.audio_end_s


class ControlKind(enum.Enum):
    """What a control frame asks of the stages that see it."""

    SPEECH_START = "speech_start"
    SPEECH_PAUSE = "speech_pause"
    SPEECH_RESUME = "speech_resume"
    SPEECH_STOP = "speech_stop"
    FLUSH = "flush"
    END_OF_STREAM = "end_of_stream"


@dataclass(frozen=True, slots=True)
class ControlFrame(Frame):
    """A control signal, in order with the data around it (``FLUSH`` overtakes it).

    ``media_time_s`` is the stream position the signal refers to (e.g. where speech
    stopped), or -1 when it refers to none.
    """

    kind: ControlKind
    media_time_s: float = -1.0


@dataclass(frozen=True, slots=True)
class ErrorFrame(Frame):
    """A stage failed; carries what the client is told."""

    code: str
    message: str
    stage: str = ""
    extra: dict[str, str] = field(default_factory=dict)
