"""ReorderWindow: inbound audio packets back in order, on a path that reorders, loses and wraps."""

from __future__ import annotations

import random

import pytest

from voxline.stream.webrtc.rtp_reorder import (
    MAX_CONCEALED_PACKETS,
    ReorderWindow,
    sequence_distance,
)


def run(window: ReorderWindow[int], sequences: list[int]) -> list[list[int | None]]:
    return [window.add(s, s) for s in sequences]


def test_packets_in_order_leave_as_they_arrive() -> None:
    assert run(ReorderWindow(), [7, 8, 9, 10]) == [[7], [8], [9], [10]]


def test_a_packet_that_overtook_another_waits_then_both_leave_in_order_at_once() -> None:
    window = ReorderWindow[int]()
    assert run(window, [1, 3, 2, 4]) == [[1], [], [2, 3], [4]]
    assert (window.held, window.dropped_late, window.skipped) == (0, 0, 0)


def test_a_lost_packet_is_given_up_after_the_window_and_nothing_is_left_waiting() -> None:
    window = ReorderWindow[int](window=3)
    assert run(window, [1, 3, 4, 5, 6]) == [[1], [], [], [None, 3, 4, 5], [6]]  # None: conceal me
    assert window.skipped == 1 and window.held == 0 and window.released == 5


def test_a_gap_too_long_to_conceal_is_left_out() -> None:
    window = ReorderWindow[int](window=3)
    after = 2 + MAX_CONCEALED_PACKETS + 1
    assert run(window, [1, after]) == [[1], [after]]
    assert window.skipped == MAX_CONCEALED_PACKETS + 1


def test_a_packet_after_its_place_was_given_up_is_dropped() -> None:
    window = ReorderWindow[int](window=3)
    assert run(window, [1, 3, 4, 5, 2, 6]) == [[1], [], [], [None, 3, 4, 5], [], [6]]
    assert window.dropped_late == 1


def test_duplicates_are_dropped() -> None:
    window = ReorderWindow[int]()
    assert run(window, [1, 2, 2, 3]) == [[1], [2], [], [3]]
    assert window.dropped_late == 1


def test_sequence_numbers_wrap_at_16_bits() -> None:
    assert sequence_distance(1, 65535) == 2 and sequence_distance(65535, 1) == -2
    assert run(ReorderWindow(), [65534, 0, 65535, 1]) == [[65534], [], [65535, 0], [1]]


def test_a_sender_that_restarts_far_behind_is_followed() -> None:
    assert run(ReorderWindow(), [5000, 5001, 10, 11]) == [[5000], [5001], [10], [11]]


def test_a_window_of_no_packets_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReorderWindow(window=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_on_a_lossy_jittery_path_every_packet_that_arrives_in_time_leaves_once_in_order_without_standing_delay(
    seed: int,
) -> None:
    """5 % loss and 0-60 ms of jitter on 20 ms packets (the lossy call test's path)."""
    rng = random.Random(seed)
    count = 5000
    sent = [s % 65536 for s in range(60000, 60000 + count)]  # wraps midway
    arrivals = sorted((20 * i + rng.uniform(0, 60), i) for i in range(count) if rng.random() >= 0.05)
    window = ReorderWindow[int]()
    released: list[int] = []
    waits: list[float] = []
    for at, i in arrivals:
        for index in window.add(sent[i], i):
            if index is not None:
                released.append(index)
                waits.append(at - 20 * index)  # sent to released, ms
    assert released == sorted(released) and len(set(released)) == len(released), "in order, each once"
    # releasing on arrival and dropping what comes late keeps about 73 % here
    assert len(released) + window.held >= 0.93 * count  # 5 % never came
    waits.sort()
    assert waits[len(waits) // 2] < 60 and waits[int(0.95 * len(waits))] < 110, (waits[len(waits) // 2], waits[-1])


def test_without_jitter_a_lost_packet_costs_one_wait_and_then_packets_leave_as_they_arrive() -> None:
    window = ReorderWindow[int](window=3)
    arrivals = [s for s in range(100) if s % 10 != 5]  # every tenth packet lost
    out = {s: window.add(s, s) for s in arrivals}
    for s in arrivals:
        if s % 10 in (6, 7):
            assert out[s] == [], "waiting for the lost packet"
        elif s % 10 == 8:
            assert out[s] == [None, s - 2, s - 1, s], "given up: the wait released at once"
        else:
            assert out[s] == [s], "in order: no standing delay"
    assert window.skipped == 10
