"""PiperEngine: streamed, cancellable speech synthesis with the real packaged Piper voice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from voxline.errors import EngineError
from voxline.models.tts import PiperEngine

LONG_TEXT = " ".join(f"This is sentence number {i} of a long answer." for i in range(40))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[PiperEngine]:
    eng = PiperEngine(workers=2)
    await eng.start()
    yield eng
    await eng.close()


async def wait_until_idle(engine: PiperEngine, timeout_s: float = 2.0) -> float:
    """Seconds until no worker is busy; fails the test past ``timeout_s``."""
    started = time.perf_counter()
    while engine.busy_workers:
        assert time.perf_counter() - started < timeout_s, "a TTS worker is still busy"
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


@pytest.mark.asyncio(loop_scope="module")
async def test_two_sentences_stream_as_separate_chunks_of_real_speech(engine: PiperEngine) -> None:
    stream = engine.stream("Hello there. How are you today?")
    chunks = [chunk async for chunk in stream]
    assert len(chunks) >= 2
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    audio = np.concatenate(chunks)
    assert engine.sample_rate_hz == 22050
    assert 1.0 < len(audio) / engine.sample_rate_hz < 5.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.02  # speech, not silence
    stats = stream.stats
    assert stats.chunks == len(chunks) and not stats.cancelled
    assert stats.first_chunk_ms is not None and stats.first_chunk_ms < stats.total_ms
    assert 0 < stats.real_time_factor < 1


@pytest.mark.asyncio(loop_scope="module")
async def test_the_same_text_always_sounds_the_same(engine: PiperEngine) -> None:
    first, second = await asyncio.gather(
        engine.synthesize_all("Deterministic speech."),
        engine.synthesize_all("Deterministic speech."),
    )
    assert len(first) > 0 and np.array_equal(first, second)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_first_chunk_arrives_long_before_the_whole_text_is_spoken(
    engine: PiperEngine,
) -> None:
    stream = engine.stream(" ".join(f"Sentence {i} is here." for i in range(8)))
    arrivals = []
    async for _ in stream:
        arrivals.append(time.perf_counter())
    assert len(arrivals) >= 8
    stats = stream.stats
    assert stats.first_chunk_ms is not None
    assert stats.first_chunk_ms < stats.total_ms / 3
    assert arrivals[0] < arrivals[-1]


@pytest.mark.asyncio(loop_scope="module")
async def test_two_concurrent_streams_both_complete(engine: PiperEngine) -> None:
    async def speak(text: str) -> np.ndarray:
        return np.concatenate([chunk async for chunk in engine.stream(text)])

    a, b = await asyncio.gather(speak("Good morning. The coffee is ready."), speak("Hi. Bye now."))
    assert len(a) > len(b) > 0.3 * engine.sample_rate_hz


@pytest.mark.asyncio(loop_scope="module")
async def test_closing_a_stream_after_its_first_chunk_frees_the_worker(engine: PiperEngine) -> None:
    long = engine.stream(LONG_TEXT)
    async for _ in long:
        break
    await long.aclose()
    await wait_until_idle(engine)
    assert long.stats.cancelled and long.stats.chunks < 20
    assert [c async for c in long] == []  # a closed stream stays ended
    audio = await engine.synthesize_all("Still working.")
    assert len(audio) > 0.3 * engine.sample_rate_hz


@pytest.mark.asyncio(loop_scope="module")
async def test_cancelling_the_reading_task_stops_synthesis(engine: PiperEngine) -> None:
    started = asyncio.Event()

    async def read_slowly() -> None:
        async with engine.stream(LONG_TEXT) as stream:
            async for _ in stream:
                started.set()
                await asyncio.sleep(10)  # cancelled here, between chunks

    async def wait_for_speech() -> None:
        async for _ in engine.stream(LONG_TEXT):
            started.set()

    for reader in (read_slowly, wait_for_speech):
        started.clear()
        task = asyncio.create_task(reader())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until_idle(engine)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_slow_reader_holds_the_worker_back_instead_of_queueing_everything(
    engine: PiperEngine,
) -> None:
    stream = engine.stream(LONG_TEXT)
    first = await anext(stream)
    await asyncio.sleep(0.5)  # long enough to synthesize every sentence
    assert len(first) > 0 and stream.stats.chunks <= 6
    await stream.aclose()
    await wait_until_idle(engine)


@pytest.mark.asyncio(loop_scope="module")
async def test_empty_text_yields_nothing(engine: PiperEngine) -> None:
    assert [c async for c in engine.stream("")] == []
    assert [c async for c in engine.stream("  \n ")] == []
    assert len(await engine.synthesize_all("")) == 0


def tts_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("voxline-tts-")}


@pytest.mark.asyncio
async def test_close_is_idempotent_and_leaves_no_worker_thread() -> None:
    others = tts_threads()  # the module engine's workers, if it is running
    engine = PiperEngine(workers=2)
    with pytest.raises(EngineError):
        engine.stream("Too early.")
    await engine.start()
    await engine.start()
    assert len(tts_threads() - others) == 2
    unfinished = engine.stream(LONG_TEXT)
    await anext(unfinished)
    await engine.close()
    await engine.close()
    assert tts_threads() - others == set()
    with pytest.raises(EngineError):
        engine.stream("Too late.")
    with pytest.raises(EngineError):
        async for _ in unfinished:
            pass


async def test_the_earliest_deadline_is_synthesized_first() -> None:
    engine = PiperEngine(workers=1)
    await engine.start()
    try:
        busy = engine.stream("One moment please.")  # holds the only worker
        later = engine.stream("This clause plays in five seconds.", deadline=time.monotonic() + 5.0)
        urgent = engine.stream("A first clause is due now.", deadline=time.monotonic())
        order: list[str] = []

        async def drain(name: str, stream: object) -> None:
            async for _ in stream:  # type: ignore[attr-defined]
                pass
            order.append(name)

        await asyncio.gather(drain("busy", busy), drain("later", later), drain("urgent", urgent))
    finally:
        await engine.close()
    assert order == ["busy", "urgent", "later"]
    assert urgent.stats.queued_ms < later.stats.queued_ms
