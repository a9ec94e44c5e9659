"""Earliest-deadline-first batching with length buckets (sans-I/O).

``BatchScheduler`` holds the requests that sessions have submitted to a shared
engine and, each time the engine is free, picks the next batch. It does no I/O,
no waiting and no locking: it is the ``PendingOrder`` of the engine's
``worker_pool.WorkerPool``, which calls ``submit`` / ``cancel`` / ``next_batch`` under
its lock. The policy:

1. Priority: finals before partials, then the earliest ``deadline``, then the
   order of submission.
2. Length buckets: a request's bucket is ``ceil(audio_s / bucket_s)`` (at least 1).
   The most urgent request (the head) fixes the batch's bucket; the batch is filled,
   in priority order, with requests of the same or a smaller bucket. If room is left,
   requests one bucket up are added when the work they bring outweighs the padding
   they force onto the requests already taken (every request in a batch is padded to
   the batch's largest bucket).
3. Latest wins: a partial supersedes the pending (not yet taken) partial of the same
   ``session_key``; a final supersedes that session's pending partials too. The
   superseded requests are returned by ``submit`` so the engine can tell their callers
   (``voxline.errors.Superseded``).
   Finals are never superseded, and requests with ``session_key=None`` never are.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from voxline.errors import EngineError

__all__ = ["BatchScheduler", "Schedulable", "bucket_of"]


class Schedulable(Protocol):
    """What the scheduler reads from a request (it never changes a request)."""

    @property
    def final(self) -> bool:
        """True for a final (never dropped, runs before partials)."""
        ...

    @property
    def deadline(self) -> float:
        """When the result is due, ``time.monotonic()`` seconds."""
        ...

    @property
    def audio_s(self) -> float:
        """Length (s) the request is bucketed by: its audio plus any padding it needs."""
        ...

    @property
    def session_key(self) -> object:
        """The session a partial belongs to, for latest-wins (compared with ==); None opts out."""
        ...


R = TypeVar("R", bound=Schedulable)


def bucket_of(audio_s: float, bucket_s: float) -> int:
    """Length bucket of ``audio_s`` seconds: ``ceil(audio_s / bucket_s)``, at least 1."""
    # The small tolerance keeps 3.0000000001 s (float noise) in bucket 3.
    return max(1, math.ceil(audio_s / bucket_s - 1e-9))


@dataclass(order=True, slots=True)
class _Entry(Generic[R]):
    rank: tuple[bool, float, int]
    bucket: int = field(compare=False)
    request: R = field(compare=False)


class BatchScheduler(Generic[R]):
    """Sans-I/O earliest-deadline-first batcher with length bucketing.

    ``max_batch`` bounds the requests per batch; ``bucket_s`` (s) is the bucket width
    that lengths are rounded up to. ``max_pending`` bounds the queue: ``submit``
    raises ``EngineError`` beyond it (back-pressure belongs to the caller).
    Not thread-safe: the owner serialises calls.
    """

    def __init__(self, max_batch: int, bucket_s: float, *, max_pending: int = 1024) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if bucket_s <= 0:
            raise ValueError("bucket_s must be positive")
        self.max_batch = max_batch
        self.bucket_s = bucket_s
        self.max_pending = max_pending
        self._pending: list[_Entry[R]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Number of pending requests."""
        return len(self._pending)

    def bucket(self, audio_s: float) -> int:
        """Bucket index of a length in seconds (see ``bucket_of``)."""
        return bucket_of(audio_s, self.bucket_s)

    def submit(self, request: R) -> list[R]:
        """Queue ``request``; return the pending requests it supersedes (now removed).

        Raises:
            EngineError: ``max_pending`` requests are already queued.
        """
        superseded: list[R] = []
        key = request.session_key
        if key is not None:
            keep: list[_Entry[R]] = []
            for entry in self._pending:
                old = entry.request
                if old.session_key == key and not old.final:
                    superseded.append(old)
                else:
                    keep.append(entry)
            self._pending = keep
        if len(self._pending) >= self.max_pending:
            raise EngineError(f"engine queue is full ({self.max_pending} pending requests)")
        rank = (not request.final, request.deadline, next(self._seq))
        self._pending.append(_Entry(rank, self.bucket(request.audio_s), request))
        return superseded

    def cancel(self, request: R) -> bool:
        """Remove a pending request; return False if it was not pending (taken or unknown)."""
        for i, entry in enumerate(self._pending):
            if entry.request is request:
                del self._pending[i]
                return True
        return False

    def drain(self) -> list[R]:
        """Remove and return every pending request, in priority order."""
        entries = sorted(self._pending)
        self._pending = []
        return [e.request for e in entries]

    def next_batch(self) -> list[R]:
        """Take the next batch (priority order, head first); empty when nothing is pending."""
        if not self._pending:
            return []
        ordered = sorted(self._pending)
        head = ordered[0]
        top = head.bucket
        chosen = [e for e in ordered if e.bucket <= top][: self.max_batch]
        room = self.max_batch - len(chosen)
        if room > 0:
            up = [e for e in ordered if e.bucket == top + 1][:room]
            # Padding added to those already chosen (one bucket each) against the
            # useful work the larger requests bring (their whole length).
            if up and len(chosen) <= len(up) * (top + 1):
                chosen = sorted(chosen + up)
        taken = {id(e) for e in chosen}
        self._pending = [e for e in self._pending if id(e) not in taken]
        return [e.request for e in chosen]

    def padded_bucket(self, batch: list[R]) -> int:
        """The bucket a batch is padded to: the largest bucket among its requests."""
        return max((self.bucket(r.audio_s) for r in batch), default=1)
