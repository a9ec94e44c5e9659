"""End of turn: ready when quiet with every final in; due after a wait set by the words and the voice."""

from __future__ import annotations

import pytest

from voxline.pipeline.agent.turn_taking import TurnDetector, TurnWaits, reads_complete


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("What is the capital of France?", True),
        ("Tell me a joke.", True),
        ("I want to go to the", False),
        ("I was thinking, and", False),
        ("So I went to the store and.", False),
        ("Well, um.", False),
        ("Let me think...", False),
        ("My name is", False),
        ("", False),
        ('He said "stop."', True),
    ],
)
def test_reads_complete(text: str, complete: bool) -> None:
    assert reads_complete(text) is complete


def _spoken(detector: TurnDetector, text: str, start_s: float, end_s: float) -> None:
    detector.speech_start(start_s)
    detector.speech_quiet(end_s)
    detector.final(text, audio_end_s=end_s + 0.1)


def test_complete_turn_ends_as_soon_as_the_final_is_in() -> None:
    detector = TurnDetector(TurnWaits(complete_wait_ms=0, incomplete_wait_ms=900))
    _spoken(detector, "What time is it?", 0.0, 1.2)
    ended = detector.poll(1.25, prepare=False)
    assert ended is not None
    assert ended.text == "What time is it?"
    assert ended.speech_end_s == 1.2 and ended.complete
    assert detector.poll(1.3, prepare=False) is None  # once only


def test_hanging_turn_waits_and_a_continuation_joins_it() -> None:
    detector = TurnDetector(TurnWaits(complete_wait_ms=0, incomplete_wait_ms=900))
    _spoken(detector, "I would like to book a table for", 0.0, 2.0)
    assert detector.poll(2.5, prepare=False) is None  # a thinking pause is not the end
    _spoken(detector, "two people tonight.", 2.6, 4.0)
    ended = detector.poll(4.05, prepare=False)
    assert ended is not None
    assert ended.text == "I would like to book a table for two people tonight."


def test_hanging_turn_ends_after_the_long_wait() -> None:
    detector = TurnDetector(TurnWaits(complete_wait_ms=0, incomplete_wait_ms=900))
    _spoken(detector, "and then", 0.0, 1.0)
    assert detector.poll(1.8, prepare=False) is None
    ended = detector.poll(1.95, prepare=False)
    assert ended is not None and not ended.complete


def test_no_end_while_speaking_or_waiting_for_the_final() -> None:
    detector = TurnDetector()
    _spoken(detector, "Hello there.", 0.0, 1.0)
    detector.speech_start()  # speaking again before the poll
    assert detector.poll(3.0) is None
    detector.speech_quiet(3.0)
    assert detector.poll(3.1) is None  # the second utterance's final is not in yet
    detector.final("How are you?")
    ended = detector.poll(3.15)
    assert ended is not None and ended.text == "Hello there. How are you?"


def test_speech_without_words_stops_holding_the_turn_after_the_timeout() -> None:
    detector = TurnDetector(TurnWaits(final_timeout_ms=2000))
    _spoken(detector, "Is it raining?", 0.0, 1.0)
    detector.speech_start()  # a cough: the recogniser will send no final
    detector.speech_quiet(1.5)
    assert detector.poll(2.0) is None
    ended = detector.poll(3.6)
    assert ended is not None and ended.text == "Is it raining?"


def test_retract_puts_an_answered_turn_back_in_front() -> None:
    detector = TurnDetector()
    _spoken(detector, "Book a flight.", 0.0, 1.0)
    first = detector.poll(1.1)
    assert first is not None
    detector.retract(first)
    _spoken(detector, "To Paris, please.", 1.3, 2.4)
    ended = detector.poll(2.5)
    assert ended is not None and ended.text == "Book a flight. To Paris, please."


def test_discard_last_drops_a_backchannel() -> None:
    detector = TurnDetector()
    _spoken(detector, "Uh-huh.", 0.0, 0.5)
    detector.discard_last("Uh-huh.")
    assert detector.pending_text == ""
    assert detector.poll(5.0) is None


def test_questions_end_whatever_the_last_word() -> None:
    assert reads_complete("How many legs does a spider have?")
    assert reads_complete("Where are you from?")
    assert not reads_complete("I am going to")


def test_a_late_final_of_the_first_sentence_does_not_end_the_wait_for_the_second() -> None:
    detector = TurnDetector()
    detector.speech_start(0.0)
    detector.speech_quiet(1.0)
    detector.speech_start(1.5)  # the second sentence starts before the first one's final lands
    detector.final("I went to Paris.", audio_end_s=1.2)
    detector.speech_quiet(3.0)
    assert detector.poll(3.05) is None  # the second sentence's final is still owed
    detector.final("It was lovely.", audio_end_s=3.2)
    ended = detector.poll(3.3)
    assert ended is not None and ended.text == "I went to Paris. It was lovely."


def test_a_turn_is_ready_to_prepare_before_it_is_due() -> None:
    detector = TurnDetector(TurnWaits(complete_wait_ms=400))
    _spoken(detector, "Ever tried.", 0.0, 1.0)
    ready = detector.poll(1.05)  # quiet and the final is in: prepare the reply now
    assert ready is not None and ready.text == "Ever tried."
    assert not detector.due(ready, 1.3)  # a 300 ms pause between sentences is not the end
    assert detector.due(ready, 1.41)


def test_the_voice_decides_when_the_text_reads_complete() -> None:
    waits = TurnWaits(complete_wait_ms=400, unsure_wait_ms=800, incomplete_wait_ms=1200)
    detector = TurnDetector(waits, uses_audio_model=True)
    _spoken(detector, "Ever tried.", 0.0, 1.0)
    assert detector.wait_ms("Ever tried.") == 800  # no verdict yet: unsure
    detector.audio_verdict(0.9)
    assert detector.wait_ms("Ever tried.") == 400  # the voice finished too
    assert detector.wait_ms("it was the worst of times,") == 800
    detector.audio_verdict(0.1)
    assert detector.wait_ms("Ever tried.") == 800  # the voice goes on: a pause between sentences
    assert detector.wait_ms("it was the worst of times,") == 1200
    detector.speech_start(1.3)  # speech again: the verdict was of the last pause only
    detector.audio_verdict(0.9)  # a verdict landing while the user speaks is ignored
    detector.speech_quiet(2.0)
    assert detector.wait_ms("Ever tried.") == 800
