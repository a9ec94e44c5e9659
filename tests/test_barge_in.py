"""Barge-in decisions: pause fast, resume after a backchannel or a cough, interrupt on words."""

from __future__ import annotations

import pytest

from voxline.pipeline.agent.barge_in import BargeInAction, BargeInPolicy, BargeInSettings, is_echo


def talking_agent() -> BargeInPolicy:
    policy = BargeInPolicy(BargeInSettings(min_speech_ms=150, max_backchannel_ms=1500))
    policy.agent_speaking(True)
    return policy


def speak(policy: BargeInPolicy, start_s: float, until_s: float, step_s: float = 0.02) -> list[BargeInAction]:
    policy.user_speech_start(start_s)
    actions = []
    t = start_s
    while t <= until_s + 1e-9:
        action = policy.user_audio(t)
        if action:
            actions.append(action)
        t += step_s
    return actions


def test_a_click_shorter_than_the_minimum_does_not_pause_the_agent() -> None:
    policy = talking_agent()
    assert speak(policy, 1.0, 1.1) == []
    assert policy.user_speech_end() is None and not policy.paused


def test_speech_over_the_agent_pauses_it_within_the_minimum() -> None:
    policy = talking_agent()
    assert speak(policy, 1.0, 1.2) == [BargeInAction.PAUSE]
    assert policy.paused


@pytest.mark.parametrize("said", ["uh-huh", "Yeah.", "mm hmm, okay", "Right, right.", "I see"])
def test_a_backchannel_resumes_the_agent(said: str) -> None:
    policy = talking_agent()
    speak(policy, 1.0, 1.4)
    assert policy.user_transcript(said, final=False) is None
    policy.user_speech_end()
    assert policy.user_transcript(said, final=True) is BargeInAction.RESUME


def test_a_cough_with_no_words_resumes_when_the_user_stops() -> None:
    policy = talking_agent()
    speak(policy, 1.0, 1.3)
    assert policy.user_speech_end() is BargeInAction.RESUME


def test_real_words_interrupt_as_soon_as_a_partial_shows_a_few() -> None:
    policy = talking_agent()
    speak(policy, 1.0, 1.3)
    assert policy.user_transcript("yeah but wait", final=False) is BargeInAction.INTERRUPT
    assert not policy.paused


def test_a_short_misheard_partial_waits_for_the_final() -> None:
    policy = talking_agent()
    speak(policy, 1.0, 1.3)
    assert policy.user_transcript("write write", final=False) is None  # "Right." half heard
    assert policy.paused
    assert policy.user_transcript("Right, right.", final=True) is BargeInAction.RESUME


def test_one_real_word_in_a_final_interrupts() -> None:
    policy = talking_agent()
    speak(policy, 1.0, 1.3)
    assert policy.user_transcript("Stop.", final=True) is BargeInAction.INTERRUPT


def test_long_speech_interrupts_even_before_the_recogniser_says_anything() -> None:
    policy = talking_agent()
    assert speak(policy, 1.0, 2.6) == [BargeInAction.PAUSE, BargeInAction.INTERRUPT]


def test_speech_while_the_agent_is_silent_is_just_a_turn() -> None:
    policy = BargeInPolicy()
    assert speak(policy, 1.0, 3.0) == []
    assert policy.user_transcript("what time is it", final=True) is None


@pytest.mark.parametrize(
    ("heard", "echo"),
    [
        ("ten past five in the", True),  # the agent's words, back through the speaker
        ("Past five.", True),
        ("afternoon", True),
        ("Stop, what about tomorrow?", False),
        ("No, five is too late for me", False),  # one of the agent's words in a sentence of the user's
        ("", False),
    ],
)
def test_echo_is_mostly_the_agents_own_recent_words(heard: str, echo: bool) -> None:
    assert is_echo(heard, ["It", "is", "ten", "past", "five", "in", "the", "afternoon."]) is echo


def test_the_agents_own_words_resume_it_even_past_the_backchannel_limit() -> None:
    policy = talking_agent()
    assert speak(policy, 1.0, 1.2) == [BargeInAction.PAUSE]
    assert policy.user_transcript("ten past five", final=False, echo=True) is None
    assert speak(policy, 1.2, 3.5) == []  # echo that goes on is still no reason to interrupt
    assert policy.user_transcript("ten past five in the afternoon", final=True, echo=True) is BargeInAction.RESUME
    assert not policy.paused


def test_real_words_after_echo_still_interrupt() -> None:
    policy = talking_agent()
    speak(policy, 1.0, 1.2)
    policy.user_transcript("ten past five", final=False, echo=True)
    assert policy.user_transcript("ten past five, no, stop", final=True) is BargeInAction.INTERRUPT
