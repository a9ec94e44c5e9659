"""Edges: bounded, policy-declaring queues between stages.

An ``Edge`` holds at most ``maxsize`` data frames. What happens when it is full is
declared up front by its ``FullPolicy``:

- ``BLOCK``: the producer waits (back-pressure). For text and transcripts that must
  not be lost.
- ``DROP_OLDEST``: the oldest queued frame is discarded. For live audio, where a late
  frame is worth less than a fresh one.
- ``LATEST_WINS``: the queue collapses to the newest frame. For partial transcripts.

Urgent control frames (``FLUSH``: a stage waking its own loop) overtake queued data:
they wait in a separate lane that ``get`` empties first. Other control frames (speech start/stop, end of
stream) keep their order relative to data, because their meaning depends on it. No
policy ever drops a control frame: only data frames are dropped.

Each edge keeps plain counters (``EdgeStats``): frames in/out, the deepest it got,
producer waits, drops and frames older than ``max_age_ms`` when taken (budget misses).
The hot path is a deque and one future per waiting consumer, with no locks: an edge
belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from dataclasses import dataclass

from voxline.errors import GraphClosed

from .frames import ControlFrame, ControlKind, Frame

_URGENT = frozenset({ControlKind.FLUSH})


class FullPolicy(enum.Enum):
    """What an edge does when a data frame arrives and it is full."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    LATEST_WINS = "latest_wins"


@dataclass(slots=True)
class EdgeStats:
    """Counters of one edge; read by metrics, written only by the edge."""

    frames_in: int = 0
    frames_out: int = 0
    max_depth: int = 0
    waits: int = 0
    drops: int = 0
    budget_misses: int = 0
    wait_s_total: float = 0.0


class Edge:
    """A bounded queue of frames from one stage (or transport) to the next.

    ``maxsize`` bounds data frames (urgent control frames are never dropped and do not
    count). ``max_age_ms`` is the latency budget: a frame older than that when taken
    counts as a budget miss (and, for the dropping policies, is discarded unless it is
    the last one queued). ``close()`` wakes every waiter; ``get`` on a closed, empty
    edge raises ``GraphClosed``.
    """

    __slots__ = (
        "_closed",
        "_data",
        "_getter",
        "_max_age_s",
        "_putters",
        "_urgent",
        "maxsize",
        "name",
        "policy",
        "stats",
    )

    def __init__(
        self,
        name: str,
        maxsize: int = 64,
        policy: FullPolicy = FullPolicy.BLOCK,
        max_age_ms: float | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("an edge holds at least one frame")
        self.name = name
        self.maxsize = maxsize
        self.policy = policy
        self._max_age_s = None if max_age_ms is None else max_age_ms / 1000.0
        self._data: deque[tuple[float, Frame]] = deque()
        self._urgent: deque[Frame] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.stats = EdgeStats()

    def __len__(self) -> int:
        return len(self._data) + len(self._urgent)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def put_nowait(self, frame: Frame) -> bool:
        """Queue ``frame`` without waiting; returns False if a BLOCK edge is full.

        On the dropping policies it always succeeds, discarding older data as declared.
        Raises ``GraphClosed`` if the edge is closed.
        """
        if self._closed:
            raise GraphClosed(f"edge {self.name!r} is closed")
        if type(frame) is ControlFrame and frame.kind in _URGENT:
            self._urgent.append(frame)
        else:
            data = self._data
            if len(data) >= self.maxsize:
                policy = self.policy
                if policy is FullPolicy.BLOCK:
                    return False
                self._drop_data(all_of_it=policy is FullPolicy.LATEST_WINS)
            data.append((time.perf_counter(), frame))
            depth = len(data)
            if depth > self.stats.max_depth:
                self.stats.max_depth = depth
        self.stats.frames_in += 1
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        return True

    async def put(self, frame: Frame) -> None:
        """Queue ``frame``, waiting for room if a BLOCK edge is full.

        Cancellation while waiting leaves the frame unqueued. Raises ``GraphClosed`` if
        the edge is or becomes closed.
        """
        while not self.put_nowait(frame):
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._putters.append(waiter)
            self.stats.waits += 1
            started = time.perf_counter()
            try:
                await waiter
            finally:
                self.stats.wait_s_total += time.perf_counter() - started
                if waiter in self._putters:
                    self._putters.remove(waiter)

    def get_nowait(self) -> Frame | None:
        """Take the next frame (urgent control first), or None when empty."""
        if self._urgent:
            self.stats.frames_out += 1
            return self._urgent.popleft()
        data = self._data
        if not data:
            return None
        enqueued, frame = data.popleft()
        if self._max_age_s is not None:
            now = time.perf_counter()
            while now - enqueued > self._max_age_s:
                self.stats.budget_misses += 1
                if self.policy is FullPolicy.BLOCK or not data or isinstance(frame, ControlFrame):
                    break
                self.stats.drops += 1
                enqueued, frame = data.popleft()
        self.stats.frames_out += 1
        if self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
        return frame

    async def get(self) -> Frame:
        """Wait for and take the next frame (urgent control frames first).

        Raises ``GraphClosed`` when the edge is closed and empty. Only one consumer
        may wait at a time. Cancellation while waiting takes nothing.
        """
        while True:
            frame = self.get_nowait()
            if frame is not None:
                return frame
            if self._closed:
                raise GraphClosed(f"edge {self.name!r} is closed")
            getter = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None

    def close(self) -> None:
        """Stop accepting frames and wake all waiters; queued frames can still be taken.

        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)
        self._getter = None
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)

    def _drop_data(self, *, all_of_it: bool) -> int:
        """Drop the oldest data frame (or every one), keeping control frames in place."""
        data = self._data
        dropped = 0
        kept: list[tuple[float, Frame]] = []
        while data:
            item = data.popleft()
            if isinstance(item[1], ControlFrame) or (dropped and not all_of_it):
                kept.append(item)
            else:
                dropped += 1
        data.extend(kept)
        self.stats.drops += dropped
        return dropped

    def push_terminal(self, frame: Frame) -> None:
        """Queue a last frame (an error) behind everything queued, even past ``maxsize``.

        Used when a graph fails, so frames already made still reach the consumer first.
        """
        if self._closed:
            return
        self._data.append((time.perf_counter(), frame))
        self.stats.frames_in += 1
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

