"""What the caller heard when a carrier plays the agent's audio later: the ledger and the playout's cut."""

from __future__ import annotations

import numpy as np

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
    ledger = PlaybackLedger(RATE, clock=clock)
    ledger.sent(500)
    ledger.place_mark()
    clock.now += 1.0
    assert ledger.position() == 0 and not ledger.has_heard(1)


def test_an_echo_anchors_the_position_which_then_runs_in_real_time_up_to_what_was_sent() -> None:
    clock = FakeClock()
    ledger = PlaybackLedger(RATE, clock=clock)
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
    ledger = PlaybackLedger(RATE, clock=clock)
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
    ledger = PlaybackLedger(RATE, clock=clock)
    playout = PlayoutBuffer(RATE, listener=ledger)
    text = "one two three four five six seven eight"
    playout.enqueue(text, np.full(800, 0.1, np.float32), turn=1)
    for _ in range(30):  # 600 ms pulled and sent, 20 ms at a time
        ledger.sent(len(playout.next_frame(20)))
    clock.now += 0.6
    ledger.echoed(ledger.place_mark())  # the carrier played the first 600 ms...
    assert playout.heard(1).text == "one two three four five six"
    # ...but say the carrier lags 300 ms: its echo arrives with the position at 300
    ledger2 = PlaybackLedger(RATE, clock=clock)
    playout2 = PlayoutBuffer(RATE, listener=ledger2)
    playout2.enqueue(text, np.full(800, 0.1, np.float32), turn=1)
    marks = []
    for i in range(30):
        ledger2.sent(len(playout2.next_frame(20)))
        if i % 5 == 4:
            marks.append(ledger2.place_mark())
    ledger2.echoed(marks[2])  # 300 ms played
    ledger2.cleared()  # barge-in: the carrier drops the other 300 ms
    heard = playout2.flush()
    assert [h.text for h in heard] == ["one two three"]
    assert heard[0].interrupted


def test_without_a_listener_what_is_pulled_is_heard() -> None:
    playout = PlayoutBuffer(RATE)
    playout.enqueue("one two three four", np.full(400, 0.1, np.float32), turn=1)
    playout.next_frame(200)
    assert playout.heard(1).text == "one two"
