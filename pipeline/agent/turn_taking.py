"""End of the user's turn: VAD silence, a reading of the words, and the voice. Sans I/O.

A user turn is one or more final transcripts (the recogniser closes an utterance at
every pause). Two moments matter:

- **ready**: the user is quiet and every utterance's final is in. ``poll`` returns the
  turn then, so the agent can prepare its reply (first clause generated and
  synthesized) while it waits; a reply not yet played is dropped if the user goes on.
- **due**: the silence has lasted ``wait_ms`` for what was said and how it sounded.

The wait combines two readings. The text reads **complete** when it ends a sentence
and the last word does not leave it hanging ("and", "the", "um", a comma or an
ellipsis read incomplete). Whisper punctuates the fragments of real speakers as
sentences ("Ever tried."), so the text alone cannot tell a pause between sentences
from the end of a turn; an audio end-of-turn model (Smart Turn, fed the last 8 s of
the user's voice at the pause: ``audio_verdict``) hears whether the voice finished:

| text | voice (audio model) | wait |
|---|---|---|
| complete | finished, or no model | ``complete_wait_ms`` |
| complete | not finished / not heard yet | ``unsure_wait_ms`` |
| incomplete | finished | ``unsure_wait_ms`` |
| incomplete | not finished, or no model | ``incomplete_wait_ms`` |

``complete_wait_ms`` (400 by default) outlasts the 150–350 ms pauses people leave
between sentences of one turn, measured from where the VAD turned quiet. Speech that
never gets a final (a cough) stops holding the turn open after ``final_timeout_ms``.

Feed events with media times (seconds of the user's stream) and call ``poll`` with
the current media time; ``retract`` puts a turn back (the user went on speaking
before the agent answered), so the next end of turn covers everything said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Words after which an English statement cannot end (conjunctions, articles,
# prepositions, fillers, "I"); a question mark ends a turn whatever the last word.
HANGING_WORDS = frozenset(
    """and or but so because since if when while although though than that which who
    whose where the a an my your his her its our their this these those to of in on at
    for with from by about into onto over under like as i um uh er erm hmm let's""".split()
)
_SENTENCE_END = re.compile(r"[.?!][\"')\]]*$")
_LAST_WORD = re.compile(r"([a-z']+)[^a-z']*$")


def reads_complete(text: str) -> bool:
    """True when ``text`` ends a sentence and does not end on a hanging word."""
    text = text.strip()
    if not text or text.endswith("...") or not _SENTENCE_END.search(text):
        return False
    if text.rstrip("\"')]").endswith("?"):
        return True
    match = _LAST_WORD.search(text.lower())
    return match is None or match.group(1) not in HANGING_WORDS


@dataclass(frozen=True, slots=True)
class TurnWaits:
    """How long (ms) the user must be quiet before the turn ends (see the module's table)."""

    complete_wait_ms: float = 400.0
    unsure_wait_ms: float = 800.0
    incomplete_wait_ms: float = 1200.0
    final_timeout_ms: float = 2000.0
    audio_threshold: float = 0.5
    """Audio-model probability at or above which the voice counts as finished."""


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """A finished user turn: its text and where the speech ended (media seconds)."""

    text: str
    speech_end_s: float
    complete: bool


@dataclass(slots=True)
class TurnDetector:
    """Collects final transcripts and decides when the user's turn is over."""

    waits: TurnWaits = field(default_factory=TurnWaits)
    _parts: list[str] = field(default_factory=list)
    _speaking: bool = False
    _awaiting_final: bool = False
    _quiet_since_s: float | None = None
    _speech_start_s: float = -1.0
    uses_audio_model: bool = False
    _audio_finished: bool | None = None

    @property
    def pending_text(self) -> str:
        """The words of the turn so far (finals only)."""
        return " ".join(self._parts)

    def speech_start(self, at_s: float = -1.0) -> None:
        """The user started (or went on) speaking at ``at_s``: no end of turn while they do."""
        self._speech_start_s = max(self._speech_start_s, at_s)
        self._speaking = True
        self._awaiting_final = True
        self._quiet_since_s = None
        self._audio_finished = None

    def speech_resume(self, at_s: float = -1.0) -> None:
        """A pause inside speech ended before the VAD's hangover."""
        self.speech_start(at_s)

    def speech_quiet(self, at_s: float) -> None:
        """The user went quiet at ``at_s`` (a VAD pause or stop)."""
        self._speaking = False
        if self._quiet_since_s is None:
            self._quiet_since_s = at_s

    def final(self, text: str, audio_end_s: float = float("inf")) -> None:
        """An utterance's final transcript (empty text for one with no words).

        ``audio_end_s`` is how far into the stream the recogniser had heard: a final of
        earlier speech (one sentence's final arriving while the next is spoken) adds its
        words but does not end the wait for the final of the speech still going on.
        """
        if audio_end_s > self._speech_start_s:
            self._awaiting_final = False
        if text.strip():
            self._parts.append(text.strip())

    def audio_verdict(self, probability: float) -> None:
        """The audio model's probability that the voice finished, heard at the current pause."""
        if not self._speaking:
            self._audio_finished = probability >= self.waits.audio_threshold

    def wait_ms(self, text: str) -> float:
        """The silence (ms) a turn with ``text`` needs before it is due, given the voice."""
        waits = self.waits
        complete = reads_complete(text)
        voice = self._audio_finished if self.uses_audio_model else None
        if voice is None and self.uses_audio_model:
            return waits.unsure_wait_ms if complete else waits.incomplete_wait_ms
        if voice is None:
            return waits.complete_wait_ms if complete else waits.incomplete_wait_ms
        if complete:
            return waits.complete_wait_ms if voice else waits.unsure_wait_ms
        return waits.unsure_wait_ms if voice else waits.incomplete_wait_ms

    def due(self, turn: EndOfTurn, now_s: float) -> bool:
        """True once the silence after ``turn`` has lasted its wait (the reply may play)."""
        return (now_s - turn.speech_end_s) * 1000 >= self.wait_ms(turn.text)

    def discard_last(self, text: str) -> None:
        """Drop the most recent final if it is ``text`` (a backchannel heard over the agent)."""
        if self._parts and self._parts[-1] == text.strip():
            self._parts.pop()

    def clear(self) -> None:
        """Forget the words of the turn so far (the client committed or cleared them itself)."""
        self._parts.clear()
        self._awaiting_final = False

    def retract(self, turn: EndOfTurn) -> None:
        """Put an ended turn's words back in front of what came since."""
        self._parts.insert(0, turn.text)

    def poll(self, now_s: float, *, prepare: bool = True) -> EndOfTurn | None:
        """The turn, once, when it is ready (``prepare``) or due (not ``prepare``); else None."""
        quiet = self._quiet_since_s
        if self._speaking or quiet is None:
            return None
        quiet_ms = (now_s - quiet) * 1000
        if self._awaiting_final and quiet_ms < self.waits.final_timeout_ms:
            return None
        if not self._parts:
            return None
        turn = EndOfTurn(self.pending_text, quiet, reads_complete(self.pending_text))
        if not prepare and not self.due(turn, now_s):
            return None
        self._parts.clear()
        return turn
