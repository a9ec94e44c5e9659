"""ClauseChunker: streamed LLM text becomes speakable clauses (sans-I/O, no models)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxline.pipeline.agent.clauses import ClauseChunker, ClauseRules


def stream(pieces: list[str], chunker: ClauseChunker | None = None) -> list[list[str]]:
    """What each push returned, then what flush returned, as a list per call."""
    chunker = chunker or ClauseChunker()
    return [chunker.push(piece) for piece in pieces] + [chunker.flush()]


def llm_tokens(text: str) -> list[str]:
    """Split text roughly as an LLM tokenizer does: words with their leading space, marks."""
    return re.findall(r" ?\w+|[^\w\s]|\s+", text)


def test_a_streamed_reply_comes_out_clause_by_clause() -> None:
    reply = (
        "Sure, I can help with that. The store opens at nine, and it closes late on "
        "weekdays; weekends are shorter. Do you need directions? Great!"
    )
    clauses = [c for out in stream(llm_tokens(reply)) for c in out]
    assert clauses == [
        "Sure, I can help with that.",
        "The store opens at nine, and it closes late on weekdays;",
        "weekends are shorter.",
        "Do you need directions?",
        "Great!",
    ]


def test_the_first_clause_is_ready_at_the_first_comma_once_it_has_three_words() -> None:
    chunker = ClauseChunker()
    outputs = [(piece, chunker.push(piece)) for piece in llm_tokens("Well, I think so, yes")]
    ready = [(piece, out) for piece, out in outputs if out]
    # "Well," alone is too short; "Well, I think so," is known complete at the next space.
    assert ready == [(" yes", ["Well, I think so,"])]
    assert chunker.flush() == ["yes"]


def test_later_clauses_need_six_words_before_a_comma_ends_them() -> None:
    text = "Okay then, sure. One two three, four five six seven, eight."
    clauses = [c for out in stream(llm_tokens(text)) for c in out]
    assert clauses == ["Okay then, sure.", "One two three, four five six seven,", "eight."]


@pytest.mark.parametrize(
    "text",
    [
        "It costs 3.5 dollars.",
        "We sold 3,000 units.",
        "Meet me at 3:30 today.",
        "Dr. Smith will see you.",
        "Bring fruit, e.g. apples.",
        "Ask Mr. Jones now.",
        "J. R. Tolkien wrote it.",
    ],
)
def test_numbers_and_abbreviations_do_not_split_a_clause(text: str) -> None:
    for pieces in (llm_tokens(text), list(text), [text]):
        assert [c for out in stream(pieces) for c in out] == [text]


def test_a_period_at_the_end_of_a_piece_waits_for_the_next_character() -> None:
    chunker = ClauseChunker()
    assert chunker.push("It costs 3.") == []
    assert chunker.push("5 dollars. And") == ["It costs 3.5 dollars."]
    assert chunker.flush() == ["And"]


def test_flush_returns_the_unfinished_tail_and_starts_a_new_reply() -> None:
    chunker = ClauseChunker()
    assert chunker.push("Hello there. And then") == ["Hello there."]
    assert chunker.pending_text == "And then"
    assert chunker.flush() == ["And then"]
    assert chunker.flush() == []
    # The next reply's first clause uses the short minimum again.
    assert chunker.push("One two three, four ") == ["One two three,"]


def test_a_clause_longer_than_max_chars_is_cut_at_its_last_space() -> None:
    chunker = ClauseChunker(ClauseRules(max_chars=20))
    out = chunker.push("alpha beta gamma delta epsilon zeta eta theta")
    assert out == ["alpha beta gamma", "delta epsilon zeta"]
    assert chunker.flush() == ["eta theta"]


def test_whitespace_is_normalized_and_empty_clauses_never_come_out() -> None:
    pieces = ["  \n", "Hi", " . ", "\t", "  Yes!", "  ", "\n\n", "  ok ,  fine  ", " "]
    clauses = [c for out in stream(pieces) for c in out]
    assert clauses == ["Hi .", "Yes!", "ok , fine"]


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        ClauseRules(min_words=0)
    with pytest.raises(ValueError):
        ClauseRules(max_chars=1)


_WORDS = st.text(alphabet="abcXYZ019", min_size=1, max_size=12)
_MARKS = st.sampled_from(["", "", "", ".", ",", "!", "?", ";", ":", " -", " —", "...", '."'])
_SPACES = st.sampled_from([" ", " ", "  ", "\n", " \t"])
_ABBREVS = st.sampled_from(["e.g.", "Dr.", "Mr.", "3.5", "3,000", "J."])


@st.composite
def replies_split_anyhow(draw: st.DrawFn) -> tuple[str, list[str]]:
    parts = draw(
        st.lists(st.tuples(st.one_of(_WORDS, _ABBREVS), _MARKS, _SPACES), min_size=0, max_size=60)
    )
    text = draw(_SPACES) + "".join(w + m + s for w, m, s in parts)
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=len(text) + 1)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(replies_split_anyhow(), st.sampled_from([30, 80, 200]))
def test_clauses_rejoin_to_the_text_however_it_was_split(
    case: tuple[str, list[str]], max_chars: int
) -> None:
    text, pieces = case
    rules = ClauseRules(max_chars=max_chars)
    clauses = [c for out in stream(pieces, ClauseChunker(rules)) for c in out]
    assert " ".join(clauses) == " ".join(text.split())
    assert all(
        clause and clause == clause.strip() and len(clause) <= max_chars for clause in clauses
    )
    whole = [c for out in stream([text], ClauseChunker(rules)) for c in out]
    assert clauses == whole


def test_first_clause_cut_after_first_max_words_without_punctuation() -> None:
    chunker = ClauseChunker(ClauseRules(first_max_words=4))
    clauses = []
    for piece in "The story of a brave knight is a classic tale. It ends well.".split(" "):
        clauses += chunker.push(piece + " ")
    clauses += chunker.flush()
    assert clauses == ["The story of a", "brave knight is a classic tale.", "It ends well."]


def test_first_max_words_waits_for_two_more_whole_words() -> None:
    chunker = ClauseChunker(ClauseRules(first_max_words=2))
    assert chunker.push("Hello wor") == []
    assert chunker.push("ld again and") == []
    assert chunker.push(" again") == ["Hello world"]


def test_first_max_words_keeps_a_short_sentence_whole() -> None:
    chunker = ClauseChunker(ClauseRules(first_max_words=4))
    assert chunker.push("It is ten past five. ") == ["It is ten past five."]


def test_second_clause_is_cut_after_second_max_words_and_later_ones_are_not() -> None:
    chunker = ClauseChunker(ClauseRules(first_max_words=2, second_max_words=3))
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen."
    clauses = [c for word in text.split() for c in chunker.push(word + " ")] + chunker.flush()
    assert clauses == ["one two", "three four five", "six seven eight nine ten eleven twelve thirteen fourteen."]
