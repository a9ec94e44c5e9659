"""Worker threads an engine shares between sessions, and the ways results come back.

Every engine runs its model on worker threads, never on the event loop. What their
life cycle has in common lives here:

- ``WorkerPool``: named daemon threads ``voxline-<name>-<i>`` and one bounded queue of
  pending requests kept in a pluggable ``PendingOrder`` (``FirstInFirstOut``,
  ``EarliestDeadlineFirst`` or ``batch_scheduler.BatchScheduler``), closed with or
  without drain;
- ``ResultChannel`` and ``EngineStream``: one request's stream of results from its
  worker to the caller's loop, in order, with back-pressure: a worker ``places`` items
  ahead of its reader waits, a reader that stalls is abandoned, a reader that stops
  frees the worker;
- ``resolve`` / ``reject``: one request's single result, set on the caller's future.

A caller's loop may close while its request runs; results for it are then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from voxline.errors import EngineError

__all__ = [
    "STALL_TIMEOUT_S",
    "EarliestDeadlineFirst",
    "EngineStream",
    "FirstInFirstOut",
    "PendingOrder",
    "ResultChannel",
    "WorkerPool",
    "reject",
    "resolve",
]

STALL_TIMEOUT_S = 60.0
"""A reader that leaves its worker waiting for a free place this long is abandoned (s)."""
_POLL_S = 0.05  # how often a worker waiting for room looks at the cancel and stop flags

T = TypeVar("T")
R = TypeVar("R")


class PendingOrder(Protocol[R]):
    """The requests waiting for a worker, and which go next. Not thread-safe: the pool locks."""

    def __len__(self) -> int:
        """Number of pending requests."""
        ...

    def submit(self, request: R) -> list[R]:
        """Add ``request``; return the pending requests it supersedes (removed)."""
        ...

    def next_batch(self) -> list[R]:
        """Remove and return the requests to run next, together; empty when none is pending."""
        ...

    def cancel(self, request: R) -> bool:
        """Remove ``request`` (by identity); False if it was not pending."""
        ...

    def drain(self) -> list[R]:
        """Remove and return every pending request."""
        ...


class FirstInFirstOut(Generic[R]):
    """Requests in the order they came; a batch is the oldest ``max_batch`` of them (default 1)."""

    def __init__(self, max_batch: int = 1) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._pending: list[R] = []

    def __len__(self) -> int:
        """Number of pending requests."""
        return len(self._pending)

    def submit(self, request: R) -> list[R]:
        """Add ``request`` last; it supersedes nothing."""
        self._pending.append(request)
        return []

    def next_batch(self) -> list[R]:
        """Remove and return the oldest ``max_batch`` requests, oldest first."""
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        return batch

    def cancel(self, request: R) -> bool:
        """Remove ``request`` (by identity); False if it was not pending."""
        for i, pending in enumerate(self._pending):
            if pending is request:
                del self._pending[i]
                return True
        return False

    def drain(self) -> list[R]:
        """Remove and return every pending request, oldest first."""
        pending, self._pending = self._pending, []
        return pending


class _HasDeadline(Protocol):
    @property
    def deadline(self) -> float: ...


D = TypeVar("D", bound=_HasDeadline)


class EarliestDeadlineFirst(FirstInFirstOut[D]):
    """One request at a time, the earliest ``deadline`` first; equal deadlines in the order they came."""

    def __init__(self) -> None:
        super().__init__(1)

    def next_batch(self) -> list[D]:
        """Remove and return the request with the earliest deadline (none when empty)."""
        if not self._pending:
            return []
        first = min(range(len(self._pending)), key=lambda i: self._pending[i].deadline)
        return [self._pending.pop(first)]


class WorkerPool(Generic[R]):
    """Worker threads and the bounded queue of requests they take, in ``order``'s order.

    ``name`` names the threads (``voxline-<name>-<i>``) and, upper-cased, the errors
    ("TTS queue is full ..."). At most ``max_pending`` requests wait; ``submit``
    refuses more (back-pressure belongs to the caller), even one that would supersede
    others. Thread-safe: callers submit and cancel on their loops, workers ``take``
    on their threads. ``stopping`` (a ``threading.Event``) is set by
    ``close(drain=False)``: a worker should stop the work it has in hand early. A
    closed pool is never restarted.
    """

    def __init__(self, name: str, order: PendingOrder[R], *, max_pending: int) -> None:
        self.name = name
        self.max_pending = max_pending
        self.stopping = threading.Event()
        self._label = name.upper()
        self._order = order
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._drain = False
        self._busy = 0

    @property
    def started(self) -> bool:
        """True while the worker threads run (from ``start`` until ``close`` joined them)."""
        return bool(self._threads)

    @property
    def closing(self) -> bool:
        """True once ``close`` was called: ``submit`` refuses from then on."""
        return self._closing

    @property
    def busy_workers(self) -> int:
        """Workers inside ``working()`` right now."""
        return self._busy

    def start(self, targets: Sequence[Callable[[], None]]) -> None:
        """Run each target on a daemon thread ``voxline-<name>-<i>``.

        Does nothing when already started or closing (a close that came while the
        engine was loading its model wins).
        """
        if self._threads or self._closing:
            return
        for i, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"voxline-{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, request: R) -> list[R]:
        """Queue ``request`` for a worker; return the pending requests it superseded.

        The superseded requests have left the queue: their callers are the submitter's
        to tell.

        Raises:
            EngineError: the pool is closing, or ``max_pending`` requests are waiting.
        """
        with self._cond:
            if self._closing:
                raise EngineError(f"{self._label} engine is closed")
            if len(self._order) >= self.max_pending:
                raise EngineError(f"{self._label} queue is full ({self.max_pending} requests waiting)")
            superseded = self._order.submit(request)
            self._cond.notify()
        return superseded

    def take(self, block: bool = True) -> list[R] | None:
        """The calling worker's next batch (``order.next_batch``), or None: the worker must stop.

        With ``block`` it waits for a request; without, it returns ``[]`` when none is
        pending (for a worker that has work in hand). Once the pool is closing it
        returns None, after every pending request has been taken if ``close`` drains.
        """
        with self._cond:
            while block and not self._order and not self._closing:
                self._cond.wait()
            if self._closing and not (self._drain and self._order):
                return None
            return self._order.next_batch()

    def cancel(self, request: R) -> bool:
        """Take ``request`` out of the queue; False if it was not waiting (taken, or never queued)."""
        with self._cond:
            return self._order.cancel(request)

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Count the calling worker in ``busy_workers`` for the block's duration."""
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1

    async def close(
        self, *, dropped: Callable[[R], object], drain: bool = False, timeout_s: float = 10.0
    ) -> None:
        """Stop taking requests and wait for every worker thread to end (idempotent).

        With ``drain=False`` the pending requests leave the queue and are passed to
        ``dropped`` (to fail them) and ``stopping`` is set; with ``drain=True`` the
        workers take every pending request first. A drain once asked for stays.
        If cancelled while waiting, the workers still stop on their own.

        Raises:
            EngineError: a worker did not end within ``timeout_s`` seconds.
        """
        with self._cond:
            self._closing = True
            self._drain = self._drain or drain
            left = [] if self._drain else self._order.drain()
            if not self._drain:
                self.stopping.set()
            self._cond.notify_all()
        for request in left:
            dropped(request)
        for thread in list(self._threads):
            await asyncio.to_thread(thread.join, timeout_s)
            if thread.is_alive():
                raise EngineError(f"{self._label} worker did not stop within {timeout_s} s")
            self._threads.remove(thread)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any) -> bool:
    """Run ``callback(*args)`` on ``loop`` from any thread; False if the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        return False
    return True


def _unless_done(future: asyncio.Future[Any], setter: Callable[[Any], None], value: object) -> None:
    if not future.done():
        setter(value)


def resolve(future: asyncio.Future[T], result: T) -> None:
    """Set ``future``'s result, from any thread; no-op if it is done by then or its loop closed."""
    _call_soon(future.get_loop(), _unless_done, future, future.set_result, result)


def reject(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Set ``future``'s exception, from any thread; no-op if it is done by then or its loop closed."""
    _call_soon(future.get_loop(), _unless_done, future, future.set_exception, exc)


class ResultChannel(Generic[T]):
    """One request's results on their way from its worker thread to the caller's loop.

    Make it on the caller's loop. The worker ``send``s items and ``finish``es once;
    the caller reads through an ``EngineStream``. At most ``places`` items are on
    their way at once: a worker that far ahead of its reader waits for it
    (back-pressure). ``cancelled`` is set once the reader is gone: it stopped, its loop
    closed, or it left the worker waiting for a place ``stall_timeout_s`` seconds;
    items sent after that are dropped. One worker at a time sends on a channel.
    """

    def __init__(self, places: int, *, stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        if places < 1:
            raise ValueError(f"places must be at least 1, got {places}")
        self.cancelled = threading.Event()
        self.stall_timeout_s = stall_timeout_s
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[T | BaseException | None] = asyncio.Queue()  # bounded by _room
        self._room = threading.Semaphore(places)
        self._held = False  # the worker holds a free place for its next item
        self._waiting_since: float | None = None

    # -- worker side ----------------------------------------------------------------

    def has_room(self, wait_s: float = 0.0) -> bool:
        """True when ``send`` will not wait: a place is free (and kept for it), or the reader is gone.

        Waits up to ``wait_s`` seconds for a place. A worker with several requests in
        hand steps only those whose channels have room. A reader that has had no free
        place for ``stall_timeout_s`` is abandoned here (``cancelled`` is set).
        """
        if self._held or self.cancelled.is_set():
            return True
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        self._held = self._room.acquire(timeout=wait_s) if wait_s > 0 else self._room.acquire(False)
        if self._held:
            self._waiting_since = None
        elif time.monotonic() - self._waiting_since >= self.stall_timeout_s:
            self.cancelled.set()
        return self._held or self.cancelled.is_set()

    def send(self, item: T, stop: threading.Event | None = None) -> bool:
        """Hand ``item`` to the reader once it has a free place; False if dropped instead.

        The item is dropped when the reader is gone (``cancelled``, or its loop closed)
        or ``stop`` is set while waiting; both are looked at every 50 ms.
        """
        while not self.has_room(_POLL_S):
            if stop is not None and stop.is_set():
                return False
        if self.cancelled.is_set():
            return False
        self._held = False
        return self._post(item)

    def finish(self, exc: BaseException | None = None) -> None:
        """End the stream: the reader's iteration stops, or raises ``exc``. Needs no place."""
        self._post(exc)

    def cancel(self) -> None:
        """Tell the worker the reader is gone: it drops further items and should stop."""
        self.cancelled.set()

    def _post(self, item: T | BaseException | None) -> bool:
        if _call_soon(self._loop, self._items.put_nowait, item):
            return True
        self.cancelled.set()
        return False

    # -- reader side ----------------------------------------------------------------

    async def receive(self) -> T | BaseException | None:
        """The next item, the exception the worker finished with, or None at the end."""
        item = await self._items.get()
        if item is not None and not isinstance(item, BaseException):
            self._room.release()  # the worker may send one more
        return item


class EngineStream(Generic[T]):
    """The caller's async iterator over a ``ResultChannel``: its items in order.

    Iteration ends when the worker finishes, or raises (once) the exception it
    finished with. ``aclose()`` (idempotent), leaving an ``async with`` block, or
    cancelling the task waiting in ``__anext__`` cancels the channel (the worker stops
    before its next item; items not yet read are dropped) and calls ``withdraw`` (e.g.
    to take a request still waiting out of its pool). A stream that is
    garbage-collected cancels its channel too.
    """

    def __init__(self, channel: ResultChannel[T], withdraw: Callable[[], object] | None = None) -> None:
        self._channel = channel
        self._withdraw = withdraw
        self._done = False

    def __aiter__(self) -> EngineStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._channel.receive()
        except asyncio.CancelledError:
            self._stop()
            raise
        if item is None:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def _stop(self) -> None:
        if self._done:
            return
        self._done = True
        self._channel.cancel()
        if self._withdraw is not None:
            self._withdraw()

    async def aclose(self) -> None:
        """Stop the request (the worker stops before its next item). Idempotent."""
        self._stop()

    async def __aenter__(self) -> EngineStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop()

    def __del__(self) -> None:
        self._channel.cancel()
