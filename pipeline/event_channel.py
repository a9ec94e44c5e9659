"""A session's outgoing event stream: bounded, never blocking the publisher.

The agent publishes JSON-ready dicts (transcripts, what the agent says, interruption
outcomes, per-turn latency) from the graph and from the playout side; a transport
(WebRTC data channel, the CLI, a test) reads them. When the reader falls behind by
``maxsize`` events, the oldest are dropped and counted: events inform, they must
never stall the audio path. ``close`` ends the reader's iteration after what is queued.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

Event = dict[str, Any]


class EventChannel:
    """Publish-without-waiting, read-in-order event queue with drop-oldest overflow."""

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._events: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def publish(self, event: Event) -> None:
        """Queue ``event`` (dropping the oldest if full); ignored after ``close``."""
        if self._closed:
            return
        if len(self._events) >= self.maxsize:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)
        self._ready.set()

    def close(self) -> None:
        """No more events; readers finish what is queued, then stop."""
        self._closed = True
        self._ready.set()

    def drain_nowait(self) -> list[Event]:
        """Take every queued event now."""
        events = list(self._events)
        self._events.clear()
        if not self._closed:
            self._ready.clear()
        return events

    async def get(self) -> Event | None:
        """The next event, waiting for one; None once closed and empty."""
        while not self._events:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event


def unknown_client_event(event: Any, known: tuple[str, ...]) -> Event:
    """The ``error`` event answering a client message of a type the session does not take."""
    kind = event.get("type") if isinstance(event, dict) else None
    return {
        "type": "error", "code": "unknown_event",
        "message": f"this session takes {', '.join(known) or 'no client events'}; got type {kind!r}",
    }
