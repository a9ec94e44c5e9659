"""Voice-changer and anonymizer calls through a running server: real aiortc peers, real models.

A caller (``CallClient``) speaks a human recording from the ``real`` set and records
what comes back. Voice changer: their own words, in the voice asked for, changed live
on the events channel. Anonymizer: their words again, in Piper's voice.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soxr

from tests.conftest import running_server
from tests.e2e.call_events import Events
from tests.speech_fixtures import normalize, silence, word_errors
from voxline.clients.webrtc_client import CallClient, CallRefusedError
from voxline.models.pitch import measure_f0
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.testing.clip_microphone import ClipMicrophone

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from real_speech import real_clip

pytestmark = pytest.mark.slow
RATE = 48000


class Recorder:
    """Everything the caller heard, with each frame's arrival time."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, np.ndarray]] = []

    def __call__(self, samples: np.ndarray) -> None:
        self.frames.append((time.monotonic(), samples.copy()))

    def between(self, start: float, end: float) -> np.ndarray:
        """The audio that arrived from ``start`` to ``end`` (wall times), at 16 kHz."""
        parts = [s for t, s in self.frames if start <= t <= end]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return soxr.resample(audio, RATE, 16000).astype(np.float32)


def aligned_f0_ratio(sent: np.ndarray, back: np.ndarray) -> float:
    """Median F0 ratio back/sent over frames voiced in both, ``back`` shifted to line up with ``sent``."""
    f_sent, f_back = measure_f0(sent, 16000), measure_f0(back, 16000)
    loud_sent, loud_back = (f_sent > 0).astype(float), (f_back > 0).astype(float)
    lags = range(len(f_back) - len(f_sent) + 1) if len(f_back) > len(f_sent) else range(1)
    lag = max(lags, key=lambda k: float(np.dot(loud_sent, loud_back[k : k + len(loud_sent)])))
    shifted = f_back[lag : lag + len(f_sent)]
    both = (f_sent[: len(shifted)] > 0) & (shifted > 0)
    assert both.sum() > 20, "too little voiced audio came back"
    return float(np.median(shifted[both] / f_sent[: len(shifted)][both]))


def median_f0(audio_16k: np.ndarray) -> float:
    f0 = measure_f0(audio_16k, 16000)
    assert (f0 > 0).sum() > 20, "too little voiced audio"
    return float(np.median(f0[f0 > 0]))


async def say_and_wait(mic: ClipMicrophone, audio_16k: np.ndarray, tail_s: float = 0.6) -> tuple[float, float]:
    """Send ``audio_16k`` as the caller; return when it started and when its echo should be over."""
    clip = mic.say(soxr.resample(audio_16k, 16000, RATE).astype(np.float32))
    deadline = time.monotonic() + len(audio_16k) / 16000 + 10
    while clip.ended_at is None:
        assert time.monotonic() < deadline, "the microphone track stopped sending"
        await asyncio.sleep(0.02)
    await asyncio.sleep(tail_s)
    assert clip.started_at is not None
    return clip.started_at, clip.ended_at + tail_s


@pytest.fixture(scope="module")
def call_server(caption_engines: CaptionEngines, agent_engines: AgentEngines) -> Iterator[str]:
    with running_server(caption_engines, agent_engines, max_calls=2) as ws_url:
        yield ws_url.replace("ws://", "http://")


async def test_a_caller_hears_their_words_in_the_voice_asked_for_and_changes_it_live(
    call_server: str, caption_engines: CaptionEngines
) -> None:
    clip = real_clip("arctic_a0009")
    mic, heard = ClipMicrophone(), Recorder()
    client = CallClient(call_server, mic, on_audio=heard, session={"mode": "voice_changer", "vc": {"preset": "deeper"}})
    await client.connect()
    events = Events(client)
    try:
        ready = await events.wait_for("vc.ready", within_s=10)
        assert (ready["semitones"], ready["formant"], ready["algorithmic_latency_ms"]) == (-4.0, 0.88, 20.0)
        first = await say_and_wait(mic, clip.audio)
        client.send({"type": "vc.update", "semitones": 5, "formant": 1.0})
        updated = await events.wait_for("vc.updated", within_s=5)
        assert (updated["semitones"], updated["formant"]) == (5.0, 1.0)
        second = await say_and_wait(mic, clip.audio)
        client.send({"type": "vc.update", "formant": 9})
        error = await events.wait_for("error", within_s=5)
        latency = await events.wait_for("vc.latency", within_s=5)
    finally:
        await client.close()
        await events.stop()
    assert error["code"] == "bad_vc_update" and "formant" in error["message"]
    assert latency["algorithmic_ms"] == 20.0 and latency["processing_ms"] < 100
    for (start, end), semitones in ((first, -4), (second, 5)):
        back = heard.between(start, end)
        assert abs(aligned_f0_ratio(clip.audio, back) / 2 ** (semitones / 12) - 1) < 0.03, semitones
        words = await caption_engines.recognizer.transcribe(back, final=True, deadline=time.monotonic())
        assert word_errors(clip.text, words.text) <= len(normalize(clip.text)) // 4, words.text


async def test_an_anonymized_caller_is_heard_in_pipers_voice_with_their_words(
    call_server: str, caption_engines: CaptionEngines
) -> None:
    clip = real_clip("arctic_a0009")  # a voice near 190 Hz; Piper's is near 90 Hz
    mic, heard = ClipMicrophone(), Recorder()
    client = CallClient(call_server, mic, on_audio=heard, session={"mode": "anonymizer"})
    await client.connect()
    events = Events(client)
    try:
        start, _ = await say_and_wait(mic, np.concatenate([clip.audio, silence(0.2)]), tail_s=0.0)
        phrase = await events.wait_for("anon.phrase", within_s=15)
        await asyncio.sleep(4.0)  # the re-spoken sentence plays out
    finally:
        await client.close()
        await events.stop()
    assert word_errors(clip.text, phrase["text"]) <= 2, phrase["text"]
    assert 0 < phrase["latency_ms"] < 3000
    back = heard.between(start, time.monotonic())
    assert median_f0(back) < 0.7 * median_f0(clip.audio), "the caller's own voice came back"
    words = await caption_engines.recognizer.transcribe(back, final=True, deadline=time.monotonic())
    assert word_errors(clip.text, words.text) <= 3, words.text


@pytest.mark.parametrize(("session", "says"), [
    ({"mode": "karaoke"}, "session.mode must be one of"),
    ({"mode": "agent", "vc": {"semitones": 2}}, "for mode 'voice_changer'"),
    ({"mode": "voice_changer", "vc": {"semitones": 99}}, "semitones must be between -12 and 12"),
    ({"mode": "voice_changer", "vc": {"preset": "elvis"}}, "unknown preset"),
])
async def test_a_bad_voice_in_the_offer_is_refused_with_its_reason(call_server: str, session: dict, says: str) -> None:
    client = CallClient(call_server, ClipMicrophone(), session=session)
    try:
        with pytest.raises(CallRefusedError) as refused:
            await client.connect()
    finally:
        await client.close()
    assert refused.value.status == 400 and refused.value.code == "bad_offer" and says in str(refused.value)
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(f"{call_server}/healthz")).json()["calls"] == 0


async def test_the_server_lists_its_voices_for_a_clients_controls(call_server: str) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        voices = (await http.get(f"{call_server}/v1/vc/voices")).json()
    assert voices["default"] == "deeper" and voices["algorithmic_latency_ms"] == 20.0
    assert voices["presets"]["robot"] == {"semitones": 0.0, "formant": 1.0, "monotone_hz": 110.0}
    assert voices["ranges"]["semitones"] == [-12.0, 12.0]
