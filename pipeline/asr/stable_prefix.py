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

from collections.abc import Sequence
from dataclasses import dataclass, field

from voxline.words import Word, normalize_word


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
