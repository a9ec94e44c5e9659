"""Graphs: wiring, fan-out, drain and cancel, crash isolation, no task left behind."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from note_frame import Note

from voxline.errors import PipelineError
from voxline.pipeline.frames import ControlFrame, ControlKind, ErrorFrame, Frame
from voxline.pipeline.graph import Graph
from voxline.pipeline.metrics import RuntimeMetrics
from voxline.pipeline.stage import Stage


class Upper(Stage):
    async def process(self, frame: Frame) -> None:
        if isinstance(frame, Note):
            frame = dataclasses.replace(frame, text=frame.text.upper())
        await self.emit(frame)


class Slow(Stage):
    """Holds each frame a while: drain must still deliver every one."""

    async def process(self, frame: Frame) -> None:
        await asyncio.sleep(0.01)
        await self.emit(frame)


class Exploding(Stage):
    async def process(self, frame: Frame) -> None:
        if isinstance(frame, Note) and frame.text == "boom":
            raise ValueError("bad frame")
        await self.emit(frame)


class Stuck(Stage):
    async def process(self, frame: Frame) -> None:
        await asyncio.Event().wait()


class Closing(Stage):
    closed = 0

    async def on_close(self) -> None:
        type(self).closed += 1


async def collect(edge) -> list[Frame]:  # type: ignore[no-untyped-def]
    out = []
    while True:
        frame = await edge.get()
        out.append(frame)
        if isinstance(frame, ControlFrame | ErrorFrame):
            if isinstance(frame, ErrorFrame) or frame.kind is ControlKind.END_OF_STREAM:
                return out


def texts(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, Note)]


async def test_drain_delivers_every_accepted_frame_through_a_slow_stage_then_stops() -> None:
    graph = Graph("g")
    slow, upper = Slow("slow"), Upper("upper")
    inbox = graph.input_to(slow, maxsize=4)
    graph.connect(slow, upper, maxsize=2)
    out = graph.output_from(upper)
    await graph.start()
    reader = asyncio.create_task(collect(out))
    for i in range(20):
        await inbox.put(Note(text=f"w{i}"))
    assert await graph.drain(timeout_s=5)
    got = await asyncio.wait_for(reader, 5)
    assert texts(got) == [f"W{i}" for i in range(20)]
    assert all(t.done() for t in graph.tasks)


async def test_fan_out_gives_every_consumer_every_frame() -> None:
    graph = Graph("g")
    upper = Upper("upper")
    inbox = graph.input_to(upper)
    first, second = graph.output_from(upper, name="a"), graph.output_from(upper, name="b")
    await graph.start()
    for word in ("one", "two"):
        await inbox.put(Note(text=word))
    await graph.drain(5)
    assert texts(await collect(first)) == texts(await collect(second)) == ["ONE", "TWO"]


async def test_a_stage_that_raises_ends_only_its_own_session_with_an_error_frame() -> None:
    broken, healthy = Graph("broken"), Graph("healthy")
    b_in = broken.input_to(Exploding("explode"))
    b_out = broken.output_from(broken.stages[0])
    h_in = healthy.input_to(Upper("upper"))
    h_out = healthy.output_from(healthy.stages[0])
    await broken.start()
    await healthy.start()
    await b_in.put(Note(text="boom"))
    frames = await asyncio.wait_for(collect(b_out), 2)
    assert isinstance(frames[-1], ErrorFrame) and "bad frame" in frames[-1].message
    await asyncio.wait_for(broken.wait(), 2)
    assert broken.error is not None and broken.error.stage == "explode"
    assert isinstance(broken.error.__cause__, ValueError)
    await h_in.put(Note(text="still here"))
    await healthy.drain(2)
    assert texts(await collect(h_out)) == ["STILL HERE"]


async def test_cancel_stops_a_stuck_stage_and_runs_every_on_close_once() -> None:
    Closing.closed = 0
    graph = Graph("g")
    stuck, closing = Stuck("stuck"), Closing("closing")
    inbox = graph.input_to(closing)
    graph.connect(closing, stuck)
    await graph.start()
    await inbox.put(Note(text="x"))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(graph.cancel(), 2)
    await graph.cancel()  # idempotent
    assert all(t.done() for t in graph.tasks)
    assert Closing.closed == 1


async def test_drain_past_its_timeout_cancels_the_graph_and_says_so() -> None:
    graph = Graph("g")
    stuck = Stuck("stuck")
    inbox = graph.input_to(stuck)
    await graph.start()
    await inbox.put(Note(text="x"))
    assert await graph.drain(timeout_s=0.1) is False
    assert all(t.done() for t in graph.tasks)


async def test_no_task_is_left_running_after_many_sessions_end() -> None:
    before = len(asyncio.all_tasks())
    for i in range(30):
        graph = Graph(f"s{i}")
        upper = Upper("upper")
        inbox = graph.input_to(upper)
        graph.output_from(upper)
        await graph.start()
        await inbox.put(Note(text="hi"))
        if i % 2:
            await graph.drain(2)
        else:
            await graph.cancel()
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


async def test_wiring_mistakes_are_refused_before_start() -> None:
    graph = Graph("g")
    a, b = Upper("a"), Upper("b")
    graph.connect(a, b)
    with pytest.raises(PipelineError):
        graph.connect(Upper("c"), b)  # fan-in
    with pytest.raises(PipelineError):
        graph.add(Upper("a"))  # duplicate name
    with pytest.raises(PipelineError):
        await graph.start()  # a has no inbox


async def test_metrics_sum_stage_and_edge_counters_across_live_and_retired_graphs() -> None:
    metrics = RuntimeMetrics()
    for _ in range(2):
        graph = Graph("g")
        upper = Upper("upper")
        inbox = graph.input_to(upper)
        graph.output_from(upper)
        metrics.track(graph)
        await graph.start()
        for _ in range(3):
            await inbox.put(Note(text="x"))
        await graph.drain(2)
        metrics.retire(graph)
    snap = metrics.snapshot()
    assert snap.stages["upper"].frames == 6
    assert snap.edges["input->upper"].frames_in == 8  # 3 frames + end of stream, twice


async def test_frames_made_before_a_stage_failed_still_reach_the_consumer_before_the_error() -> None:
    graph = Graph("g")
    explode = Exploding("explode")
    inbox = graph.input_to(explode)
    out = graph.output_from(explode, maxsize=2)
    await graph.start()
    for text in ("a", "b", "boom"):
        await inbox.put(Note(text=text))
    await asyncio.wait_for(graph.wait(), 2)
    frames = await asyncio.wait_for(collect(out), 2)
    assert texts(frames) == ["a", "b"] and isinstance(frames[-1], ErrorFrame)
