"""The stable-prefix policy for streaming recognition (LocalAgreement-2), sans I/O.

Each partial decode of a growing utterance yields a hypothesis for the words after the
ones already committed. A word is committed once two consecutive hypotheses agree on
it (and on every word before it). Committed words never change: the recogniser is
asked to continue *from* them (a forced decoder prefix), and the final of the
utterance keeps them verbatim.

This class holds no audio and calls no model. It is fed hypotheses and answers with
the committed words and the tentative tail; the ASR stage does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .frames import Word

_NORMALIZE = re.compile(r"[^\w']+")


def normalize_word(text: str) -> str:
    """Lower-case ``text`` and strip punctuation, for comparing hypotheses."""
    return _NORMALIZE.sub("", text.lower())


@dataclass(slots=True)
class StablePrefix:
    """Committed words of one utterance plus the last tentative tail.

    Times of words are media seconds of the stream. ``committed`` only grows until
    ``reset``; ``tentative`` is replaced by every ``update``.
    """

    committed: list[Word] = field(default_factory=list)
    tentative: list[Word] = field(default_factory=list)
    min_probability: float = 0.6
    min_tail_s: float = 1.0
    _previous: list[str] = field(default_factory=list)

    def update(self, continuation: Sequence[Word], audio_end_s: float | None = None) -> list[Word]:
        """Take a new hypothesis for the words after ``committed``; return newly committed words.

        The longest common prefix (by normalized text) of this continuation and the
        previous one is committed, using this continuation's timings, but it stops
        early at a word the model is unsure of (probability under ``min_probability``)
        or, when ``audio_end_s`` is given, at a word ending within ``min_tail_s`` of the
        end of the audio heard: both are where streaming hypotheses still flip
        ("the water" that becomes "the weather" once the next word is heard). A wrong
        commit is forever, since committed words are forced on the decoder.
        """
        current = [normalize_word(w.text) for w in continuation]
        agreed = 0
        for previous_word, word, heard in zip(self._previous, current, continuation, strict=False):
            if not word or previous_word != word or heard.probability < self.min_probability:
                break
            if audio_end_s is not None and heard.end_s > audio_end_s - self.min_tail_s:
                break
            agreed += 1
        newly = list(continuation[:agreed])
        self.committed.extend(newly)
        self.tentative = list(continuation[agreed:])
        self._previous = current[agreed:]
        return newly

    def finish(self, continuation: Sequence[Word]) -> list[Word]:
        """Close the utterance with the final continuation; returns all its words."""
        words = [*self.committed, *continuation]
        self.reset()
        return words

    def reset(self) -> None:
        """Forget everything (a new utterance begins)."""
        self.committed.clear()
        self.tentative.clear()
        self._previous.clear()


def cut_repetition(prefix: Sequence[str], continuation: Sequence[Word], min_ngram: int = 2) -> list[Word]:
    """Drop a hallucinated loop from ``continuation`` (words after ``prefix``).

    Small Whisper models, asked to continue past the end of what they heard, often
    repeat the last phrase ("the quick brown fox. the quick brown fox"). An immediate
    repeat of ``min_ngram`` or more words (a tandem repeat) is cut at the start of the
    second copy when that copy begins inside the continuation. Real speech rarely
    repeats a whole phrase back to back; single-word repeats ("very very") are kept.
    """
    words = [normalize_word(w) for w in prefix] + [normalize_word(w.text) for w in continuation]
    first_new = len(prefix)
    for start in range(first_new, len(words)):
        for n in range(min_ngram, start + 1):
            if start + n > len(words) + n // 2:
                break
            earlier = words[start - n : start]
            later = words[start : start + n]
            # A loop cut short at the end of the window still counts if it copies
            # at least min_ngram words of the earlier phrase.
            if len(later) >= min_ngram and earlier[: len(later)] == later and all(earlier):
                return list(continuation[: start - first_new])
    return list(continuation)
