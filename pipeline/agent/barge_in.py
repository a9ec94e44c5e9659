"""Barge-in: what to do when the user speaks while the agent talks. Sans I/O.

Three outcomes, decided in two steps:

1. The user has spoken over the agent for ``min_speech_ms`` (shorter sounds, clicks,
   are ignored): **pause** the agent's audio at once.
2. Then the user's words decide:
   - no words at all (a cough, a door) or only backchannels ("uh-huh", "yeah",
     "okay", "mm-hmm", "right"; configurable): **resume** where it paused;
   - the agent's own words (``is_echo``: its voice came back through the user's
     speaker louder than the echo canceller removes): **resume** too;
   - anything else: **interrupt** — cancel the reply, flush its audio, keep in the
     history only what was heard.

The decision is taken as early as it is safe: a partial transcript of at least
``min_partial_words`` words that are not all backchannels interrupts at once (shorter
partials of short sounds are too often mis-heard; their final decides); a pause of the user's speech with only
backchannels (or nothing) heard resumes; speech that goes on for ``max_backchannel_ms``
is no backchannel, whatever the recogniser has said so far (unless all it said was
the agent's own words).

Feed it events with media times in seconds; each call returns the action to take now
(or ``None``). It holds no audio and no clock of its own.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_BACKCHANNELS = (
    "uh-huh", "uh huh", "mm-hmm", "mm hmm", "mhm", "hmm", "mm", "yeah", "yes", "yep",
    "okay", "ok", "right", "sure", "i see", "got it", "alright", "all right",
    "uh", "um", "oh", "ah", "mm-hm",
)
_WORD = re.compile(r"[a-z']+(?:-[a-z']+)*")


class BargeInAction(enum.Enum):
    """What the agent's playback must do now."""

    PAUSE = "pause"
    RESUME = "resume"
    INTERRUPT = "interrupt"


@dataclass(frozen=True, slots=True)
class BargeInSettings:
    """Thresholds (ms), the partial length that may interrupt, the backchannel phrases (lower case)."""

    min_speech_ms: float = 150.0
    max_backchannel_ms: float = 1500.0
    min_partial_words: int = 3
    backchannels: tuple[str, ...] = DEFAULT_BACKCHANNELS


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


ECHO_SHARE = 0.7
"""The share of a transcript's words the agent said just before that makes it echo."""


def is_echo(user_text: str, agent_words: Iterable[str]) -> bool:
    """True when ``user_text`` is mostly words the agent just played (``agent_words``).

    At least ``ECHO_SHARE`` of its words, and at least one, must be among them: a user
    who takes up one of the agent's words in a sentence of their own is not echo.
    """
    words = _words(user_text)
    if not words:
        return False
    own = {w for text in agent_words for w in _words(text)}
    return sum(w in own for w in words) >= max(1.0, ECHO_SHARE * len(words))


@dataclass(slots=True)
class BargeInPolicy:
    """Turns user speech events during agent playback into pause/resume/interrupt."""

    settings: BargeInSettings = field(default_factory=BargeInSettings)
    _agent_speaking: bool = False
    _speech_start_s: float | None = None
    _paused: bool = False
    _heard_words: bool = False
    _echo_only: bool = False  # every transcript of this pause so far was the agent's own words
    _phrases: frozenset[tuple[str, ...]] = frozenset()

    def __post_init__(self) -> None:
        self._phrases = frozenset(tuple(_words(p)) for p in self.settings.backchannels)

    @property
    def paused(self) -> bool:
        """True while the agent's audio is held, waiting for the user's words to decide."""
        return self._paused

    def is_backchannel(self, text: str) -> bool:
        """True when ``text`` is nothing but backchannel phrases (or empty)."""
        words = _words(text)
        i = 0
        while i < len(words):
            for n in (3, 2, 1):
                if tuple(words[i : i + n]) in self._phrases:
                    i += n
                    break
            else:
                return False
        return True

    def agent_speaking(self, speaking: bool) -> None:
        """The agent's playback started (True) or ended on its own (False)."""
        self._agent_speaking = speaking
        if not speaking and not self._paused:
            self._speech_start_s = None

    def user_speech_start(self, at_s: float) -> None:
        """The VAD heard the user start speaking at ``at_s``."""
        if self._speech_start_s is None:
            self._speech_start_s = at_s

    def user_audio(self, now_s: float) -> BargeInAction | None:
        """Time passes in the user's stream (call per audio frame while the user speaks)."""
        start = self._speech_start_s
        if start is None:
            return None
        spoken_ms = (now_s - start) * 1000
        if self._agent_speaking and not self._paused and spoken_ms >= self.settings.min_speech_ms:
            self._paused = True
            return BargeInAction.PAUSE
        if self._paused and spoken_ms >= self.settings.max_backchannel_ms and not self._echo_only:
            return self._decide(interrupt=True)
        return None

    def user_transcript(self, text: str, *, final: bool, echo: bool = False) -> BargeInAction | None:
        """A partial or final transcript of what the user is saying.

        ``echo``: the words are the agent's own (``is_echo``); they resume it, at the final.
        """
        if not self._paused:
            if final:
                self._speech_start_s = None
            return None
        if echo:
            self._echo_only = not self._heard_words
            return self._decide(interrupt=False) if final else None
        self._echo_only = False
        if not self.is_backchannel(text):
            # A partial of a short sound is often mis-heard ("Right." as "write write"):
            # it interrupts only with a few words; the final decides otherwise.
            if final or len(_words(text)) >= self.settings.min_partial_words:
                return self._decide(interrupt=True)
            return None
        self._heard_words = self._heard_words or bool(_words(text))
        return self._decide(interrupt=False) if final else None

    def user_quiet(self) -> None:
        """The user paused (maybe only between words): stop timing this stretch of speech.

        No decision is taken: the transcript, or ``user_speech_end`` once the pause has
        lasted, decides.
        """
        self._speech_start_s = None

    def user_speech_end(self) -> BargeInAction | None:
        """The VAD says the user stopped speaking.

        With no words recognised at all (a cough, a door) the agent resumes now; with
        backchannel words so far, the final transcript (``user_transcript``) decides.
        """
        self._speech_start_s = None
        if self._paused and not self._heard_words:
            return self._decide(interrupt=False)
        return None

    def give_up(self) -> BargeInAction | None:
        """The user went quiet and no final came to decide: resume (None if not paused)."""
        return self._decide(interrupt=False) if self._paused else None

    def _decide(self, *, interrupt: bool) -> BargeInAction:
        self._paused = False
        self._heard_words = False
        self._echo_only = False
        self._speech_start_s = None
        if interrupt:
            self._agent_speaking = False
            return BargeInAction.INTERRUPT
        return BargeInAction.RESUME


def backchannel_phrases(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The default backchannel phrases plus ``extra`` (for configuration)."""
    return (*DEFAULT_BACKCHANNELS, *extra)
