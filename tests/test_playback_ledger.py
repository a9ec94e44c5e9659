"""What the listener heard, on every transport: the ledger (WebRTC, a carrier's marks, a client's truncate) and the playout's cut."""

from __future__ import annotations

import numpy as np
import pytest

from voxline.pipeline.agent.playback_ledger import PlaybackLedger
from voxline.pipeline.agent.playout import PlayoutBuffer

RATE = 1000  # samples per second, so positions read as ms


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_counts_as_played_before_the_carrier_echoes_a_mark() -> None:
    clock = FakeClock()
    ledger = PlaybackLedger(RATE, echoes_marks=True, clock=clock)
    ledger.sent(500)
    ledger.place_mark()
    clock.now += 1.0
    assert ledger.position() == 0 and not ledger.has_heard(1)


def test_an_echo_anchors_the_position_which_then_runs_in_real_time_up_to_what_was_sent() -> None:
    clock = FakeClock()
    ledger = PlaybackLedger(RATE, echoes_marks=True, clock=clock)
    ledger.sent(200)
    first = ledger.place_mark()
    ledger.sent(300)
    ledger.place_mark()
    assert ledger.echoed(first)
    assert ledger.position() == 200
    clock.now += 0.1
    assert ledger.position() == 300
    clock.now += 10
    assert ledger.position() == 500  # never past what was sent
    assert ledger.queued_s == 0
    assert not ledger.echoed("nonsense")


def test_a_clear_makes_what_the_carrier_had_queued_unheard_and_voids_the_marks_before_it() -> None:
    clock = FakeClock()
    ledger = PlaybackLedger(RATE, echoes_marks=True, clock=clock)
    ledger.sent(100)
    ledger.echoed(ledger.place_mark())
    ledger.sent(400)  # 400 ms more sent at once: the carrier buffers it
    pending = ledger.place_mark()
    clock.now += 0.15
    assert ledger.cleared() == 250
    assert not ledger.echoed(pending)  # carriers echo pending marks on a clear: not playback
    assert ledger.has_heard(240) and not ledger.has_heard(260) and not ledger.has_heard(500)
    ledger.sent(100)  # after the clear, new audio plays at once
    clock.now += 0.1
    assert ledger.has_heard(590) and not ledger.has_heard(400)


def test_an_interruption_cuts_the_history_at_what_the_carrier_played_not_at_what_was_pulled() -> None:
    clock = FakeClock()
    ledger = PlaybackLedger(RATE, echoes_marks=True, clock=clock)
    playout = PlayoutBuffer(RATE)
    playout.use_ledger(ledger)
    text = "one two three four five six seven eight"
    playout.enqueue(text, np.full(800, 0.1, np.float32), turn=1)
    for _ in range(30):  # 600 ms pulled and sent, 20 ms at a time
        playout.next_frame(20)
    assert ledger.sent_samples == 600 and playout.heard(1).text == ""  # nothing echoed yet
    clock.now += 0.6
    ledger.echoed(ledger.place_mark())  # the carrier played the first 600 ms...
    assert playout.heard(1).text == "one two three four five six"
    # ...but say the carrier lags 300 ms: its echo arrives with the position at 300
    ledger2 = PlaybackLedger(RATE, echoes_marks=True, clock=clock)
    playout2 = PlayoutBuffer(RATE)
    playout2.use_ledger(ledger2)
    playout2.enqueue(text, np.full(800, 0.1, np.float32), turn=1)
    marks = []
    for i in range(30):
        playout2.next_frame(20)
        if i % 5 == 4:
            marks.append(ledger2.place_mark())
    ledger2.echoed(marks[2])  # 300 ms played
    ledger2.cleared()  # barge-in: the carrier drops the other 300 ms
    heard = playout2.flush()
    assert [h.text for h in heard] == ["one two three"]
    assert heard[0].interrupted


def test_silence_handed_out_while_a_reply_is_held_stays_on_the_clock_the_carrier_confirms() -> None:
    # 300 ms of held silence, then the reply: a mark echoed after 500 ms of the call's
    # audio has played means 200 ms of the reply, not 500.
    clock = FakeClock()
    ledger = PlaybackLedger(RATE, echoes_marks=True, clock=clock)
    playout = PlayoutBuffer(RATE)
    playout.use_ledger(ledger)
    for _ in range(15):
        playout.silence(20)
    playout.enqueue("one two three four", np.full(400, 0.1, np.float32), turn=1)
    marks = []
    for _ in range(20):
        playout.next_frame(20)
        marks.append(ledger.place_mark())
    assert ledger.echoed(marks[9])  # 300 + 200 samples
    assert playout.heard(1).text == "one two"


def test_a_ledger_joins_a_playout_before_its_first_sample_or_not_at_all() -> None:
    playout = PlayoutBuffer(RATE)
    with pytest.raises(ValueError, match="2000 Hz ledger for a 1000 Hz playout"):
        playout.use_ledger(PlaybackLedger(2 * RATE))
    playout.next_frame(20)
    with pytest.raises(ValueError, match="before any audio"):
        playout.use_ledger(PlaybackLedger(RATE, echoes_marks=True))


def test_by_default_what_is_pulled_is_heard() -> None:
    playout = PlayoutBuffer(RATE)
    playout.enqueue("one two three four", np.full(400, 0.1, np.float32), turn=1)
    playout.next_frame(200)
    assert playout.heard(1).text == "one two"


# -- a Realtime client's truncate: it played the item up to audio_end_ms, then stopped --

FIRST = "Paris is lovely."
SECOND = "It has many museums."
WORDS = f"{FIRST} {SECOND}".split()


def _truncated_at(ms: int) -> str:
    """What is heard of a reply played out whole (two clauses, 1.2 s + 1.4 s) that the client cut at ``ms``."""
    playout = PlayoutBuffer(RATE)
    playout.silence(60)  # the item's audio starts after some idle call time
    playout.enqueue(FIRST, np.full(1200, 0.1, np.float32), turn=7)
    playout.enqueue(SECOND, np.full(1400, 0.1, np.float32), turn=7)
    while playout.queued_s:
        playout.next_frame(20)
    assert playout.forget(7).text == f"{FIRST} {SECOND}"  # played out: heard whole, until the client says not
    playout.ledger.unheard(60 + ms, 60 + 2600)
    return " ".join(playout.ledger.heard(7))


def test_a_truncate_at_the_start_leaves_nothing_heard_and_at_the_end_everything() -> None:
    assert _truncated_at(0) == ""
    assert _truncated_at(2600) == f"{FIRST} {SECOND}"


def test_a_truncate_where_the_second_clause_starts_keeps_exactly_the_first() -> None:
    assert _truncated_at(1200) == FIRST
    assert _truncated_at(1190) == "Paris is"
    assert _truncated_at(2590) == " ".join(WORDS[:-1])


def test_what_a_truncate_keeps_grows_with_the_audio_played_and_never_runs_ahead_of_it() -> None:
    # Speech runs at a steady rate of characters, so the share of the words' characters
    # kept follows the share of the audio played: lagging by at most one word (the one
    # being spoken) and never ahead of it.
    total = len(f"{FIRST} {SECOND}")
    one_word = (max(len(word) for word in WORDS) + 2) / total
    previous: list[str] = []
    for ms in range(0, 2601, 10):
        kept = _truncated_at(ms)
        words = kept.split()
        assert words == WORDS[: len(words)] and words[: len(previous)] == previous, ms
        assert ms / 2600 - len(kept) / total < one_word, (ms, kept)
        assert len(kept) / total <= ms / 2600 + 1 / total, (ms, kept)
        previous = words
    assert previous == WORDS


def test_a_truncated_reply_leaves_the_next_reply_heard() -> None:
    playout = PlayoutBuffer(RATE)
    playout.enqueue("one two", np.full(200, 0.1, np.float32), turn=1)
    playout.next_frame(200)
    playout.ledger.unheard(50, 200)
    playout.enqueue("three four", np.full(200, 0.1, np.float32), turn=2)
    playout.next_frame(200)
    assert playout.ledger.heard(1) == [] and playout.ledger.heard(2) == ["three", "four"]
