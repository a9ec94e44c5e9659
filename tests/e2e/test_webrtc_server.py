"""Voice calls through a running server: real aiortc peers, real models, loopback sockets.

Each test talks to ``POST /v1/webrtc/offer`` the way a user's client does
(``CallClient``) and checks what that user would notice: the words understood, the
audio that came back and when, the agent stopping when interrupted, a clear refusal
past the call limit, and a server that cleans up after a peer that vanished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import running_server
from tests.e2e.call_events import Events, health, said, until_no_calls
from tests.speech_fixtures import silence
from voxline.clients.webrtc_client import CallClient, CallRefusedError
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.testing.clip_microphone import ClipMicrophone

pytestmark = pytest.mark.slow
LOUD = 0.02


class Ear:
    """What the client heard: (arrival wall time, peak) per received frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, float]] = []

    def __call__(self, samples: np.ndarray) -> None:
        self.frames.append((time.monotonic(), float(np.abs(samples).max(initial=0.0))))

    def first_loud_after(self, at: float) -> float | None:
        return next((t for t, peak in self.frames if t > at and peak > LOUD), None)

    def last_loud(self) -> float | None:
        return next((t for t, peak in reversed(self.frames) if peak > LOUD), None)


@pytest.fixture(scope="module")
def call_server(caption_engines: CaptionEngines, agent_engines: AgentEngines) -> Iterator[str]:
    """A voxline server on loopback serving calls (limit 2, short timeouts); its http:// URL."""
    with running_server(
        caption_engines, agent_engines, max_calls=2, call_connect_timeout_s=3.0, call_media_timeout_s=2.0
    ) as ws_url:
        yield ws_url.replace("ws://", "http://")


async def test_a_spoken_question_through_the_server_is_answered_in_speech(call_server: str) -> None:
    mic, ear = ClipMicrophone(), Ear()
    client = CallClient(call_server, mic, on_audio=ear)
    await client.connect()
    events = Events(client)
    try:
        question = mic.say(np.concatenate([said("How many legs does a spider have?"), silence(0.0)]))
        turn = await events.wait_for("user_turn")
        done = await events.wait_for("agent_done")
        latency = await events.wait_for("turn_latency")
    finally:
        await client.close()
        await events.stop()
    assert "spider" in turn["text"].lower()
    assert done["text"] and done["gap_ms"] == 0
    assert question.ended_at is not None
    first_audio = ear.first_loud_after(question.ended_at)
    assert first_audio is not None and first_audio - question.ended_at < 2.0, "the answer came back promptly"
    assert latency["v2v_ms"] is not None and set(latency["breakdown_ms"]) >= {"asr_final", "llm_first_token"}
    assert (await until_no_calls(call_server))["calls"] == 0
    async with httpx.AsyncClient(timeout=5) as http:
        metrics = (await http.get(f"{call_server}/metrics")).text
    counted = [line for line in metrics.splitlines() if line.startswith('voxline_turn_latency_seconds_count{span="v2v",transport="webrtc"}')]
    assert counted and float(counted[0].split()[-1]) >= 1
    assert "session" not in metrics.split("voxline_turn_latency_seconds")[1][:2000]


async def test_talking_over_the_agent_stops_it_and_becomes_the_next_turn(call_server: str) -> None:
    mic, ear = ClipMicrophone(), Ear()
    client = CallClient(call_server, mic, on_audio=ear)
    await client.connect()
    events = Events(client)
    try:
        # A first exchange lets the server's echo-path detector find there is no echo on
        # this line (it needs ~1.2 s of the agent's voice; until then AEC3 suppresses the
        # microphone while the agent talks: DEVELOPERS.md, "Echo").
        mic.say(said("What color is the sky?"))
        await events.wait_for("agent_done", within_s=30)
        await asyncio.sleep(0.5)
        mic.say(said("Tell me a long story about a dragon and a knight."))
        await events.wait_for("agent_text", within_s=30, after=len(events.seen))
        await asyncio.sleep(1.0)  # the agent is mid-sentence
        barge = mic.say(said("Stop. Tell me about cats instead."))
        interrupted = await events.wait_for("interrupted", within_s=10)
        await asyncio.sleep(0.2)
        stop_heard = max((t for t, peak in ear.frames if barge.started_at and t < barge.started_at + 1.5 and peak > LOUD),
                         default=None)
        next_turn = await events.wait_for("user_turn", within_s=20, after=events.seen.index(interrupted))
    finally:
        await client.close()
        await events.stop()
    assert interrupted["heard"], "some of the reply was heard before the interruption"
    assert barge.started_at is not None and stop_heard is not None
    # Loud agent audio stops arriving within 600 ms of the user starting to speak over it
    # (the user's own voice never comes back: the client only hears the agent).
    assert stop_heard - barge.started_at < 0.6, stop_heard - barge.started_at
    assert "cat" in next_turn["text"].lower()
    story = events.of("user_turn")[1]
    assert "dragon" in story["text"].lower()


async def test_a_peer_that_vanishes_mid_reply_ends_its_call_and_frees_the_slot(call_server: str) -> None:
    mic, ear = ClipMicrophone(), Ear()
    client = CallClient(call_server, mic, on_audio=ear)
    await client.connect()
    events = Events(client)
    mic.say(said("Tell me a long story about a dragon."))
    await events.wait_for("agent_text", within_s=30)
    await asyncio.sleep(0.5)
    live = await health(call_server)
    assert (live["calls"], live["graphs"], live["peer_connections"]) == (1, 1, 1)
    # No goodbye: the peer connection just closes, as when a tab is killed.
    await client.pc.close()
    await events.stop()
    state = await until_no_calls(call_server)
    assert state["calls"] == 0, state
    assert (state["graphs"], state["peer_connections"]) == (0, 0), "the call's graph and connection went with it"
    # The server and its engines are fine: the next call is answered.
    mic2, ear2 = ClipMicrophone(), Ear()
    client2 = CallClient(call_server, mic2, on_audio=ear2)
    await client2.connect()
    events2 = Events(client2)
    try:
        mic2.say(said("What color is the sky?"))
        assert (await events2.wait_for("agent_done"))["text"]
    finally:
        await client2.close()
        await events2.stop()
    assert ear2.last_loud() is not None


async def test_past_the_call_limit_an_offer_is_refused_and_running_calls_carry_on(call_server: str) -> None:
    mics = [ClipMicrophone(), ClipMicrophone()]
    ears = [Ear(), Ear()]
    clients = [CallClient(call_server, mic, on_audio=ear) for mic, ear in zip(mics, ears, strict=True)]
    for client in clients:
        await client.connect()
    extra = CallClient(call_server, ClipMicrophone())
    try:
        with pytest.raises(CallRefusedError) as refused:
            await extra.connect()
        assert refused.value.status == 503 and refused.value.code == "server_busy"
        assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 0
        assert "limit of 2 live calls" in str(refused.value)
        events = Events(clients[0])
        question = mics[0].say(said("What color is the sky?"))
        done = await events.wait_for("agent_done")
        await events.stop()
    finally:
        await extra.close()
        for client in clients:
            await client.close()
    assert done["text"]
    assert question.ended_at is not None
    first = ears[0].first_loud_after(question.ended_at)
    assert first is not None and first - question.ended_at < 2.0
    assert (await until_no_calls(call_server))["calls"] == 0


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not JSON"),
        (b'{"sdp": "v=0", "type": "answer"}', 400, "'type' must be 'offer'"),
        (b'{"sdp": "", "type": "offer"}', 400, "'sdp' must be"),
        (b'{"sdp": "v=0", "type": "offer", "session": {"voice": "x"}}', 400, "unknown session option"),
        (b'{"sdp": "this is not sdp", "type": "offer"}', 400, "could not be answered"),
    ],
)
async def test_a_bad_offer_gets_a_clear_error_and_the_server_carries_on(
    call_server: str, body: bytes, status: int, words: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{call_server}/v1/webrtc/offer", content=body)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]
    assert (await health(call_server))["calls"] == 0


@pytest.mark.parametrize("cut", ["m=audio", "a=mid:0"])
async def test_an_offer_whose_bundle_names_a_missing_section_is_refused_and_leaves_nothing_open(
    call_server: str, cut: str
) -> None:
    """Found by bench/fuzz.py: aiortc took these offers, then failed on them, leaving a connection half open."""
    import aiortc

    pc = aiortc.RTCPeerConnection()
    pc.addTransceiver("audio")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    sdp = "\r\n".join(line for line in pc.localDescription.sdp.split("\r\n") if not line.startswith(cut))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{call_server}/v1/webrtc/offer", json={"sdp": sdp, "type": "offer"})
    message = response.json()["error"]["message"]
    assert response.status_code == 400 and ("BUNDLE" in message or "a=mid" in message), message
    state = await health(call_server)
    assert (state["calls"], state["graphs"], state["peer_connections"]) == (0, 0, 0)


async def test_a_peer_that_never_connects_is_dropped_after_the_connect_timeout(call_server: str) -> None:
    import aiortc

    pc = aiortc.RTCPeerConnection()
    pc.addTransceiver("audio")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{call_server}/v1/webrtc/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}
        )
    await pc.close()  # the answer is never applied: ICE never completes
    assert response.status_code == 200
    live = await health(call_server)
    assert (live["calls"], live["graphs"]) == (1, 1)
    state = await until_no_calls(call_server, within_s=10)
    assert (state["calls"], state["graphs"], state["peer_connections"]) == (0, 0, 0)


async def test_a_peer_whose_audio_stops_without_hanging_up_is_ended_after_the_media_timeout(call_server: str) -> None:
    client = CallClient(call_server, ClipMicrophone())
    await client.connect()
    try:
        await asyncio.sleep(0.5)
        assert (await health(call_server))["calls"] == 1
        client.mic.stop()  # a frozen tab: the connection stays up, no audio comes
        stopped = time.monotonic()
        state = await until_no_calls(call_server, within_s=8)
        assert (state["calls"], state["graphs"], state["peer_connections"]) == (0, 0, 0)
        assert time.monotonic() - stopped < 5.0  # the 2 s media timeout, not ICE's ~30 s
    finally:
        await client.close()
