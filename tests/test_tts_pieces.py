"""Text cut into pieces Piper runs one at a time: every word kept, in order, none too long."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxline.models.tts_pieces import MAX_PIECE_WORDS, WARM_UP_PIECE, bounded_pieces


def test_an_ordinary_reply_is_one_piece_as_written() -> None:
    assert bounded_pieces("Paris is the capital of France.  It is big!") == ["Paris is the capital of France. It is big!"]


def test_a_long_sentence_is_cut_at_its_last_pause_inside_the_limit() -> None:
    first = " ".join(f"a{i}" for i in range(14)) + ","
    second = " ".join(f"b{i}" for i in range(20)) + "."
    assert bounded_pieces(f"{first} {second}", max_words=24) == [first, second]


def test_a_long_sentence_without_a_pause_is_cut_at_the_limit() -> None:
    words = [f"w{i}" for i in range(50)]
    pieces = bounded_pieces(" ".join(words) + ".", max_words=24)
    assert [len(p.split()) for p in pieces] == [24, 24, 2]


def test_sentences_stay_together_while_they_fit() -> None:
    short = "One two three."
    assert bounded_pieces(" ".join([short] * 10), max_words=9) == [" ".join([short] * 3)] * 3 + [short]


def test_the_warm_up_piece_is_one_piece_of_the_limit() -> None:
    assert bounded_pieces(WARM_UP_PIECE) == [WARM_UP_PIECE] and len(WARM_UP_PIECE.split()) == MAX_PIECE_WORDS


def test_a_limit_below_one_word_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        bounded_pieces("hello", max_words=0)


@given(st.lists(st.sampled_from(["word", "word,", "end.", "ask?", "—", "x;"]), max_size=200), st.integers(1, 30))
def test_every_word_is_kept_in_order_and_no_piece_is_over_the_limit(words: list[str], limit: int) -> None:
    pieces = bounded_pieces(" ".join(words), max_words=limit)
    assert " ".join(pieces).split() == words
    assert all(1 <= len(p.split()) <= limit for p in pieces)
