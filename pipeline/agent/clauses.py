"""Sans-I/O clause chunking of streamed LLM text, so speech can start before the reply ends.

``ClauseChunker`` is fed text pieces as the LLM makes them (``push``) and returns every
clause that is complete so far; ``flush`` returns the rest when the reply ends. A
clause ends:

- always at sentence punctuation (``.``, ``!``, ``?``, runs of them, optionally
  followed by closing quotes or brackets) followed by a space or the end of the reply,
  unless the word before the period is a known abbreviation (``e.g.``, ``Mr.``...) or a
  single capital initial (``J.``);
- at ``,`` ``;`` ``:`` or a dash (``—``, ``–``, or ``-`` after a space) followed by a
  space, once the clause holds at least ``first_min_words`` words (first clause of a
  reply: short, so speech starts early) or ``min_words`` (later clauses);
- at the last space within ``max_chars`` characters when no boundary came sooner.

Clauses are only cut at whitespace, so punctuation inside a number (``3.5``,
``3,000``, ``3:30``) never splits. Whitespace is collapsed to single spaces and empty
clauses are never returned, so joining a reply's clauses with single spaces gives its
text with normalized whitespace, however the text was split into pieces (the one
exception: a run of more than ``max_chars`` characters without a space is cut inside).
The clauses themselves do not depend on how the text was split either.

Not thread-safe: one chunker per reply stream, owned by one task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_ABBREVIATIONS", "ClauseChunker", "ClauseRules"]

DEFAULT_ABBREVIATIONS = frozenset(
    {
        "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "vs.", "etc.",
        "e.g.", "i.e.", "approx.", "fig.", "u.s.", "a.m.", "p.m.",
    }
)  # fmt: skip
"""Lower-cased words whose final period does not end a sentence."""

_CLOSERS = "\"')]}\u201d\u2019"
_BOUNDARY = re.compile(
    rf"(?:(?P<strong>[.!?]+)|(?P<soft>[,;:\u2013\u2014]|(?<= )-))[{re.escape(_CLOSERS)}]*(?= )"
)
_WHITESPACE = re.compile(r"\s+")
_INITIAL = re.compile(r"[A-Z]\.")
_OPENERS = "\"'([{\u201c\u2018"


@dataclass(frozen=True, slots=True)
class ClauseRules:
    """Where ``ClauseChunker`` may end a clause.

    ``first_min_words`` / ``min_words``: the fewest words a clause needs before a soft
    mark (``, ; :`` or a dash) may end it, for a reply's first clause and for later
    ones. ``first_max_words`` (0: off): a reply's first clause ends after this many
    words even without punctuation, once two more words have followed (so a short
    sentence stays whole), and speech starts before a long first sentence is complete
    (a voice agent's time to first audio; the prosody break is small).
    ``second_max_words`` (0: off) does the same for the second clause, so that its text
    and speech are ready before the short first clause has finished playing.
    ``max_chars``: the longest clause (characters); a longer run is cut at its last
    space. ``abbreviations``: lower-cased words ending in a period that do not end
    a sentence.
    """

    first_min_words: int = 3
    min_words: int = 6
    first_max_words: int = 0
    second_max_words: int = 0
    max_chars: int = 200
    abbreviations: frozenset[str] = DEFAULT_ABBREVIATIONS

    def __post_init__(self) -> None:
        if self.first_min_words < 1 or self.min_words < 1:
            raise ValueError("min words must be at least 1")
        if self.max_chars < 2:
            raise ValueError(f"max_chars must be at least 2, got {self.max_chars}")


class ClauseChunker:
    """Turns a stream of text pieces into speakable clauses (sans-I/O; see the module doc).

    ``push(text)`` returns the clauses completed by ``text`` (often none); a clause
    ending in punctuation is held until the next character shows it really ends there.
    ``flush()`` ends the reply: it returns what is left and readies the chunker for the
    next reply (whose first clause again uses ``first_min_words``). ``reset()`` drops
    the text held, for a reply that was interrupted. The text held never exceeds
    ``max_chars`` plus the last piece pushed.
    """

    def __init__(self, rules: ClauseRules | None = None) -> None:
        self.rules = rules or ClauseRules()
        self._held = ""  # normalized: single spaces, no leading space
        self._emitted = 0

    @property
    def pending_text(self) -> str:
        """Text pushed but not yet returned in a clause (whitespace normalized)."""
        return self._held.strip()

    def push(self, text: str) -> list[str]:
        """Add a piece of the reply; return the clauses it completed, in order."""
        if not text:
            return []
        self._held = _WHITESPACE.sub(" ", self._held + text).lstrip(" ")
        return self._take_clauses()

    def flush(self) -> list[str]:
        """End the reply: return every remaining clause, then start afresh."""
        self._held += " "  # the end of the reply closes a final period like a space
        clauses = self._take_clauses()
        tail = self._held.strip()
        if tail:
            clauses.append(tail)
        self.reset()
        return clauses

    def reset(self) -> None:
        """Drop the text held and start a new reply."""
        self._held = ""
        self._emitted = 0

    def _take_clauses(self) -> list[str]:
        clauses: list[str] = []
        while True:
            end = self._next_end()
            if end is None:
                return clauses
            clause, self._held = self._held[:end].strip(), self._held[end:].lstrip(" ")
            if clause:
                clauses.append(clause)
                self._emitted += 1

    def _next_end(self) -> int | None:
        """Index where the next clause ends in the held text, or None if not known yet."""
        held, max_chars = self._held, self.rules.max_chars
        min_words = self.rules.first_min_words if self._emitted == 0 else self.rules.min_words
        for match in _BOUNDARY.finditer(held):
            end = match.end()
            if end > max_chars:
                break
            if match.group("strong"):
                if not self._is_abbreviation(held[:end]):
                    return end
            elif len(held[:end].split()) >= min_words:
                return end
        most = {0: self.rules.first_max_words, 1: self.rules.second_max_words}.get(self._emitted, 0)
        if most > 0:
            spaces = [i for i, c in enumerate(held) if c == " "]
            # Two more whole words must follow, so a short sentence is not cut before its last word.
            if len(spaces) >= most + 2 and spaces[most - 1] <= max_chars:
                return spaces[most - 1]
        if len(held.rstrip(" ")) <= max_chars:
            return None
        space = held.rfind(" ", 0, max_chars + 1)
        return space if space > 0 else max_chars

    def _is_abbreviation(self, clause: str) -> bool:
        word = clause.rsplit(" ", 1)[-1].rstrip(_CLOSERS).lstrip(_OPENERS)
        if not word.endswith(".") or word.endswith(".."):
            return False
        return word.lower() in self.rules.abbreviations or bool(_INITIAL.fullmatch(word))
