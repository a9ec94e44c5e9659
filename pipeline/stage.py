"""Stages: the unit of composition in a graph.

A stage reads frames from one inbox and writes to any number of outboxes (fan-out:
every outbox gets every emitted frame). Subclasses override ``process``; the default
passes frames through unchanged, so a user stage is a few lines::

    class Shout(Stage):
        async def process(self, frame):
            if isinstance(frame, TranscriptFrame):
                frame = dataclasses.replace(frame, words=tuple(
                    dataclasses.replace(w, text=w.text.upper()) for w in frame.words))
            await self.emit(frame)

Contract:

- ``process`` must not block the event loop; model work goes to an engine and is
  awaited.
- End of stream (``ControlKind.END_OF_STREAM``) reaches ``on_end_of_stream``, which
  finishes accepted work (the drain path), forwards the frame and ends the stage.
- An exception escaping ``process`` fails the stage; its graph turns that into one
  error event for the session (crash isolation), other sessions are unaffected.
- ``on_close`` runs exactly once when the stage's task ends, on every path (drain,
  cancel, failure); it releases what ``on_start`` took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from voxline.errors import GraphClosed

from .edge import Edge
from .frames import ControlFrame, ControlKind, Frame


@dataclass(slots=True)
class StageStats:
    """Counters of one stage: frames handled and time spent in ``process`` (s)."""

    frames: int = 0
    busy_s_total: float = 0.0
    busy_s_max: float = 0.0
    errors: int = 0


class Stage:
    """A streaming step of a graph: one inbox, any number of outboxes."""

    kind: str = "stage"

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()
        self.inbox: Edge | None = None
        self.outboxes: list[Edge] = []
        self.stats = StageStats()

    async def on_start(self) -> None:
        """Called once before the first frame; acquire per-session resources here."""

    async def process(self, frame: Frame) -> None:
        """Handle one frame; the default forwards it unchanged."""
        await self.emit(frame)

    async def on_end_of_stream(self, frame: ControlFrame) -> None:
        """Finish accepted work, then forward end of stream. Override to flush state."""
        await self.emit(frame)

    async def on_close(self) -> None:
        """Called once when the stage stops, whatever the reason. Must not raise."""

    async def emit(self, frame: Frame) -> None:
        """Send ``frame`` to every outbox, waiting on full BLOCK edges (back-pressure)."""
        for edge in self.outboxes:
            if not edge.put_nowait(frame):
                await edge.put(frame)

    async def run(self) -> None:
        """The stage's loop: take frames until end of stream or a closed inbox.

        Cancelled midway, it stops at once; ``on_close`` still runs.
        """
        inbox = self.inbox
        if inbox is None:
            raise RuntimeError(f"stage {self.name!r} has no inbox; connect it first")
        stats = self.stats
        perf_counter = time.perf_counter
        process = self.process
        try:
            await self.on_start()
            while True:
                frame = inbox.get_nowait()
                if frame is None:
                    try:
                        frame = await inbox.get()
                    except GraphClosed:
                        return
                if type(frame) is ControlFrame and frame.kind is ControlKind.END_OF_STREAM:
                    await self.on_end_of_stream(frame)
                    return
                started = perf_counter()
                await process(frame)
                busy = perf_counter() - started
                stats.frames += 1
                stats.busy_s_total += busy
                if busy > stats.busy_s_max:
                    stats.busy_s_max = busy
        finally:
            await self.on_close()
