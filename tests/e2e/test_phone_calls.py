"""Phone calls on loopback: a simulated carrier (``bench/phone_sim.py``) speaks Twilio and Telnyx to a real server.

The caller's words reach the agent through 8 kHz G.711; the agent's answer comes back
paced, with marks the simulated carrier echoes only once the audio before them has
played; a barge-in makes the server clear the carrier's queue, and the history keeps
only what the carrier played.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soxr
import websockets

from tests.conftest import ServedApp, http, running_app, running_server
from tests.speech_fixtures import speech
from voxline.config import TelephonyConfig
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from phone_sim import LOUD, PhoneCaller

pytestmark = pytest.mark.slow
AUTH_TOKEN = "twilio-test-token"
SPIDER = "How many legs does a spider have?"
STORY = "Tell me a long story about a dragon who lives in a castle."
STOP = "Stop, stop. Tell me about cats instead."


@pytest.fixture(scope="module")
def phone_app(caption_engines: CaptionEngines, agent_engines: AgentEngines) -> Iterator[ServedApp]:
    """A server taking phone calls (up to 4), no signature check."""
    with running_app(caption_engines, agent_engines, max_calls=4) as served:
        yield served


@pytest.fixture(scope="module")
def phone_server(phone_app: ServedApp) -> str:
    """That server's ws:// base URL."""
    return phone_app.url


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def transcript(url: str, session_id: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{http(url)}/v1/sessions/{session_id}/transcript")
    assert response.status_code == 200, response.text
    return list(response.json()["finals"])


async def wait_for_reply(call: PhoneCaller, after: float, timeout_s: float = 30.0, quiet_s: float = 1.5) -> float:
    """Wait until the caller has heard a reply begin after ``after`` and end; when it began."""
    deadline = time.monotonic() + timeout_s
    began = None
    while time.monotonic() < deadline:
        began = began or call.first_loud_after(after)
        if began is not None and call.quiet_since(began, quiet_s):
            return began
        await asyncio.sleep(0.1)
    raise AssertionError(f"no complete reply within {timeout_s} s (began: {began})")


@pytest.mark.parametrize("carrier", ["twilio", "telnyx"])
async def test_a_caller_asks_over_the_phone_and_hears_the_answer(phone_server: str, carrier: str) -> None:
    session_id = f"phone-{uuid.uuid4().hex[:8]}"
    url = f"{phone_server}/v1/telephony/{carrier}?session={session_id}"
    # Telnyx: A-law, chunks of 20-60 ms, 0-60 ms of jitter that reorders them
    options = {"encoding": "PCMA", "jitter_ms": 60.0, "chunk_ms": (20, 60), "seed": 5} if carrier == "telnyx" else {}
    async with PhoneCaller(url, carrier, **options) as call:  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        said = await call.say(speech(SPIDER), 16000, SPIDER)
        began = await wait_for_reply(call, said.last_loud_at)
        heard_s = sum(np.abs(a).max() > LOUD for t, a in call.played if t >= began) * 0.02
    finals = await transcript(phone_server, session_id)
    user = " ".join(str(f["text"]) for f in finals if f.get("speaker") == "user")
    agent = " ".join(str(f["text"]) for f in finals if f.get("speaker") == "agent")
    assert {"legs", "spider"} <= set(words(user)), user
    assert agent and heard_s > 0.5, (agent, heard_s)
    played_marks = [m for m in call.marks if m.played]
    assert played_marks and all(m.echoed_at and m.echoed_at >= m.arrived_at for m in played_marks)
    assert call.close_code == 1000


async def test_a_barge_in_clears_the_carrier_and_the_history_keeps_only_what_it_played(
    phone_server: str, caption_engines: CaptionEngines
) -> None:
    session_id = f"phone-{uuid.uuid4().hex[:8]}"
    url = f"{phone_server}/v1/telephony/twilio?session={session_id}"
    # a carrier that holds 1 s before playing: what was sent runs well ahead of what was heard
    async with PhoneCaller(url, "twilio", playout_delay_ms=1000.0) as call:
        await asyncio.sleep(0.5)
        said = await call.say(speech(STORY), 16000, STORY)
        began = await wait_for_reply(call, said.last_loud_at, quiet_s=0.0)
        await asyncio.sleep(max(0.0, began + 1.5 - time.monotonic()))
        barge = await call.say(speech(STOP), 16000, STOP)
        await asyncio.sleep(2.0)
    assert call.clears, "the server never cleared the carrier's queue"
    cleared_at = next(t for t in call.clears if t >= barge.first_loud_at)
    assert cleared_at - barge.first_loud_at < 1.0
    finals = await transcript(phone_server, session_id)
    cut = [f for f in finals if f.get("speaker") == "agent" and f.get("interrupted")]
    assert cut, finals
    heard_words = words(str(cut[0]["text"]))
    played = call.heard(began, cleared_at)
    pad = np.zeros(8000, np.float32)  # Whisper keeps a last word that ends at the audio's edge less surely
    audio = np.concatenate([pad, soxr.resample(played, 8000, 16000).astype(np.float32), pad])
    hypothesis = await caption_engines.recognizer.transcribe(audio, final=True, deadline=time.monotonic())
    played_words = words(" ".join(w.text for w in hypothesis.words))
    # what the history holds is what the caller heard: not the second more that was only sent
    assert len(heard_words) >= 2 and abs(len(heard_words) - len(played_words)) <= 2, (heard_words, played_words)
    assert heard_words[-1] in played_words, (heard_words, played_words)


def loud_s(frames: list[tuple[float, np.ndarray]], since: float, until: float = float("inf")) -> float:
    """Seconds of loud 20 ms frames among ``(time, audio)`` frames between two wall times."""
    return sum(np.abs(a).max() > LOUD for t, a in frames if since <= t < until) * 0.02


async def test_hanging_up_lets_the_carrier_play_the_last_words_then_closes_the_line(phone_app: ServedApp) -> None:
    url = f"{phone_app.url}/v1/telephony/twilio?session=phone-{uuid.uuid4().hex[:8]}"
    # a carrier that holds 1.5 s before playing: the whole answer is sent long before it is heard
    async with PhoneCaller(url, "twilio", playout_delay_ms=1500.0) as call:
        await asyncio.sleep(0.5)
        said = await call.say(speech(SPIDER), 16000, SPIDER)
        deadline = time.monotonic() + 30
        while not (sent := call.received_audio(said.last_loud_at)) or any(
            np.abs(a).max() > LOUD for t, a in sent if t > time.monotonic() - 0.6
        ) or not any(np.abs(a).max() > LOUD for _, a in sent):  # the answer sent, then 0.6 s of quiet
            assert time.monotonic() < deadline, "no answer was sent"
            await asyncio.sleep(0.05)
        (phone,) = [c for c in phone_app.app.state.calls.phone_calls if c.call_id == call.call_id]
        hung_up_at = time.monotonic()
        await phone_app.call(phone.hang_up("goodbye"), timeout_s=15)
        await asyncio.wait_for(call.closed.wait(), 5)
        closed_at = time.monotonic()
    assert call.close_code == 1000
    sent_s = loud_s(call.received_audio(said.last_loud_at), said.last_loud_at)
    queued_s = sent_s - loud_s(call.played, said.last_loud_at, hung_up_at)
    assert queued_s > 0.3, "the carrier should still have had the answer queued at the hang-up"
    # every loud frame the server sent was played before the line closed, and the last
    # thing sent was the hang-up's mark, echoed once played
    played_s = loud_s(call.played, said.last_loud_at, closed_at)
    assert abs(played_s - sent_s) <= 0.04, f"{played_s:.2f} s of the {sent_s:.2f} s sent played before the close"
    last = call.received[-1][1]
    assert last["event"] == "mark" and call.marks[-1].name == last["mark"]["name"] and call.marks[-1].played
    assert call.marks[-1].echoed_at is not None and call.marks[-1].echoed_at <= closed_at


async def test_the_agents_voice_coming_back_down_the_line_does_not_interrupt_it(phone_server: str) -> None:
    # carrier-side echo: what the caller's phone plays comes back half as loud, 200 ms later
    session_id = f"phone-{uuid.uuid4().hex[:8]}"
    url = f"{phone_server}/v1/telephony/twilio?session={session_id}"
    async with PhoneCaller(url, "twilio", echo_gain=0.5, echo_delay_ms=200.0) as call:
        await asyncio.sleep(0.5)
        said = await call.say(speech(STORY), 16000, STORY)
        began = await wait_for_reply(call, said.last_loud_at, timeout_s=60.0)
        reply_s = loud_s(call.played, began)
    assert reply_s > 2.0, f"the story ran {reply_s:.1f} s"
    assert not [t for t in call.clears if t > began], "the agent stopped for its own voice"
    finals = await transcript(phone_server, session_id)
    assert not [f for f in finals if f.get("speaker") == "agent" and f.get("interrupted")], finals
    user = [f["text"] for f in finals if f.get("speaker") == "user"]
    assert len(user) == 1 and {"story", "dragon"} <= set(words(str(user[0]))), user  # no echo taken for the caller


async def test_an_unsupported_audio_format_ends_the_call_with_1003(phone_server: str) -> None:
    async with websockets.connect(f"{phone_server}/v1/telephony/telnyx") as ws:
        await ws.send('{"event": "connected", "version": "1.0.0"}')
        await ws.send('{"event": "start", "sequence_number": "1", "stream_id": "s", "start": {"call_control_id": "c",'
                      ' "media_format": {"encoding": "OPUS", "sample_rate": 16000, "channels": 1}}}')
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1003 and "OPUS" in (ws.close_reason or "")


async def test_bad_frames_in_a_call_are_skipped_and_the_call_goes_on(phone_server: str) -> None:
    async with PhoneCaller(f"{phone_server}/v1/telephony/twilio", "twilio") as call:
        for junk in (b"\x00\x01", "not json", '{"event": "media", "media": {"payload": "@@"}}', '{"event": "nope"}'):
            await call.send_raw(junk)
        await call.dtmf("5")
        before = len(call.received)
        await asyncio.sleep(0.5)
        assert len(call.received) - before >= 10  # 20 ms media frames keep coming
        assert call.close_code is None


@pytest.fixture(scope="module")
def signed_server(caption_engines: CaptionEngines, agent_engines: AgentEngines) -> Iterator[str]:
    """A server that checks Twilio's signature."""
    with running_server(caption_engines, agent_engines, telephony=TelephonyConfig(twilio_auth_token=AUTH_TOKEN)) as url:
        yield url


async def test_with_an_auth_token_only_streams_twilio_signed_get_in(signed_server: str) -> None:
    url = f"{signed_server}/v1/telephony/twilio"
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401
    async with PhoneCaller(url, "twilio", twilio_auth_token="wrong") as call:
        await asyncio.wait_for(call.closed.wait(), 10)
    assert call.close_code == 4403
    async with PhoneCaller(url, "twilio", twilio_auth_token=AUTH_TOKEN) as call:
        await asyncio.sleep(0.5)
        assert call.close_code is None and any(f.get("event") == "media" for _, f in call.received)
