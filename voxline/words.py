"""Recognised words and the text rules both the recogniser and the stream policy use.

Lives in the root package so that ``voxline.models`` (which makes words) and
``voxline.pipeline`` (which moves them) depend on it and not on each other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its media-time span (s) and the model's confidence."""

    text: str
    start_s: float
    end_s: float
    probability: float = 1.0


_NORMALIZE = re.compile(r"[^\w']+")


def normalize_word(text: str) -> str:
    """Lower-case ``text`` and strip punctuation, for comparing hypotheses."""
    return _NORMALIZE.sub("", text.lower())


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
