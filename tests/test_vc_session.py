"""The voice-changer session and its engine, in-process: the graph, live changes, bad input, limits."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.speech_fixtures import FOX, SAMPLE_RATE_HZ, speech
from voxline.errors import EngineError
from voxline.models.pitch import measure_f0
from voxline.models.vc_engine import VoiceConverterEngine
from voxline.models.voice_converter import PRESETS, PsolaConverter, VoiceParams
from voxline.pipeline.frames import AudioFrame
from voxline.pipeline.live_output import LiveOutput
from voxline.pipeline.recipes.voice_changer import VoiceChangerSession, build_voice_changer_session

FRAME = SAMPLE_RATE_HZ // 50


@pytest.fixture
async def engine() -> VoiceConverterEngine:
    engine = VoiceConverterEngine(PsolaConverter(SAMPLE_RATE_HZ))
    await engine.start()
    yield engine  # type: ignore[misc]
    await engine.close()


async def run_live(session: VoiceChangerSession, audio: np.ndarray, *, update_at: int | None = None,
                   update: dict | None = None) -> np.ndarray:
    """Push ``audio`` frame by frame as a transport would and pull as much back; the played audio."""
    played = []
    await session.graph.start()
    for k, pts in enumerate(range(0, len(audio), FRAME)):
        if k == update_at and update is not None:
            session.on_client_event(update)
        chunk = audio[pts : pts + FRAME]
        assert session.audio_in.put_nowait(AudioFrame(chunk, SAMPLE_RATE_HZ, pts, 0.0))
        # A transport's clock would not wait; the test does, to be exact.
        deadline = time.monotonic() + 5
        while session.output.written_samples < pts + len(chunk):
            assert time.monotonic() < deadline, "the converted frame never came"
            await asyncio.sleep(0.001)
        played.append(session.pull(FRAME))
    await session.graph.cancel()
    return np.concatenate(played)


def f0_ratio(before: np.ndarray, after: np.ndarray) -> float:
    f_in, f_out = measure_f0(before, SAMPLE_RATE_HZ), measure_f0(after, SAMPLE_RATE_HZ)
    n = min(len(f_in), len(f_out))
    voiced = (f_in[:n] > 0) & (f_out[:n] > 0)
    return float(np.median(f_out[:n][voiced] / f_in[:n][voiced]))


async def test_a_session_plays_the_converted_voice_and_takes_a_live_change(engine: VoiceConverterEngine) -> None:
    audio = np.concatenate([speech(FOX), speech(FOX)])
    half = len(audio) // 2 // FRAME
    session = build_voice_changer_session(engine, PRESETS["deeper"])
    played = await run_live(session, audio, update_at=half, update={"type": "vc.update", "semitones": 5})
    events = session.events.drain_nowait()
    assert events[0]["type"] == "vc.ready" and events[0]["algorithmic_latency_ms"] == 20.0
    assert {"type": "vc.updated", "semitones": 5.0, "formant": 0.88, "monotone_hz": None} in events
    # The output lags the input by the converter's latency and the output buffer's priming.
    lag = engine.latency_samples + FRAME
    out = played[lag:]
    first, second = slice(0, half * FRAME - 2000), slice(half * FRAME + 2000, len(out))
    assert abs(f0_ratio(audio[first], out[first]) / 2 ** (-4 / 12) - 1) < 0.03
    assert abs(f0_ratio(audio[second], out[second]) / 2 ** (5 / 12) - 1) < 0.03


async def test_a_bad_update_gets_an_error_and_the_voice_stays(engine: VoiceConverterEngine) -> None:
    session = build_voice_changer_session(engine, PRESETS["brighter"])
    session.on_client_event({"type": "vc.update", "semitones": 99})
    session.on_client_event({"type": "vc.update", "preset": "elvis"})
    session.on_client_event({"type": "dance"})
    errors = [e for e in session.events.drain_nowait() if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["bad_vc_update", "bad_vc_update", "unknown_event"]
    assert "semitones must be between -12 and 12" in errors[0]["message"]
    assert "vc.update" in errors[2]["message"]
    assert session.converter.params == PRESETS["brighter"]


async def test_sessions_converted_together_equal_each_converted_alone(engine: VoiceConverterEngine) -> None:
    audio = speech(FOX)
    voices = [VoiceParams(semitones=s) for s in (-6, 0, 6)]
    sessions = [engine.open(v) for v in voices]
    padded = np.concatenate([audio, np.zeros(engine.latency_samples, np.float32)])

    async def stream(index: int) -> np.ndarray:
        parts = [await sessions[index].convert(padded[i : i + FRAME]) for i in range(0, len(padded), FRAME)]
        return np.concatenate(parts)[engine.latency_samples :]

    together = await asyncio.gather(*(stream(i) for i in range(3)))
    assert max(t.sessions for t in engine.batch_timings) == 3
    alone = PsolaConverter(SAMPLE_RATE_HZ)
    for voice, out in zip(voices, together, strict=True):
        np.testing.assert_allclose(out, alone.convert(audio, voice), atol=1e-4)


async def test_the_engine_refuses_past_its_queue_and_one_request_per_session() -> None:
    engine = VoiceConverterEngine(PsolaConverter(SAMPLE_RATE_HZ), max_pending=2)
    with pytest.raises(EngineError, match="not started"):
        await engine.open().convert(np.zeros(FRAME, np.float32))
    await engine.start()
    try:
        session = engine.open()
        first = asyncio.ensure_future(session.convert(np.zeros(FRAME, np.float32)))
        await asyncio.sleep(0)
        with pytest.raises(EngineError, match="still running"):
            await session.convert(np.zeros(FRAME, np.float32))
        await first
    finally:
        await engine.close()


class SlowConverter(PsolaConverter):
    """The real converter, 0.3 s slower per batch: keeps the worker busy while the queue fills."""

    def process(self, states, chunks):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return super().process(states, chunks)


async def test_a_full_queue_refuses_at_once_and_what_it_accepted_comes_back() -> None:
    engine = VoiceConverterEngine(SlowConverter(SAMPLE_RATE_HZ), max_pending=2)
    await engine.start()
    try:
        sessions = [engine.open() for _ in range(4)]
        running = asyncio.ensure_future(sessions[0].convert(np.zeros(FRAME, np.float32)))
        deadline = time.monotonic() + 5
        while not engine.pool.busy_workers:
            assert time.monotonic() < deadline, "the worker never took the request"
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(s.convert(np.zeros(FRAME, np.float32))) for s in sessions[1:3]]
        await asyncio.sleep(0)
        with pytest.raises(EngineError, match="queue is full"):
            await sessions[3].convert(np.zeros(FRAME, np.float32))
        for result in await asyncio.gather(running, *queued):
            assert len(result) == FRAME
    finally:
        await engine.close()
    with pytest.raises(EngineError, match=r"closed|not started"):
        await engine.open().convert(np.zeros(FRAME, np.float32))


def test_the_live_output_primes_bounds_its_delay_and_counts() -> None:
    output = LiveOutput(1000, target_s=0.02, max_s=0.05)
    assert not output.read(10).any()  # priming: silence until 20 ms are in
    output.write(np.ones(20, np.float32))
    assert output.read(10).all() and output.delay_s == 0.01
    output.write(np.ones(100, np.float32))  # a burst past 50 ms: down to 20 ms
    assert output.delay_s == 0.02 and output.dropped_samples == 90
    output.read(20)
    output.read(10)  # dry: an underrun, then priming again
    assert output.underruns == 1 and not output.read(5).any()


def test_a_standing_surplus_after_a_hiccup_is_dropped_at_a_quiet_moment() -> None:
    rate, frame = 1000, 20
    output = LiveOutput(rate, target_s=0.02, max_s=0.12, settle_s=1.0)
    voice, quiet = np.full(frame, 0.3, np.float32), np.zeros(frame, np.float32)
    for _ in range(10):  # steady: each frame is read as it comes
        output.write(voice)
        output.read(frame)
    assert output.delay_s == 0.0
    output.read(frame)  # a frame is late: an underrun
    output.write(voice)
    output.write(voice)  # ... and comes with the next one: a frame more than needed
    for _ in range(60):  # speech: the surplus stays rather than cut a word
        output.read(frame)
        output.write(voice)
    assert output.delay_s == 0.04 and output.settled_samples == 0
    for _ in range(60):  # a pause: the surplus goes, 5 ms of headroom stay
        output.read(frame)
        output.write(quiet)
    assert output.settled_samples == 15 and output.delay_s == 0.025 and output.underruns == 1
