"""Runtime cost: CPU µs per frame per stage, voxline's graph vs a bare asyncio.Queue chain.

Both chains carry the same 20 ms float32 audio frames through N pass-through stages on
bounded edges (64 frames). Two regimes:

- burst: F frames pushed as fast as back-pressure allows;
- paced: S sessions, each fed one frame every 20 ms (real time) for D seconds.

The figure is process CPU time / (frames × stages), median over repeats, for both
runtimes in the same run, and their ratio. The last line of stdout is one JSON object.

    python bench/runtime.py --json [--stages 5] [--frames 5000] [--sessions 50] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time

import numpy as np

from voxline.pipeline.edge import FullPolicy
from voxline.pipeline.frames import AudioFrame, ControlFrame, ControlKind
from voxline.pipeline.graph import Graph
from voxline.pipeline.stage import Stage

FRAME_SAMPLES = 320  # 20 ms at 16 kHz
FRAME_PERIOD_S = 0.020
EDGE_FRAMES = 64


def _frames(n: int) -> list[AudioFrame]:
    samples = np.zeros(FRAME_SAMPLES, dtype=np.float32)
    return [AudioFrame(samples=samples, sample_rate_hz=16000, pts_samples=i * FRAME_SAMPLES) for i in range(n)]


class _Sink(Stage):
    async def process(self, frame) -> None:  # type: ignore[no-untyped-def]
        pass


def _voxline_chain(n_stages: int) -> tuple[Graph, object]:
    graph = Graph("bench")
    stages = [Stage(f"pass{i}") for i in range(n_stages)]
    sink = _Sink("sink")
    inbox = graph.input_to(stages[0], maxsize=EDGE_FRAMES, policy=FullPolicy.BLOCK)
    graph.chain(*stages, sink, maxsize=EDGE_FRAMES)
    return graph, inbox


async def _voxline_burst(n_stages: int, frames: list[AudioFrame]) -> float:
    graph, inbox = _voxline_chain(n_stages)
    await graph.start()
    started = time.process_time()
    for frame in frames:
        if not inbox.put_nowait(frame):  # type: ignore[attr-defined]
            await inbox.put(frame)  # type: ignore[attr-defined]
    await inbox.put(ControlFrame(kind=ControlKind.END_OF_STREAM))  # type: ignore[attr-defined]
    await graph.wait(60)
    return time.process_time() - started


_END = object()


def _bare_chain(n_stages: int) -> tuple[asyncio.Queue[object], list[asyncio.Task[None]]]:
    """A chain of ``asyncio.Queue``s with one pass-through task per stage and a sink.

    Returns the head queue and the tasks; putting ``_END`` ends every task.
    """
    queues: list[asyncio.Queue[object]] = [asyncio.Queue(EDGE_FRAMES) for _ in range(n_stages + 1)]

    async def passthrough(inq: asyncio.Queue[object], outq: asyncio.Queue[object]) -> None:
        while True:
            item = await inq.get()
            await outq.put(item)
            if item is _END:
                return

    async def sink(inq: asyncio.Queue[object]) -> None:
        while (await inq.get()) is not _END:
            pass

    tasks = [asyncio.create_task(passthrough(queues[i], queues[i + 1])) for i in range(n_stages)]
    tasks.append(asyncio.create_task(sink(queues[-1])))
    return queues[0], tasks


async def _bare_burst(n_stages: int, frames: list[AudioFrame]) -> float:
    head, tasks = _bare_chain(n_stages)
    started = time.process_time()
    for frame in frames:
        await head.put(frame)
    await head.put(_END)
    await asyncio.gather(*tasks)
    return time.process_time() - started


async def _paced(kind: str, n_stages: int, sessions: int, seconds: float) -> tuple[float, int]:
    n_frames = int(seconds / FRAME_PERIOD_S)
    frames = _frames(n_frames)

    async def feed(put) -> None:  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        for i, frame in enumerate(frames):
            await put(frame)
            delay = t0 + (i + 1) * FRAME_PERIOD_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    started = time.process_time()
    feeders = []
    if kind == "voxline":
        graphs = []
        for _ in range(sessions):
            graph, inbox = _voxline_chain(n_stages)
            await graph.start()
            graphs.append(graph)
            feeders.append(feed(inbox.put))  # type: ignore[attr-defined]
        await asyncio.gather(*feeders)
        for graph in graphs:
            await graph.drain(10)
    else:
        all_tasks: list[asyncio.Task[None]] = []
        heads = []
        for _ in range(sessions):
            head, tasks = _bare_chain(n_stages)
            all_tasks += tasks
            heads.append(head)
            feeders.append(feed(head.put))
        await asyncio.gather(*feeders)
        for head in heads:
            await head.put(_END)
        await asyncio.gather(*all_tasks)
    return time.process_time() - started, n_frames * sessions


def _us_per_frame_stage(cpu_s: float, frames: int, n_stages: int) -> float:
    return cpu_s / (frames * n_stages) * 1e6


async def _no_op_paced(sessions: int, seconds: float) -> float:
    """CPU of the pacing loop alone (no stages), subtracted from both paced figures."""
    n_frames = int(seconds / FRAME_PERIOD_S)
    frames = _frames(n_frames)

    async def feed() -> None:
        t0 = time.monotonic()
        for i, _frame in enumerate(frames):
            delay = t0 + (i + 1) * FRAME_PERIOD_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    started = time.process_time()
    await asyncio.gather(*(feed() for _ in range(sessions)))
    return time.process_time() - started


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Measure both runtimes in both regimes; returns the result object."""
    frames = _frames(args.frames)
    burst: dict[str, list[float]] = {"voxline": [], "bare_asyncio": []}
    gc.collect()
    for _ in range(args.repeats):
        burst["voxline"].append(_us_per_frame_stage(await _voxline_burst(args.stages, frames), len(frames), args.stages + 1))
        burst["bare_asyncio"].append(_us_per_frame_stage(await _bare_burst(args.stages, frames), len(frames), args.stages + 1))
    paced: dict[str, list[float]] = {"voxline": [], "bare_asyncio": []}
    for _ in range(max(1, args.repeats // 2)):
        base = await _no_op_paced(args.sessions, args.seconds)
        for kind in ("voxline", "bare"):
            cpu, n = await _paced(kind, args.stages, args.sessions, args.seconds)
            key = "voxline" if kind == "voxline" else "bare_asyncio"
            paced[key].append(_us_per_frame_stage(max(cpu - base, 0.0), n, args.stages + 1))

    def summary(values: dict[str, list[float]]) -> dict[str, float]:
        vox = statistics.median(values["voxline"])
        bare = statistics.median(values["bare_asyncio"])
        return {
            "voxline_us_per_frame_stage": round(vox, 3),
            "bare_asyncio_us_per_frame_stage": round(bare, 3),
            "ratio": round(vox / bare, 3) if bare else float("nan"),
        }

    burst_summary = summary(burst)
    paced_summary = summary(paced)
    return {
        "bench": "runtime",
        "stages": args.stages + 1,
        "frames": args.frames,
        "repeats": args.repeats,
        "paced_sessions": args.sessions,
        "paced_seconds": args.seconds,
        "burst": burst_summary,
        "paced": paced_summary,
        "target_us_per_frame_stage": 5.0,
        "target_met": max(burst_summary["voxline_us_per_frame_stage"], paced_summary["voxline_us_per_frame_stage"]) <= 5.0,
    }


def main() -> None:
    """Parse arguments, run the benchmark, print the JSON object last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=5, help="pass-through stages (a sink is added)")
    parser.add_argument("--frames", type=int, default=5000, help="frames per burst run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=50, help="sessions in the paced run")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the paced run")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if not args.json:
        for regime in ("burst", "paced"):
            print(f"{regime}: {result[regime]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
