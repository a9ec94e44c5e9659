"""A real aiortc peer talks to the agent over WebRTC on loopback (groundwork for the WebRTC issue)."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from typing import Any

import aiortc
import numpy as np
import pytest
import soxr

from tests.speech_fixtures import silence, speech
from voxline.pipeline.recipes.agent import AgentEngines, build_agent_session
from voxline.stream.webrtc.call import (
    FRAME_SAMPLES,
    WEBRTC_RATE_HZ,
    VoiceCall,
    from_av_frame,
    to_av_frame,
)

pytestmark = pytest.mark.slow


class SpokenTrack(aiortc.MediaStreamTrack):  # type: ignore[misc]
    """The client's microphone: a 48 kHz clip at real-time pace, then silence."""

    kind = "audio"

    def __init__(self, audio_16k: np.ndarray) -> None:
        super().__init__()
        self.audio = soxr.resample(audio_16k, 16000, WEBRTC_RATE_HZ).astype(np.float32)
        self.pts = 0
        self.start: float | None = None
        self.speech_end_wall: float | None = None

    async def recv(self) -> Any:
        if self.start is None:
            self.start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self.start + self.pts / WEBRTC_RATE_HZ - time.monotonic()))
        chunk = np.zeros(FRAME_SAMPLES, np.float32)
        part = self.audio[self.pts : self.pts + FRAME_SAMPLES]
        chunk[: len(part)] = part
        if len(part) and self.pts + FRAME_SAMPLES >= len(self.audio):
            self.speech_end_wall = time.monotonic()
        frame = to_av_frame(chunk, self.pts)
        self.pts += FRAME_SAMPLES
        return frame


def test_audio_frames_round_trip_through_av() -> None:
    samples = (0.5 * np.sin(np.linspace(0, 60, FRAME_SAMPLES))).astype(np.float32)
    back, rate = from_av_frame(to_av_frame(samples, 0))
    assert rate == WEBRTC_RATE_HZ and np.allclose(back, samples, atol=1e-4)
    assert to_av_frame(samples, 960).time_base == fractions.Fraction(1, WEBRTC_RATE_HZ)


async def test_a_peer_asks_over_webrtc_and_hears_the_answer(agent_engines: AgentEngines) -> None:
    call = VoiceCall(build_agent_session(agent_engines))
    client = aiortc.RTCPeerConnection()
    mic = SpokenTrack(np.concatenate([silence(0.5), speech("How many legs does a spider have?")]))
    client.addTrack(mic)
    events: list[dict[str, Any]] = []
    channel = client.createDataChannel("events")
    answered = asyncio.Event()

    def on_message(message: str) -> None:
        events.append(json.loads(message))
        if events[-1]["type"] == "agent_done":
            answered.set()

    channel.on("message", on_message)
    heard: list[tuple[float, np.ndarray]] = []
    readers: list[asyncio.Task[None]] = []

    async def listen(track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except aiortc.mediastreams.MediaStreamError:
                return
            heard.append((time.monotonic(), from_av_frame(frame)[0]))

    client.on("track", lambda track: readers.append(asyncio.create_task(listen(track))))
    await client.setLocalDescription(await client.createOffer())
    answer = await call.answer(client.localDescription.sdp, client.localDescription.type)
    await client.setRemoteDescription(aiortc.RTCSessionDescription(**answer))

    try:
        await asyncio.wait_for(answered.wait(), 40)
    finally:
        await client.close()
    await asyncio.wait_for(call.closed.wait(), 10)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)

    turns = [e for e in events if e["type"] == "user_turn"]
    assert turns and "spider" in turns[0]["text"].lower(), events
    assert any(e["type"] == "agent_done" and e["text"] for e in events)
    assert any(e["type"] == "turn_latency" for e in events)
    loud = [at for at, samples in heard if np.abs(samples).max() > 0.05]
    assert loud and mic.speech_end_wall is not None
    assert loud[0] - mic.speech_end_wall < 2.0  # the answer came back over the network, promptly
    assert call.frames_in > 100 and call.frames_dropped == 0
    await asyncio.sleep(0.1)
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and "voxline" in t.get_name()]
    assert not leftover


async def test_inbound_audio_frames_are_released_in_order_as_they_arrive_and_a_wait_leaves_no_delay() -> None:
    from aiortc.rtp import RtpPacket

    from voxline.stream.webrtc.call import inbound_packet_counts, release_audio_on_arrival

    pc = aiortc.RTCPeerConnection()
    pc.addTransceiver("audio")
    toc = 0b11111_0_00  # CELT fullband 20 ms, mono, one frame
    try:
        assert release_audio_on_arrival(pc) == 1
        assert release_audio_on_arrival(pc) == 0  # already replaced
        buffer = pc.getTransceivers()[0].receiver._RTCRtpReceiver__jitter_buffer

        def packet(sequence: int) -> RtpPacket:
            p = RtpPacket(sequence_number=sequence, timestamp=sequence * 960)
            p._data = bytes([toc, sequence % 256])
            return p

        released = [buffer.add(packet(n))[1] for n in (65534, 65535, 0, 2, 1, 3, 1)]
        counts = inbound_packet_counts(pc)
    finally:
        await pc.close()
    # In order across the wrap; 2 overtook 1 and waits for it; both then go at once, as
    # one two-frame Opus packet (code 3, VBR, the first frame's length) stamped as 1.
    assert [(f.timestamp, f.data) if f else None for f in released] == [
        (65534 * 960, bytes([toc, 254])), (65535 * 960, bytes([toc, 255])), (0, bytes([toc, 0])), None,
        (960, bytes([toc | 0b11, 0b1000_0010, 1, 1, 2])), (3 * 960, bytes([toc, 3])), None,
    ]
    assert counts == {"released": 6, "late": 1, "lost": 0}
