"""Edges: bounded queues with declared full-policies, overtaking control, budgets."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from note_frame import Note

from voxline.errors import GraphClosed
from voxline.pipeline.edge import Edge, FullPolicy
from voxline.pipeline.frames import AudioFrame, ControlFrame, ControlKind


def audio(i: int) -> AudioFrame:
    return AudioFrame(samples=np.zeros(320, np.float32), sample_rate_hz=16000, pts_samples=i * 320)


def text(s: str) -> Note:
    return Note(text=s)


async def test_a_block_edge_makes_the_producer_wait_until_the_consumer_takes_a_frame() -> None:
    edge = Edge("e", maxsize=2, policy=FullPolicy.BLOCK)
    await edge.put(text("a"))
    await edge.put(text("b"))
    producer = asyncio.create_task(edge.put(text("c")))
    await asyncio.sleep(0.01)
    assert not producer.done()
    assert (await edge.get()).text == "a"  # type: ignore[attr-defined]
    await asyncio.wait_for(producer, 1)
    assert [(await edge.get()).text for _ in range(2)] == ["b", "c"]  # type: ignore[attr-defined]
    assert edge.stats.waits == 1 and edge.stats.drops == 0


async def test_drop_oldest_keeps_the_newest_audio_and_counts_the_drops() -> None:
    edge = Edge("e", maxsize=3, policy=FullPolicy.DROP_OLDEST)
    for i in range(5):
        assert edge.put_nowait(audio(i))
    got = [edge.get_nowait().pts_samples // 320 for _ in range(3)]  # type: ignore[union-attr]
    assert got == [2, 3, 4]
    assert edge.stats.drops == 2


async def test_latest_wins_collapses_to_the_newest_partial() -> None:
    edge = Edge("e", maxsize=1, policy=FullPolicy.LATEST_WINS)
    for s in ("he", "hell", "hello"):
        edge.put_nowait(text(s))
    assert edge.get_nowait().text == "hello"  # type: ignore[union-attr]
    assert edge.get_nowait() is None


async def test_a_flush_overtakes_queued_audio_but_end_of_stream_keeps_its_place() -> None:
    edge = Edge("e", maxsize=10)
    edge.put_nowait(audio(0))
    edge.put_nowait(ControlFrame(kind=ControlKind.END_OF_STREAM))
    edge.put_nowait(audio(1))
    edge.put_nowait(ControlFrame(kind=ControlKind.FLUSH))
    kinds = [type(f).__name__ + (":" + f.kind.value if isinstance(f, ControlFrame) else "") for f in [edge.get_nowait() for _ in range(4)]]
    assert kinds == ["ControlFrame:flush", "AudioFrame", "ControlFrame:end_of_stream", "AudioFrame"]


async def test_an_urgent_frame_gets_in_even_when_a_block_edge_is_full() -> None:
    edge = Edge("e", maxsize=1)
    edge.put_nowait(text("a"))
    assert not edge.put_nowait(text("b"))
    assert edge.put_nowait(ControlFrame(kind=ControlKind.FLUSH))


async def test_frames_older_than_the_budget_count_as_misses_and_stale_audio_is_dropped() -> None:
    edge = Edge("e", maxsize=10, policy=FullPolicy.DROP_OLDEST, max_age_ms=5)
    edge.put_nowait(audio(0))
    edge.put_nowait(audio(1))
    await asyncio.sleep(0.01)
    edge.put_nowait(audio(2))
    frame = edge.get_nowait()
    assert frame is not None and frame.pts_samples == 640  # type: ignore[attr-defined]
    assert edge.stats.budget_misses == 2 and edge.stats.drops == 2


async def test_close_wakes_a_waiting_consumer_and_refuses_new_frames() -> None:
    edge = Edge("e", maxsize=2)
    consumer = asyncio.create_task(edge.get())
    await asyncio.sleep(0)
    edge.close()
    edge.close()  # idempotent
    with pytest.raises(GraphClosed):
        await asyncio.wait_for(consumer, 1)
    with pytest.raises(GraphClosed):
        edge.put_nowait(text("late"))


async def test_a_cancelled_consumer_takes_nothing() -> None:
    edge = Edge("e", maxsize=2)
    consumer = asyncio.create_task(edge.get())
    await asyncio.sleep(0)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    edge.put_nowait(text("kept"))
    assert (await edge.get()).text == "kept"  # type: ignore[attr-defined]


async def test_no_policy_ever_drops_a_control_frame() -> None:
    for policy in (FullPolicy.DROP_OLDEST, FullPolicy.LATEST_WINS):
        edge = Edge("e", maxsize=2, policy=policy)
        edge.put_nowait(ControlFrame(kind=ControlKind.SPEECH_STOP))
        for i in range(4):
            edge.put_nowait(audio(i))
        edge.put_nowait(ControlFrame(kind=ControlKind.END_OF_STREAM))
        frames = list(iter(edge.get_nowait, None))
        kinds = [f.kind for f in frames if isinstance(f, ControlFrame)]
        assert kinds == [ControlKind.SPEECH_STOP, ControlKind.END_OF_STREAM], policy
        assert edge.stats.drops >= 2
