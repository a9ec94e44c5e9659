"""The batcher's policy: finals first, earliest deadline, length buckets, latest wins."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from voxline.errors import EngineError
from voxline.models.batch_scheduler import BatchScheduler, bucket_of


@dataclass(eq=False)
class Req:
    name: str
    audio_s: float = 1.0
    deadline: float = 0.0
    final: bool = False
    session_key: object = None


def names(batch: list[Req]) -> list[str]:
    return [r.name for r in batch]


def test_bucket_is_the_ceiling_of_length_over_bucket_width() -> None:
    assert bucket_of(0.2, 1.0) == 1
    assert bucket_of(1.0, 1.0) == 1
    assert bucket_of(1.01, 1.0) == 2
    assert bucket_of(0.0, 1.0) == 1
    assert bucket_of(4.9, 2.5) == 2


def test_an_empty_scheduler_gives_an_empty_batch() -> None:
    assert BatchScheduler[Req](4, 1.0).next_batch() == []


def test_finals_run_before_partials_even_with_a_later_deadline() -> None:
    s = BatchScheduler[Req](1, 1.0)
    s.submit(Req("partial", deadline=1.0))
    s.submit(Req("final", deadline=9.0, final=True))
    assert names(s.next_batch()) == ["final"]
    assert names(s.next_batch()) == ["partial"]


def test_earliest_deadline_comes_first_and_ties_keep_submission_order() -> None:
    s = BatchScheduler[Req](1, 1.0)
    for name, deadline in [("c", 3.0), ("a", 1.0), ("b1", 2.0), ("b2", 2.0)]:
        s.submit(Req(name, deadline=deadline))
    assert [names(s.next_batch())[0] for _ in range(4)] == ["a", "b1", "b2", "c"]
    assert len(s) == 0


def test_a_batch_never_exceeds_max_batch() -> None:
    s = BatchScheduler[Req](3, 1.0)
    for i in range(7):
        s.submit(Req(f"r{i}", deadline=float(i)))
    assert [len(s.next_batch()) for _ in range(3)] == [3, 3, 1]


def test_the_head_bucket_takes_same_and_smaller_lengths_and_leaves_longer_ones() -> None:
    s = BatchScheduler[Req](8, 1.0)
    s.submit(Req("head3s", audio_s=2.5, deadline=0.0))
    s.submit(Req("short", audio_s=0.8, deadline=1.0))
    s.submit(Req("same", audio_s=3.0, deadline=2.0))
    s.submit(Req("long", audio_s=9.0, deadline=0.5))
    assert names(s.next_batch()) == ["head3s", "short", "same"]
    assert names(s.next_batch()) == ["long"]


def test_the_next_bucket_up_joins_when_its_work_outweighs_the_padding() -> None:
    s = BatchScheduler[Req](8, 1.0)
    s.submit(Req("head", audio_s=4.0, deadline=0.0))
    s.submit(Req("up", audio_s=4.5, deadline=1.0))
    assert names(s.next_batch()) == ["head", "up"]


def test_the_next_bucket_up_stays_out_when_it_would_pad_many_short_requests() -> None:
    s = BatchScheduler[Req](8, 1.0)
    for i in range(6):
        s.submit(Req(f"s{i}", audio_s=0.9, deadline=float(i)))
    s.submit(Req("up", audio_s=1.5, deadline=10.0))
    assert names(s.next_batch()) == [f"s{i}" for i in range(6)]
    assert names(s.next_batch()) == ["up"]


def test_a_newer_partial_supersedes_the_pending_partial_of_its_session() -> None:
    s = BatchScheduler[Req](8, 1.0)
    old = Req("old", session_key="a")
    other = Req("other", session_key="b")
    s.submit(old)
    s.submit(other)
    assert s.submit(Req("new", session_key="a", deadline=5.0)) == [old]
    assert names(s.next_batch()) == ["other", "new"]


def test_a_final_supersedes_pending_partials_but_is_never_superseded() -> None:
    s = BatchScheduler[Req](8, 1.0)
    partial = Req("partial", session_key="a")
    s.submit(partial)
    assert s.submit(Req("final", session_key="a", final=True)) == [partial]
    assert s.submit(Req("partial2", session_key="a")) == []
    assert names(s.next_batch()) == ["final", "partial2"]


def test_requests_without_a_session_key_are_never_superseded() -> None:
    s = BatchScheduler[Req](8, 1.0)
    s.submit(Req("a"))
    assert s.submit(Req("b")) == []
    assert len(s) == 2


def test_cancel_removes_only_a_pending_request() -> None:
    s = BatchScheduler[Req](8, 1.0)
    r = Req("r")
    s.submit(r)
    assert s.cancel(r) is True
    assert s.cancel(r) is False
    assert s.next_batch() == []


def test_drain_empties_the_queue_in_priority_order() -> None:
    s = BatchScheduler[Req](8, 1.0)
    s.submit(Req("late", deadline=2.0))
    s.submit(Req("final", deadline=3.0, final=True))
    assert names(s.drain()) == ["final", "late"]
    assert len(s) == 0


def test_a_full_queue_refuses_new_requests() -> None:
    s = BatchScheduler[Req](8, 1.0, max_pending=2)
    s.submit(Req("a"))
    s.submit(Req("b"))
    with pytest.raises(EngineError):
        s.submit(Req("c"))


def test_padded_bucket_is_the_largest_in_the_batch() -> None:
    s = BatchScheduler[Req](8, 1.0)
    assert s.padded_bucket([Req("a", audio_s=0.5), Req("b", audio_s=2.2)]) == 3


@pytest.mark.parametrize(("max_batch", "bucket_s"), [(0, 1.0), (1, 0.0)])
def test_nonsense_limits_are_rejected(max_batch: int, bucket_s: float) -> None:
    with pytest.raises(ValueError):
        BatchScheduler[Req](max_batch, bucket_s)
