"""A voice call over a lossy, jittery path: it keeps going, with bounded latency, and cleans up.

Real aiortc peers and real models on loopback. The path is made by the peers
themselves (no ``tc netem`` here: it needs a network namespace and CAP_NET_ADMIN):
while the test runs, every ICE transport in this process, the client's and the
server's, drops 5 % of the datagrams it sends and delays each of the rest by a random
0–60 ms (so packets also arrive out of order), seeded so a failure reproduces.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from tests.conftest import running_server
from tests.e2e.call_events import Events, health, said, until_no_calls
from tests.speech_fixtures import word_errors
from voxline.clients.webrtc_client import CallClient
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.stream.webrtc.call import inbound_packet_counts
from voxline.testing.clip_microphone import ClipMicrophone

pytestmark = pytest.mark.slow

LOSS = 0.05
JITTER_S = 0.060
LOUD = 0.02
QUESTION = "How many legs does a spider have?"
SECOND_QUESTION = "And how many legs does a cat have?"


class LossyPath:
    """Wraps ICE transports' datagram sends: drops ``loss`` of them, delays the rest by up to ``jitter_s``."""

    def __init__(self, loss: float, jitter_s: float, seed: int) -> None:
        self.loss, self.jitter_s = loss, jitter_s
        self.rng = random.Random(seed)
        self.sent = self.dropped = 0
        self._in_flight: set[asyncio.Task[None]] = set()

    def wrap(self, ice: Any) -> None:
        """Make ``ice`` (an ``RTCIceTransport``) send through this path."""
        send = ice._send

        async def lossy_send(data: bytes) -> None:
            self.sent += 1
            if self.rng.random() < self.loss:
                self.dropped += 1
                return
            loop = asyncio.get_running_loop()
            loop.call_later(self.rng.uniform(0, self.jitter_s), self._deliver, send, data)

        ice._send = lossy_send

    def _deliver(self, send: Callable[[bytes], Coroutine[Any, Any, None]], data: bytes) -> None:
        task = asyncio.ensure_future(send(data))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled():
            task.exception()  # a send on a transport already closed: the packet is lost, like any other


@pytest.fixture
def lossy_path(monkeypatch: pytest.MonkeyPatch) -> LossyPath:
    """Every RTCIceTransport made during the test sends through one seeded ``LossyPath``."""
    from aiortc.rtcicetransport import RTCIceTransport

    path = LossyPath(LOSS, JITTER_S, seed=17)
    original_init = RTCIceTransport.__init__

    def lossy_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        path.wrap(self)

    monkeypatch.setattr(RTCIceTransport, "__init__", lossy_init)
    return path


@pytest.fixture(scope="module")
def call_server(caption_engines: CaptionEngines, agent_engines: AgentEngines) -> Iterator[str]:
    """A voxline server on loopback serving calls; its http:// URL."""
    with running_server(caption_engines, agent_engines, max_calls=2) as ws_url:
        yield ws_url.replace("ws://", "http://")


async def test_a_call_over_a_lossy_jittery_path_is_understood_and_answered_then_cleaned_up(
    call_server: str, lossy_path: LossyPath
) -> None:
    idle = await health(call_server)
    heard: list[tuple[float, float]] = []
    mic = ClipMicrophone()
    client = CallClient(call_server, mic, on_audio=lambda samples: heard.append((time.monotonic(), float(abs(samples).max(initial=0.0)))))
    await client.connect(timeout_s=30)
    events = Events(client)
    try:
        live = await health(call_server)
        assert (live["calls"], live["graphs"], live["peer_connections"]) == (1, 1, 1)
        question = mic.say(said(QUESTION))
        turn = await events.wait_for("user_turn", within_s=30)
        done = await events.wait_for("agent_done", within_s=30)
        latency = await events.wait_for("turn_latency", within_s=10)
        mic.say(said(SECOND_QUESTION))
        second = await events.wait_for("user_turn", within_s=30, after=events.seen.index(done))
        packets = inbound_packet_counts(client.pc)  # the agent's audio, as the caller's receiver put it in order
    finally:
        await client.close()
        await events.stop()
    assert lossy_path.dropped > 0.02 * lossy_path.sent > 0, (lossy_path.dropped, lossy_path.sent)
    # Packets overtake each other on this path: put back in order, only the lost 5 % are
    # missing (released on arrival, with the late ones dropped, about 27 % would be).
    arrived = packets["released"] + packets["late"] + packets["lost"]
    assert arrived > 100 and packets["lost"] + packets["late"] < 0.10 * arrived, packets
    # 5 % of the audio is lost: a word may be misheard, no more than one
    assert word_errors(QUESTION, turn["text"]) <= 1, turn["text"]
    assert word_errors(SECOND_QUESTION, second["text"]) <= 1, second["text"]
    assert done["text"], "the agent answered"
    assert question.ended_at is not None
    first_audio = next((t for t, peak in heard if t > question.ended_at and peak > LOUD), None)
    assert first_audio is not None and first_audio - question.ended_at < 3.0, "the answer came back, late at most by the path"
    assert latency["v2v_ms"] is not None and latency["v2v_ms"] < 3000
    state = await until_no_calls(call_server, within_s=10)
    assert (state["calls"], state["graphs"], state["peer_connections"]) == (0, 0, 0), state
    assert state["tasks"] <= idle["tasks"] + 2, (idle["tasks"], state["tasks"])  # nothing stuck
