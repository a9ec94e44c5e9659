"""Graphs: stages wired by edges, started and stopped as one unit.

A ``Graph`` owns its stages' tasks. Transports talk to it through edges it hands out:
``input_to(stage)`` returns the edge a transport pushes frames into, ``output_from(stage)``
an edge the transport reads (fan-out: a stage may feed several outputs and stages).

Two ways to stop, both leave no task behind:

- ``drain(timeout_s)``: push end of stream into every input and wait until each stage
  has finished what it accepted (the ASR stage sends its last final) and ended. If that
  takes longer than ``timeout_s`` the graph is cancelled.
- ``cancel()``: stop every stage now.

If a stage raises, the graph fails as a unit: ``error`` is set (a ``StageFailed``
chained to the cause), an ``ErrorFrame`` goes to every output edge behind what was
already there, the other stages are cancelled, and the outputs are closed. Nothing
outside the graph is affected.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from voxline.errors import GraphClosed, PipelineError, StageFailed

from .edge import Edge, FullPolicy
from .frames import ControlFrame, ControlKind, ErrorFrame, Frame
from .stage import Stage


class Graph:
    """A session's dataflow graph: stages, the edges between them, and their tasks."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.stages: list[Stage] = []
        self.edges: list[Edge] = []
        self.inputs: list[Edge] = []
        self.outputs: list[Edge] = []
        self.error: StageFailed | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopped = asyncio.Event()

    # -- wiring -------------------------------------------------------------------

    def add(self, stage: Stage) -> Stage:
        """Add ``stage`` to the graph (once); returns it."""
        if self._started:
            raise PipelineError("cannot add stages to a running graph")
        if stage in self.stages:
            raise PipelineError(f"stage {stage.name!r} is already in the graph")
        if any(s.name == stage.name for s in self.stages):
            raise PipelineError(f"two stages are named {stage.name!r}")
        self.stages.append(stage)
        return stage

    def _edge(self, name: str, maxsize: int, policy: FullPolicy, max_age_ms: float | None) -> Edge:
        edge = Edge(name, maxsize=maxsize, policy=policy, max_age_ms=max_age_ms)
        self.edges.append(edge)
        return edge

    def _attach_inbox(self, stage: Stage, edge: Edge) -> None:
        if stage not in self.stages:
            self.add(stage)
        if stage.inbox is not None:
            raise PipelineError(f"stage {stage.name!r} already has an inbox (fan-in is not supported)")
        stage.inbox = edge

    def connect(
        self,
        src: Stage,
        dst: Stage,
        *,
        maxsize: int = 64,
        policy: FullPolicy = FullPolicy.BLOCK,
        max_age_ms: float | None = None,
    ) -> Edge:
        """Wire ``src``'s output to ``dst``'s inbox through a new bounded edge."""
        if src not in self.stages:
            self.add(src)
        edge = self._edge(f"{src.name}->{dst.name}", maxsize, policy, max_age_ms)
        self._attach_inbox(dst, edge)
        src.outboxes.append(edge)
        return edge

    def chain(self, *stages: Stage, maxsize: int = 64, policy: FullPolicy = FullPolicy.BLOCK) -> None:
        """Connect ``stages`` one after another with edges of the same shape."""
        for src, dst in itertools.pairwise(stages):
            self.connect(src, dst, maxsize=maxsize, policy=policy)

    def input_to(
        self,
        stage: Stage,
        *,
        maxsize: int = 64,
        policy: FullPolicy = FullPolicy.BLOCK,
        max_age_ms: float | None = None,
    ) -> Edge:
        """Create the edge a transport pushes frames into, feeding ``stage``."""
        edge = self._edge(f"input->{stage.name}", maxsize, policy, max_age_ms)
        self._attach_inbox(stage, edge)
        self.inputs.append(edge)
        return edge

    def output_from(
        self,
        stage: Stage,
        *,
        name: str = "output",
        maxsize: int = 256,
        policy: FullPolicy = FullPolicy.BLOCK,
        max_age_ms: float | None = None,
    ) -> Edge:
        """Create an edge a transport reads, fed by ``stage`` (in addition to its others)."""
        if stage not in self.stages:
            self.add(stage)
        edge = self._edge(f"{stage.name}->{name}", maxsize, policy, max_age_ms)
        stage.outboxes.append(edge)
        self.outputs.append(edge)
        return edge

    # -- lifecycle ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start`` and the moment every stage task has ended."""
        return self._started and not self._stopped.is_set()

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The stage tasks (for tests that check nothing is left running)."""
        return tuple(self._tasks)

    async def start(self) -> None:
        """Start one task per stage. Idempotent."""
        if self._started:
            return
        for stage in self.stages:
            if stage.inbox is None:
                raise PipelineError(f"stage {stage.name!r} has no inbox")
        self._started = True
        for stage in self.stages:
            task = asyncio.create_task(stage.run(), name=f"{self.name}:{stage.name}")
            task.add_done_callback(self._on_task_done)
            self._tasks.append(task)
        if not self._tasks:
            self._stopped.set()

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self.error is None:
            exc = task.exception()
            stage_name = task.get_name().split(":", 1)[-1]
            for stage in self.stages:
                if stage.name == stage_name:
                    stage.stats.errors += 1
            error = StageFailed(stage_name, f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self.error = error
            self._fail_outputs(ErrorFrame(code="stage_failed", message=str(error), stage=stage_name))
            for other in self._tasks:
                if not other.done():
                    other.cancel()
        if all(t.done() for t in self._tasks):
            self._stopped.set()

    def _fail_outputs(self, frame: ErrorFrame) -> None:
        for edge in self.outputs:
            edge.push_terminal(frame)  # behind the frames already made: they are not lost
            edge.close()
        for edge in self.inputs:
            edge.close()

    async def wait(self, timeout_s: float | None = None) -> None:
        """Wait until every stage task has ended (or ``timeout_s`` passes: TimeoutError)."""
        if not self._started:
            return
        async with asyncio.timeout(timeout_s):
            await self._stopped.wait()

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Finish accepted work and stop; returns True if it drained, False if cancelled.

        Pushes end of stream into every input (waiting for room), then waits for all
        stages to end. Past ``timeout_s`` the graph is cancelled. Cancelling ``drain``
        itself cancels the graph too.
        """
        if not self._started:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                for edge in self.inputs:
                    if not edge.closed:
                        await edge.put(ControlFrame(kind=ControlKind.END_OF_STREAM))
                await self._stopped.wait()
        except TimeoutError:
            await self.cancel()
            return False
        except PipelineError:
            # An input closed under us: a stage failed while we were draining.
            await self.cancel()
            return False
        except BaseException:
            await self.cancel()
            raise
        return self.error is None

    async def cancel(self) -> None:
        """Stop every stage now and wait for their tasks to end. Idempotent."""
        for task in self._tasks:
            if not task.done():
                task.cancel()
        for edge in self.edges:
            edge.close()
        if self._tasks:
            # Shielded: if our caller is cancelled too, the stages still finish stopping.
            await asyncio.shield(asyncio.gather(*self._tasks, return_exceptions=True))
        self._stopped.set()

    async def __aenter__(self) -> Graph:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()


async def frames_until_end(output: Edge) -> AsyncIterator[Frame]:
    """The frames a graph puts on ``output`` until its end of stream (or the edge closes).

    Raises:
        PipelineError: the graph sent an ``ErrorFrame`` (a stage failed).
    """
    while True:
        try:
            frame = await output.get()
        except GraphClosed:
            return
        if isinstance(frame, ErrorFrame):
            raise PipelineError(frame.message)
        if isinstance(frame, ControlFrame) and frame.kind is ControlKind.END_OF_STREAM:
            return
        yield frame
