"""Structured protocol fuzzing, bounded: every wire protocol of a real server takes seeded junk and stays well.

The same generators and drivers as ``bench/fuzz.py`` (``bench/fuzz_cases.py``,
``bench/fuzz_drivers.py``), a few hundred messages per protocol against one server on
loopback with real engines and a throwaway redis-server. For each protocol a user
would notice: every bad message gets its documented error event or close code (to
that client only), ``/healthz`` answers throughout, a caption session streaming a
Piper clip meanwhile gets its words right, and once the fuzzing clients are gone no
session, graph, call, peer connection or task is left over the idle counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import free_port, running_server
from tests.speech_fixtures import FOX, silence, speech
from voxline.config import BusConfig
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import fuzz_drivers as drivers

pytestmark = pytest.mark.slow
MAX_MESSAGE_BYTES = 64000
FOX_WORDS = ("quick", "brown", "fox", "lazy", "dog")


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[None]:
    """A throwaway redis-server on ``port`` without persistence."""
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def fuzz_server(caption_engines: CaptionEngines, agent_engines: AgentEngines) -> Iterator[tuple[str, str]]:
    """A server with calls (short connect timeout) and the Redis bus; its ws:// URL and the Redis URL."""
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    with redis_server(port):
        bus = BusConfig(redis_url=redis_url, node_id="fuzz-a", heartbeat_s=0.5, ttl_s=2.0)
        with running_server(caption_engines, agent_engines, bus=bus, max_calls=4, call_connect_timeout_s=2.0,
                            max_message_bytes=MAX_MESSAGE_BYTES, idle_timeout_s=10.0) as url:
            yield url, redis_url


@pytest.fixture(scope="module")
def offer_sdp() -> str:
    """A real aiortc offer to mutate."""
    return asyncio.run(drivers.valid_offer_sdp())


@pytest.fixture(scope="module")
def idle(fuzz_server: tuple[str, str]) -> dict[str, int]:
    """The leak counters with nothing running, after one of each session kind made what is made once."""
    url, _ = fuzz_server

    async def warm() -> dict[str, int]:
        await drivers.fuzz_data_channel(url, random.Random(0), 5, per_call=5)
        await drivers.fuzz_realtime(url, random.Random(0), 10, max_message_bytes=MAX_MESSAGE_BYTES, per_connection=10,
                                    parallel=1)
        return await drivers.idle_counts(url, settle_s=2.0)

    return asyncio.run(warm())


CLIP = np.concatenate([speech(FOX), silence(0.75)])


async def fuzzed_while_watched(url: str, idle: dict[str, int], busy: Awaitable[drivers.Tally]) -> drivers.Tally:
    """Run ``busy`` (a driver) with /healthz polled and a healthy caption session; assert what a user would notice."""
    watch = drivers.HealthWatch(url)
    poller = asyncio.create_task(watch.run())
    try:
        tally, transcripts = await drivers.healthy_while(url, CLIP, FOX_WORDS, busy)
    finally:
        watch.stop()
        await asyncio.gather(poller, return_exceptions=True)
    assert tally.unclear == 0, "\n".join(tally.problems)
    assert watch.polls > 0 and watch.failures == []
    assert transcripts and not [t for t in transcripts if t.startswith("MISSING")], transcripts
    assert await drivers.leaks(url, idle, within_s=15) == dict.fromkeys(drivers.LEAK_FIELDS, 0)
    return tally


async def test_caption_sockets_answer_every_bad_message_with_its_code(fuzz_server: tuple[str, str], idle: dict[str, int]) -> None:
    url, _ = fuzz_server
    tally = await fuzzed_while_watched(url, idle, drivers.fuzz_captions(
        url, random.Random(11), 1500, max_message_bytes=MAX_MESSAGE_BYTES, per_connection=40))
    assert tally.messages >= 1500 and tally.answered >= 10


async def test_realtime_sessions_take_every_client_event_shape_and_carry_on(fuzz_server: tuple[str, str],
                                                                            idle: dict[str, int]) -> None:
    url, _ = fuzz_server
    tally = await fuzzed_while_watched(url, idle, drivers.fuzz_realtime(
        url, random.Random(12), 1200, max_message_bytes=MAX_MESSAGE_BYTES, per_connection=300))
    assert tally.messages >= 1200 and tally.answered >= 100


async def test_phone_calls_carry_on_through_malformed_carrier_frames(fuzz_server: tuple[str, str],
                                                                    idle: dict[str, int]) -> None:
    url, _ = fuzz_server
    tally = await fuzzed_while_watched(url, idle, drivers.fuzz_telephony(
        url, random.Random(16), 900, max_message_bytes=MAX_MESSAGE_BYTES, per_call=300))
    assert tally.messages >= 900 and tally.connections >= 3 and tally.answered >= 100


async def test_offers_of_every_shape_get_a_documented_answer(fuzz_server: tuple[str, str], idle: dict[str, int],
                                                             offer_sdp: str) -> None:
    url, _ = fuzz_server
    tally = await fuzzed_while_watched(url, idle, drivers.fuzz_offers(url, random.Random(13), 400, offer_sdp))
    assert tally.answered >= 300


async def test_a_voice_changer_call_answers_every_channel_message_in_order(fuzz_server: tuple[str, str],
                                                                           idle: dict[str, int]) -> None:
    url, _ = fuzz_server
    tally = await fuzzed_while_watched(url, idle, drivers.fuzz_data_channel(url, random.Random(14), 400, per_call=200,
                                                                            window=50))
    assert tally.answered == tally.messages >= 400


async def test_a_viewer_of_a_remote_session_survives_malformed_redis_entries(fuzz_server: tuple[str, str],
                                                                             idle: dict[str, int]) -> None:
    url, redis_url = fuzz_server
    tally = await fuzzed_while_watched(url, idle, drivers.fuzz_redis(url, redis_url, random.Random(15), 2000,
                                                                     per_session=300))
    assert tally.answered >= 4


async def test_an_offer_nested_past_the_decoders_limit_is_a_bad_offer(fuzz_server: tuple[str, str]) -> None:
    import httpx

    url, _ = fuzz_server
    async with httpx.AsyncClient(base_url=drivers.http_url(url), timeout=10) as client:
        response = await client.post("/v1/webrtc/offer", content=b"[" * 5000)
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_offer"


async def test_a_channel_message_nested_past_the_decoders_limit_is_a_bad_event(fuzz_server: tuple[str, str]) -> None:
    from voxline.clients.webrtc_client import CallClient

    url, _ = fuzz_server
    client = CallClient(drivers.http_url(url), lambda n: np.zeros(n, np.float32), session={"mode": "voice_changer"})
    await client.connect()
    try:
        client.channel.send("[" * 5000)
        client.channel.send('{"type": "vc.update", "semitones": 2}')
        answers: list[Any] = []
        async with asyncio.timeout(10):
            async for event in client.events():
                if event["type"] in ("error", "vc.updated"):
                    answers.append(event.get("code", event["type"]))
                    if len(answers) == 2:
                        break
    finally:
        await client.close()
    assert answers == ["bad_event", "vc.updated"]
