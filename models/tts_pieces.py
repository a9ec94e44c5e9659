"""Text cut into pieces Piper synthesizes one at a time, none longer than ``MAX_PIECE_WORDS``.

Piper's memory during a run grows with its input (one 80-word sentence needed ~390 MB),
and the engine runs its voice without a memory arena, so what a run took is freed after
it. A sentence over ``MAX_PIECE_WORDS`` is therefore cut at its last comma, semicolon,
colon or dash inside the limit (if that leaves at least a third of it), else at the
limit, which bounds what any one run takes. Shorter sentences are untouched and stay
together, so ordinary replies sound as before. The engine synthesizes a piece of the
limit's length in long words when it starts (``WARM_UP_PIECE``), so onnxruntime's first
run is over before the first session.
"""

from __future__ import annotations

import re

MAX_PIECE_WORDS = 24
"""Longest piece of text one synthesis runs on (~8 s of speech)."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PAUSE = re.compile(r"[,;:\u2013\u2014]$|^[-\u2013\u2014]+$")
_LONG_WORDS = ("internationally", "extraordinary", "responsibilities", "characteristically", "unquestionably")
WARM_UP_PIECE = " ".join(_LONG_WORDS[i % len(_LONG_WORDS)] for i in range(MAX_PIECE_WORDS)) + "."
"""A piece of the limit's length in long words: what the engine synthesizes when it starts."""


def bounded_pieces(text: str, max_words: int = MAX_PIECE_WORDS) -> list[str]:
    """``text`` as pieces of at most ``max_words`` words each, in order, every word kept once."""
    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    pieces: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        words = sentence.split()
        if not words:
            continue
        if len(current) + len(words) <= max_words:
            current += words
            continue
        if current:
            pieces.append(" ".join(current))
            current = []
        while len(words) > max_words:
            cut = _cut_at(words, max_words)
            pieces.append(" ".join(words[:cut]))
            words = words[cut:]
        current = words
    if current:
        pieces.append(" ".join(current))
    return pieces


def _cut_at(words: list[str], max_words: int) -> int:
    for i in range(max_words, max(1, max_words // 3) - 1, -1):
        if _PAUSE.search(words[i - 1]):
            return i
    return max_words
