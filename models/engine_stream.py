"""The async iterator an engine's worker thread feeds: one request's results, in order.

A worker thread puts items on the request's ``asyncio.Queue`` (through
``loop.call_soon_threadsafe``), then ``None`` when done, or an exception to raise.
The caller iterates. ``aclose()`` (idempotent), leaving an ``async with`` block, or
cancelling the task waiting in ``__anext__`` sets the request's ``cancelled`` event,
which the worker checks between items; items not yet taken are dropped.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class EngineStream(Generic[T]):
    """Iterates ``out`` until ``None``; raises an exception item; stops via ``cancelled``."""

    def __init__(self, out: asyncio.Queue[T | BaseException | None], cancelled: threading.Event) -> None:
        self._out = out
        self._cancelled = cancelled
        self._done = False

    def __aiter__(self) -> EngineStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._out.get()
        except asyncio.CancelledError:
            self._stop()
            raise
        if item is None:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self._taken(item)
        return item

    def _taken(self, item: T) -> None:
        """Hook: the caller took ``item`` (e.g. to give the worker room for another)."""

    def _stop(self) -> None:
        self._done = True
        self._cancelled.set()

    async def aclose(self) -> None:
        """Stop the request (the worker stops before its next item). Idempotent."""
        self._stop()

    async def __aenter__(self) -> EngineStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop()

    def __del__(self) -> None:
        self._cancelled.set()
