"""WorkerPool and ResultChannel with plain requests and real threads: bounds, close, back-pressure."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from voxline.errors import EngineError
from voxline.models.batch_scheduler import BatchScheduler
from voxline.models.worker_pool import (
    EarliestDeadlineFirst,
    EngineStream,
    FirstInFirstOut,
    ResultChannel,
    WorkerPool,
    reject,
    resolve,
)


@dataclass(eq=False)
class Req:
    name: str
    deadline: float = 0.0
    final: bool = True
    audio_s: float = 1.0
    session_key: object = None
    done: threading.Event = field(default_factory=threading.Event)


def names(requests: list[Req]) -> list[str]:
    return [r.name for r in requests]


def wait_for(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class Recorder:
    """A worker that records what it runs; a request named "hold" waits for ``release``."""

    def __init__(self, pool: WorkerPool[Req]) -> None:
        self.pool = pool
        self.ran: list[str] = []
        self.release = threading.Event()
        self.holding = threading.Event()

    def work(self) -> None:
        while (batch := self.pool.take()) is not None:
            for request in batch:
                with self.pool.working():
                    if request.name == "hold":
                        self.holding.set()
                        self.release.wait(5)
                    self.ran.append(request.name)


def pool_of(max_pending: int = 8) -> WorkerPool[Req]:
    return WorkerPool("test", FirstInFirstOut(), max_pending=max_pending)


async def test_a_full_queue_refuses_with_an_engine_error() -> None:
    pool = pool_of(max_pending=2)
    pool.submit(Req("a"))
    pool.submit(Req("b"))
    with pytest.raises(EngineError, match="TEST queue is full"):
        pool.submit(Req("c"))
    await pool.close(dropped=lambda r: None)
    with pytest.raises(EngineError, match="TEST engine is closed"):
        pool.submit(Req("d"))


async def test_threads_are_named_counted_busy_and_joined_on_close() -> None:
    pool = pool_of()
    worker = Recorder(pool)
    pool.start([worker.work, worker.work])
    pool.start([worker.work])  # a second start does nothing
    mine = {t.name for t in threading.enumerate() if t.name.startswith("voxline-test-")}
    assert mine == {"voxline-test-0", "voxline-test-1"} and pool.started
    pool.submit(Req("hold"))
    assert worker.holding.wait(2)
    assert pool.busy_workers == 1
    worker.release.set()
    wait_for(lambda: pool.busy_workers == 0)
    await pool.close(dropped=lambda r: None)
    await pool.close(dropped=lambda r: None)  # idempotent
    assert not pool.started
    assert not any(t.name.startswith("voxline-test-") for t in threading.enumerate())


def one_busy_worker_and_two_waiting() -> tuple[WorkerPool[Req], Recorder]:
    """A pool whose only worker holds "hold" (until ``release``) while "a" and "b" wait."""
    pool = pool_of()
    worker = Recorder(pool)
    pool.start([worker.work])
    pool.submit(Req("hold"))
    assert worker.holding.wait(2)
    pool.submit(Req("a"))
    pool.submit(Req("b"))
    return pool, worker


async def test_close_without_drain_hands_back_the_queued_requests_and_sets_stopping() -> None:
    pool, worker = one_busy_worker_and_two_waiting()
    dropped: list[Req] = []
    closing = asyncio.create_task(pool.close(dropped=dropped.append))
    await asyncio.sleep(0.05)
    assert names(dropped) == ["a", "b"] and pool.stopping.is_set()
    worker.release.set()  # the request in hand finishes (it could look at stopping)
    await closing
    assert worker.ran == ["hold"]


async def test_close_with_drain_runs_every_accepted_request_in_order() -> None:
    pool, worker = one_busy_worker_and_two_waiting()
    dropped: list[Req] = []
    closing = asyncio.create_task(pool.close(drain=True, dropped=dropped.append))
    await asyncio.sleep(0.05)
    with pytest.raises(EngineError):
        pool.submit(Req("late"))
    worker.release.set()
    await closing
    assert worker.ran == ["hold", "a", "b"] and dropped == []
    assert not pool.stopping.is_set()


async def test_close_raises_when_a_worker_does_not_stop_in_time() -> None:
    pool = pool_of()
    stuck = threading.Event()
    pool.start([lambda: stuck.wait(5)])
    with pytest.raises(EngineError, match=r"TEST worker did not stop within 0\.05 s"):
        await pool.close(dropped=lambda r: None, timeout_s=0.05)
    stuck.set()
    await pool.close(dropped=lambda r: None)  # a second close waits again
    assert not pool.started


def test_take_without_blocking_gives_nothing_when_idle_and_none_once_closed() -> None:
    pool = pool_of()
    assert pool.take(block=False) == []
    pool.submit(Req("a"))
    pool.submit(Req("b"))
    assert names(pool.take(block=False) or []) == ["a"]
    asyncio.run(pool.close(drain=True, dropped=lambda r: None))
    assert names(pool.take(block=False) or []) == ["b"]  # drained before stopping
    assert pool.take(block=False) is None
    assert pool.take() is None


def test_a_cancelled_request_leaves_the_queue() -> None:
    pool = pool_of()
    a, b = Req("a"), Req("b")
    pool.submit(a)
    pool.submit(b)
    assert pool.cancel(a) and not pool.cancel(a)
    assert names(pool.take() or []) == ["b"]


def test_one_worker_can_take_every_pending_request_as_one_batch() -> None:
    pool = WorkerPool[Req]("vc", FirstInFirstOut(max_batch=1_000_000), max_pending=8)
    for name in "abc":
        pool.submit(Req(name))
    assert names(pool.take() or []) == ["a", "b", "c"]
    assert pool.take(block=False) == []


def test_earliest_deadline_first_keeps_submission_order_for_ties() -> None:
    pool = WorkerPool[Req]("tts", EarliestDeadlineFirst(), max_pending=8)
    for name, deadline in (("late", 5.0), ("first", 1.0), ("second", 1.0), ("now", 0.0)):
        pool.submit(Req(name, deadline=deadline))
    taken = [names(pool.take() or []) for _ in range(4)]
    assert taken == [["now"], ["first"], ["second"], ["late"]]


def test_a_batch_scheduler_orders_the_pool_and_its_superseded_requests_come_back() -> None:
    pool = WorkerPool[Req]("asr", BatchScheduler(8, 1.0), max_pending=8)
    old = Req("old", final=False, session_key="s")
    pool.submit(old)
    assert pool.submit(Req("new", final=False, session_key="s")) == [old]
    pool.submit(Req("final", deadline=9.0))
    assert names(pool.take() or []) == ["final", "new"]


def start_sender(send: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


async def test_a_worker_ahead_of_its_reader_waits_and_loses_nothing() -> None:
    channel = ResultChannel[int](3)
    stream = EngineStream(channel)
    sent: list[int] = []

    def send() -> None:
        for i in range(10):
            assert channel.send(i)
            sent.append(i)
        channel.finish()

    sender = start_sender(send)
    await asyncio.to_thread(wait_for, lambda: len(sent) == 3)
    await asyncio.sleep(0.1)
    assert len(sent) == 3, "the worker did not wait for its reader"
    assert await anext(stream) == 0
    await asyncio.to_thread(wait_for, lambda: len(sent) == 4)
    await asyncio.sleep(0.1)
    assert len(sent) == 4
    assert [0, *[item async for item in stream]] == list(range(10))
    await asyncio.to_thread(sender.join, 2)
    assert not sender.is_alive()


async def test_the_exception_a_worker_finishes_with_is_raised_once() -> None:
    channel = ResultChannel[str](2)
    stream = EngineStream(channel)
    channel.send("a")
    channel.finish(EngineError("model failed"))
    assert await anext(stream) == "a"
    with pytest.raises(EngineError, match="model failed"):
        await anext(stream)
    assert [item async for item in stream] == []


@pytest.mark.parametrize("how", ["aclose", "leave async with", "cancel in anext"])
async def test_a_reader_that_stops_frees_the_worker_and_withdraws(how: str) -> None:
    channel = ResultChannel[int](2)
    withdrawn: list[bool] = []
    stream = EngineStream(channel, withdraw=functools.partial(withdrawn.append, True))
    stopped = threading.Event()

    def send() -> None:
        if how == "cancel in anext":  # a worker with nothing to send yet looks at the flag
            channel.cancelled.wait(2)
        else:
            while channel.send(0):
                pass
        if channel.cancelled.is_set():
            stopped.set()

    sender = start_sender(send)
    if how == "aclose":
        assert await anext(stream) == 0
        await stream.aclose()
        await stream.aclose()
    else:

        async def read() -> None:
            if how == "cancel in anext":
                await anext(stream)  # nothing comes: cancelled in there
            async with stream:  # cancelled in the body: the block's exit closes the stream
                async for _ in stream:
                    await asyncio.sleep(10)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.1)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
    await asyncio.to_thread(sender.join, 1)
    assert not sender.is_alive() and stopped.is_set()
    assert withdrawn == [True]
    assert [item async for item in stream] == []


async def test_a_reader_that_stalls_is_abandoned_after_the_stall_timeout() -> None:
    channel = ResultChannel[int](1, stall_timeout_s=0.2)
    stream = EngineStream(channel)
    started = time.monotonic()
    assert await asyncio.to_thread(channel.send, 0)
    assert not await asyncio.to_thread(channel.send, 1)  # nobody reads: given up
    assert 0.2 <= time.monotonic() - started < 1.5
    assert channel.cancelled.is_set()
    assert await anext(stream) == 0  # what was sent before stays readable


async def test_a_stop_event_ends_a_wait_for_room() -> None:
    channel = ResultChannel[int](1)
    stop = threading.Event()
    assert channel.send(0)
    threading.Timer(0.1, stop.set).start()
    assert not await asyncio.to_thread(channel.send, 1, stop)
    assert not channel.cancelled.is_set()


async def test_has_room_keeps_a_place_and_never_waits_unasked() -> None:
    channel = ResultChannel[int](1)
    stream = EngineStream(channel)
    assert channel.has_room() and channel.has_room()  # the place is kept, not taken twice
    assert channel.send(0)
    assert not channel.has_room()
    started = time.monotonic()
    assert not channel.has_room(0.05)
    assert time.monotonic() - started >= 0.04
    assert await anext(stream) == 0
    assert channel.has_room(1.0)


def test_results_for_a_closed_loop_are_dropped_without_raising_in_the_worker() -> None:
    async def make() -> tuple[ResultChannel[int], asyncio.Future[int], asyncio.Future[int]]:
        loop = asyncio.get_running_loop()
        return ResultChannel[int](2), loop.create_future(), loop.create_future()

    channel, ok, failed = asyncio.run(make())  # the loop is closed once run returns
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            assert not channel.send(1)
            assert channel.cancelled.is_set()
            channel.finish()
            resolve(ok, 1)
            reject(failed, EngineError("too late"))
        except BaseException as exc:
            errors.append(exc)

    thread = start_sender(worker)
    thread.join(2)
    assert errors == [] and not ok.done() and not failed.done()


async def test_a_future_is_set_once_from_a_worker_thread() -> None:
    future = asyncio.get_running_loop().create_future()
    await asyncio.to_thread(resolve, future, "first")
    await asyncio.to_thread(reject, future, EngineError("second"))
    assert await future == "first"
