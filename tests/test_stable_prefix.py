"""The stable-prefix policy: committed words never change; loops are cut."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voxline.pipeline.asr.stable_prefix import StablePrefix
from voxline.pipeline.frames import Word
from voxline.words import cut_repetition


def words(text: str) -> list[Word]:
    return [Word(t, i * 0.3, i * 0.3 + 0.25) for i, t in enumerate(text.split())]


def test_a_word_is_committed_once_two_hypotheses_agree_on_it() -> None:
    policy = StablePrefix()
    assert policy.update(words("the quick")) == []
    assert [w.text for w in policy.update(words("the quick brown"))] == ["the", "quick"]
    assert [w.text for w in policy.tentative] == ["brown"]


def test_agreement_ignores_case_and_punctuation() -> None:
    policy = StablePrefix()
    policy.update(words("Hello, world"))
    assert [w.text for w in policy.update(words("hello world."))] == ["hello", "world."]


def test_the_final_keeps_the_committed_words_verbatim() -> None:
    policy = StablePrefix()
    policy.update(words("we will meet"))
    policy.update(words("we will meet at"))
    committed = [w.text for w in policy.committed]
    final = policy.finish(words("the station"))
    assert [w.text for w in final][: len(committed)] == committed
    assert policy.committed == []


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=6), max_size=8))
def test_committed_words_only_ever_grow(hypotheses: list[list[str]]) -> None:
    policy = StablePrefix()
    seen: list[str] = []
    for hyp in hypotheses:
        policy.update([Word(t, 0, 0) for t in hyp])
        now = [w.text for w in policy.committed]
        assert now[: len(seen)] == seen
        seen = now


def test_a_hallucinated_loop_past_the_audio_is_cut() -> None:
    cut = cut_repetition([], words("Hello and welcome. Hello and welcome. Hello"))
    assert [w.text for w in cut] == ["Hello", "and", "welcome."]
    cut = cut_repetition("the quick brown fox".split(), words("The quick brown"))
    assert cut == []


def test_ordinary_repeated_single_words_are_kept() -> None:
    text = "I said that that is very very good"
    assert [w.text for w in cut_repetition([], words(text))] == text.split()
