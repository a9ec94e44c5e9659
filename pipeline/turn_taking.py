"""End of the user's turn: VAD silence plus a reading of the words. Sans I/O.

A user turn is one or more final transcripts (the recogniser closes an utterance at
every pause). The turn ends once the user is quiet, every utterance's final is in,
and the silence has lasted long enough for what was said:

- the words read as **complete** (they end a sentence and the last word does not
  leave it hanging): ``complete_wait_ms`` after the speech ended (default 0, i.e. as
  soon as the final is in; the recogniser already waited its early-final margin);
- they read as **incomplete** (a trailing "and", "the", "um", a comma or ellipsis,
  no closing punctuation): ``incomplete_wait_ms``, so a mid-sentence pause to think
  is not taken as the end of the turn.

Whisper punctuates its finals, which is what makes the text reading cheap; the wait
for incomplete text is the fallback that always ends a turn. Speech that never gets a
final (a cough: the recogniser sends none for an utterance without words) stops
holding the turn open after ``final_timeout_ms`` of quiet.

Feed events with media times (seconds of the user's stream) and call ``poll`` with
the current media time; it returns the turn's text once, when the turn ends.
``retract`` puts an ended turn back (the user went on speaking before the agent
answered), so the next end of turn covers everything said.
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
    """How long (ms) the user must be quiet before the turn ends, by how the words read."""

    complete_wait_ms: float = 0.0
    incomplete_wait_ms: float = 900.0
    final_timeout_ms: float = 2000.0


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

    def discard_last(self, text: str) -> None:
        """Drop the most recent final if it is ``text`` (a backchannel heard over the agent)."""
        if self._parts and self._parts[-1] == text.strip():
            self._parts.pop()

    def retract(self, turn: EndOfTurn) -> None:
        """Put an ended turn's words back in front of what came since."""
        self._parts.insert(0, turn.text)

    def poll(self, now_s: float) -> EndOfTurn | None:
        """The ended turn, once, when the silence is long enough for its words; else None."""
        quiet = self._quiet_since_s
        if self._speaking or quiet is None:
            return None
        quiet_ms = (now_s - quiet) * 1000
        if self._awaiting_final and quiet_ms < self.waits.final_timeout_ms:
            return None
        if not self._parts:
            return None
        text = self.pending_text
        complete = reads_complete(text)
        wait_ms = self.waits.complete_wait_ms if complete else self.waits.incomplete_wait_ms
        if quiet_ms < wait_ms:
            return None
        self._parts.clear()
        return EndOfTurn(text, quiet, complete)
