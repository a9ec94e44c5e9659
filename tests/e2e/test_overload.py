"""Overload: twice the capacity of every session kind at once, against a real server.

One server on loopback with small limits (``MAX_SESSIONS`` sessions of every kind,
``MAX_CALLS`` of them calls or Realtime agents, ``MAX_VIEWERS`` viewers). Each test
offers twice a limit at the same moment, as real clients do, and checks what those
clients notice: exactly the limit is admitted; every one past it gets a clear refusal
(HTTP 503 with ``Retry-After`` and ``server_busy`` for offers and placement; an
``error`` event naming ``server_busy`` with a message, then close 1013, for caption and
Realtime sockets and viewers); no admitted session ever gets a refusal; and the
admitted sessions still do their work (the captions' words right, the calls and the
Realtime agents answered, the transcriptions right).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import running_server
from tests.e2e.call_events import Events, said
from tests.speech_fixtures import (
    COFFEE,
    FOX,
    STELLA,
    TRAIN,
    WINDOW,
    normalize,
    silence,
    speech,
    word_errors,
)
from voxline.clients.caption_client import pcm16
from voxline.clients.webrtc_client import CallClient, CallRefusedError
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.testing.clip_microphone import ClipMicrophone
from voxline.testing.realtime_talk import FRAME, pcm24

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MAX_SESSIONS = 4
MAX_CALLS = 2
MAX_VIEWERS = 2
BUSY_CLOSE = 1013
CHUNK_S = 0.1
OPEN_TIMEOUT_S = 10.0
RESULT_TIMEOUT_S = 60.0
SETTLE_S = 1.0
"""Silence after a transcriber's speech before its utterances are taken as all started (s)."""
SENTENCES = (FOX, COFFEE, TRAIN, WINDOW, STELLA)
QUESTIONS = (("What color is the sky?", "sky"), ("How many legs does a spider have?", "spider"))
"""Questions for the admitted calls and agents, with a word the agent must have heard."""


@pytest.fixture(scope="module")
def busy_server(caption_engines: CaptionEngines, agent_engines: AgentEngines) -> Iterator[str]:
    """A server with calls on and small limits; its ws:// URL."""
    with running_server(
        caption_engines, agent_engines, max_sessions=MAX_SESSIONS, max_calls=MAX_CALLS, max_viewers=MAX_VIEWERS,
        call_connect_timeout_s=5.0, call_media_timeout_s=3.0,
    ) as url:
        yield url


def http(url: str) -> str:
    return url.replace("ws://", "http://", 1)


@dataclass
class SocketOutcome:
    """What one WebSocket client saw: every event in order, and how the socket closed."""

    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def admitted(self) -> bool:
        """The server's first message opened a session (not an error)."""
        return bool(self.events) and self.events[0]["type"] in ("session", "session.created")

    def errors(self) -> list[dict[str, Any]]:
        """Every error event, in the caption/viewer shape or the Realtime one (``error`` object)."""
        return [e.get("error", e) for e in self.events if e["type"] == "error"]

    def text(self, kind: str = "final") -> str:
        return " ".join(e["text"] for e in self.events if e["type"] == kind)


def says_retry(message: str) -> bool:
    """The message tells the client to come back later."""
    return "retry" in message.lower() or "try again" in message.lower()


def assert_busy_refusal(outcome: SocketOutcome, words: str) -> None:
    """A refused socket: one ``server_busy`` error with a message saying why, then close 1013."""
    assert not outcome.admitted, outcome.events[:1]
    errors = outcome.errors()
    assert len(errors) == 1 and errors[0]["code"] == "server_busy", outcome.events
    assert words in errors[0]["message"] and says_retry(errors[0]["message"]), errors[0]
    assert outcome.close_code == BUSY_CLOSE, (outcome.close_code, outcome.close_reason)


def assert_no_refusal(outcome: SocketOutcome) -> None:
    """An admitted socket ends normally and never hears of a refusal."""
    assert outcome.admitted
    assert not outcome.errors(), outcome.errors()
    assert outcome.close_code == 1000, (outcome.close_code, outcome.close_reason)


async def read_until_closed(ws: Any, outcome: SocketOutcome, timeout_s: float) -> None:
    """Collect events until the server closes the socket (bounded by ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        try:
            async for message in ws:
                outcome.events.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass
    outcome.close_code, outcome.close_reason = ws.close_code, ws.close_reason or ""


async def caption_socket(url: str, audio: np.ndarray, admitted: asyncio.Queue[str]) -> SocketOutcome:
    """A ``/v1/captions`` client streaming ``audio`` at real-time pace once admitted.

    The session id of an admitted socket goes to ``admitted`` (for viewers)."""
    outcome = SocketOutcome()
    async with websockets.connect(url + "/v1/captions", open_timeout=OPEN_TIMEOUT_S) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):  # a refusal may close before the config is out
            await ws.send(json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le", "language": "en"}))
        first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S))
        outcome.events.append(first)
        if first["type"] == "session":
            admitted.put_nowait(first["id"])
            step = round(16000 * CHUNK_S)
            for start in range(0, len(audio), step):
                await ws.send(pcm16(audio[start : start + step]))
                await asyncio.sleep(CHUNK_S)
            await ws.send(json.dumps({"type": "end"}))
        await read_until_closed(ws, outcome, RESULT_TIMEOUT_S)
    return outcome


async def viewer_socket(url: str, session_id: str) -> SocketOutcome:
    """A viewer of ``session_id`` from the start, until the server ends it."""
    outcome = SocketOutcome()
    async with websockets.connect(f"{url}/v1/sessions/{session_id}/captions?from=start", open_timeout=OPEN_TIMEOUT_S) as ws:
        await read_until_closed(ws, outcome, RESULT_TIMEOUT_S)
    return outcome


async def place(url: str, kind: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(http(url) + "/v1/sessions", json={"kind": kind})


async def health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(http(url) + "/healthz")).json()


async def until_idle(url: str, within_s: float = 15.0) -> dict[str, Any]:
    """``/healthz`` once no session, call or graph is live, or as it is when ``within_s`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        state = await health(url)
        if (state["sessions"], state["calls"], state["graphs"]) == (0, 0, 0) or loop.time() > deadline:
            return state
        await asyncio.sleep(0.2)


def assert_idle(state: dict[str, Any]) -> None:
    """Every session, call, graph and peer connection is gone."""
    counts = {k: state[k] for k in ("sessions", "calls", "graphs", "peer_connections")}
    assert counts == dict.fromkeys(counts, 0), state


def assert_busy_response(response: httpx.Response) -> None:
    """An HTTP refusal: 503, ``Retry-After`` in seconds, ``server_busy`` with a message."""
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "server_busy" and says_retry(error["message"]), error


async def test_twice_the_caption_capacity_admits_the_limit_refuses_the_rest_and_the_admitted_words_are_right(
    busy_server: str,
) -> None:
    assert_idle(await until_idle(busy_server))
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(2 * MAX_SESSIONS)]
    audio = [np.concatenate([silence(0.3), speech(t), silence(1.0)]) for t in texts]
    ids: asyncio.Queue[str] = asyncio.Queue()
    async with asyncio.TaskGroup() as group:
        sockets = [group.create_task(caption_socket(busy_server, a, ids)) for a in audio]
        first_id = await asyncio.wait_for(ids.get(), OPEN_TIMEOUT_S)
        await asyncio.sleep(0.5)  # every offer has had its answer; the admitted ones are mid-stream
        placements = [await place(busy_server, "captions") for _ in range(2)]
        state = await health(busy_server)
        viewers = [group.create_task(viewer_socket(busy_server, first_id)) for _ in range(2 * MAX_VIEWERS)]
    outcomes = [s.result() for s in sockets]
    admitted = [(t, o) for t, o in zip(texts, outcomes, strict=True) if o.admitted]
    assert len(admitted) == MAX_SESSIONS, [o.events[:1] for o in outcomes]
    assert state["sessions"] == MAX_SESSIONS
    for outcome in outcomes:
        if not outcome.admitted:
            assert_busy_refusal(outcome, f"limit of {MAX_SESSIONS} sessions")
    for text, outcome in admitted:
        assert_no_refusal(outcome)
        assert word_errors(text, outcome.text()) <= 1, (text, outcome.text())
    for response in placements:
        assert_busy_response(response)

    watched = [v.result() for v in viewers]
    seen = [v for v in watched if v.admitted]
    assert len(seen) == MAX_VIEWERS, [v.events[:1] for v in watched]
    for outcome in watched:
        if not outcome.admitted:
            assert_busy_refusal(outcome, f"limit of {MAX_VIEWERS} viewers")
    publisher = next(o for o in outcomes if o.admitted and o.events[0]["id"] == first_id)
    for outcome in seen:
        end = outcome.events[-1]
        assert outcome.close_code == 1000 and (end["type"], end["reason"]) == ("end", "ended"), end
        assert not outcome.errors()
        assert normalize(outcome.text()) == normalize(publisher.text()), "every viewer got every final"
    assert_idle(await until_idle(busy_server))
    assert (await place(busy_server, "captions")).status_code == 200, "the server takes sessions again"


async def connect_call(url: str, mic: ClipMicrophone) -> CallClient | CallRefusedError:
    """A caller's offer: the connected client, or the server's refusal (the client closed)."""
    client = CallClient(http(url), mic)
    try:
        await client.connect(timeout_s=OPEN_TIMEOUT_S)
    except CallRefusedError as refused:
        await client.close()
        return refused
    except BaseException:
        await client.close()
        raise
    return client


async def ask(client: CallClient, mic: ClipMicrophone, question: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Say ``question`` on a connected call; its answer's ``agent_done`` and every event seen."""
    events = Events(client)
    try:
        mic.say(said(question))
        done = await events.wait_for("agent_done", within_s=RESULT_TIMEOUT_S)
    finally:
        await events.stop()
    return done, events.seen


async def test_twice_the_call_capacity_answers_the_limit_and_refuses_the_rest_with_retry_after(
    busy_server: str,
) -> None:
    assert_idle(await until_idle(busy_server))
    mics = [ClipMicrophone() for _ in range(2 * MAX_CALLS)]
    for question, _ in QUESTIONS:
        said(question)  # Piper runs before the calls, not while they connect
    offers = await asyncio.gather(*(connect_call(busy_server, mic) for mic in mics))
    calls = [(c, m) for c, m in zip(offers, mics, strict=True) if isinstance(c, CallClient)]
    try:
        refusals = [c for c in offers if isinstance(c, CallRefusedError)]
        assert len(calls) == MAX_CALLS and len(refusals) == MAX_CALLS, offers
        for refused in refusals:
            assert refused.status == 503 and refused.code == "server_busy", refused
            assert refused.retry_after_s is not None and refused.retry_after_s > 0
            assert f"limit of {MAX_CALLS} live calls" in str(refused)
        assert_busy_response(await place(busy_server, "call"))
        agent = await realtime_socket(busy_server, None)  # Realtime agents share the call limit
        assert_busy_refusal(agent, f"limit of {MAX_CALLS} live calls")
        answers = await asyncio.gather(*(ask(c, m, q) for (c, m), (q, _) in zip(calls, QUESTIONS, strict=True)))
        hung_up = [c.closed.is_set() for c, _ in calls]
    finally:
        for client, _ in calls:
            await client.close()
    for (done, seen), (_, keyword) in zip(answers, QUESTIONS, strict=True):
        assert done["text"], done
        turns = [e["text"].lower() for e in seen if e["type"] == "user_turn"]
        assert any(keyword in t for t in turns), (keyword, turns)
        assert not [e for e in seen if e["type"] == "error"]
    assert not any(hung_up), "no admitted call was dropped"
    assert_idle(await until_idle(busy_server))


async def realtime_socket(url: str, intent: str | None, audio: np.ndarray | None = None) -> SocketOutcome:
    """A raw ``/v1/realtime`` client; once admitted it says ``audio`` (20 ms appends in real
    time, then silence) and reads until its turn's result: the transcription's completion
    (``intent="transcription"``) or the agent's ``response.done`` (a text reply)."""
    outcome = SocketOutcome()
    query = "?intent=transcription" if intent == "transcription" else ""
    async with websockets.connect(
        f"{url}/v1/realtime{query}", additional_headers={"Authorization": "Bearer sk-any"},
        open_timeout=OPEN_TIMEOUT_S, max_size=None,
    ) as ws:
        outcome.events.append(json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S)))
        if not outcome.admitted or audio is None:
            await read_until_closed(ws, outcome, OPEN_TIMEOUT_S)
            return outcome
        if intent is None:
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}))
        spoken = asyncio.Event()
        microphone = asyncio.create_task(_speak(ws, pcm24(audio), spoken), name="overload-realtime-mic")
        try:
            await _read_result(ws, outcome, transcription=intent == "transcription", spoken=spoken)
        finally:
            microphone.cancel()
            await asyncio.gather(microphone, return_exceptions=True)
        await ws.close()
        outcome.close_code = ws.close_code
    return outcome


async def _read_result(ws: Any, outcome: SocketOutcome, *, transcription: bool, spoken: asyncio.Event) -> None:
    """Read events into ``outcome`` until the turn's result is in: for an agent its
    ``response.done``; for a transcriber a completion for every utterance it heard start,
    ``SETTLE_S`` after the speech went out. Bounded by ``RESULT_TIMEOUT_S``."""
    loop = asyncio.get_running_loop()
    settled_at: float | None = None

    def count(kind: str) -> int:
        return sum(e["type"] == kind for e in outcome.events)

    async with asyncio.timeout(RESULT_TIMEOUT_S):
        while True:
            if spoken.is_set() and settled_at is None:
                settled_at = loop.time() + SETTLE_S
            if not transcription and count("response.done"):
                return
            completed = count("conversation.item.input_audio_transcription.completed")
            settled = settled_at is not None and loop.time() >= settled_at
            if transcription and settled and completed and completed >= count("input_audio_buffer.speech_started"):
                return
            with contextlib.suppress(TimeoutError):
                outcome.events.append(json.loads(await asyncio.wait_for(ws.recv(), 0.25)))


async def _speak(ws: Any, pcm: bytes, spoken: asyncio.Event) -> None:
    """Stream ``pcm`` (24 kHz PCM16) as 20 ms appends in real time, then silence, until
    cancelled; ``spoken`` is set once the last of ``pcm`` is out."""
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0
    while True:
        if sent * FRAME * 2 >= len(pcm):
            spoken.set()
        chunk = pcm[sent * FRAME * 2 : (sent + 1) * FRAME * 2].ljust(FRAME * 2, b"\0")
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
        sent += 1
        await asyncio.sleep(max(0.0, start + sent * 0.02 - loop.time()))


async def test_twice_the_realtime_capacity_of_agents_and_transcribers_refuses_the_rest_with_1013(
    busy_server: str,
) -> None:
    assert_idle(await until_idle(busy_server))
    agents = await asyncio.gather(*(
        realtime_socket(busy_server, None, speech(QUESTIONS[i % len(QUESTIONS)][0])) for i in range(2 * MAX_CALLS)
    ))
    assert sum(a.admitted for a in agents) == MAX_CALLS, [a.events[:1] for a in agents]
    for outcome in agents:
        if outcome.admitted:
            assert not outcome.errors(), outcome.errors()
            done = next(e for e in outcome.events if e["type"] == "response.done")
            assert done["response"]["status"] == "completed", done
            assert done["response"]["output"][0]["content"][0]["text"]
        else:
            assert_busy_refusal(outcome, f"limit of {MAX_CALLS} live calls")
    assert_idle(await until_idle(busy_server))

    texts = [SENTENCES[i % len(SENTENCES)] for i in range(2 * MAX_SESSIONS)]
    transcribers = await asyncio.gather(*(realtime_socket(busy_server, "transcription", speech(t)) for t in texts))
    assert sum(t.admitted for t in transcribers) == MAX_SESSIONS, [t.events[:1] for t in transcribers]
    for text, outcome in zip(texts, transcribers, strict=True):
        if outcome.admitted:
            assert not outcome.errors(), outcome.errors()
            heard = " ".join(e["transcript"] for e in outcome.events if e["type"].endswith("transcription.completed"))
            assert word_errors(text, heard) <= 1, (text, heard, [
                (e["type"], e.get("transcript")) for e in outcome.events if not e["type"].endswith("append")])
        else:
            assert_busy_refusal(outcome, f"limit of {MAX_SESSIONS} sessions")
    assert_idle(await until_idle(busy_server))


async def until_calls(url: str, count: int, within_s: float = OPEN_TIMEOUT_S) -> None:
    """Until ``/healthz`` counts ``count`` live calls (``TimeoutError`` after ``within_s``)."""
    async with asyncio.timeout(within_s):
        while True:
            if (await health(url))["calls"] >= count:
                return
            await asyncio.sleep(0.05)


async def test_with_calls_seated_every_other_kind_at_twice_its_capacity_is_held_to_the_shared_limits(
    busy_server: str,
) -> None:
    assert_idle(await until_idle(busy_server))
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(2 * MAX_SESSIONS)]
    ids: asyncio.Queue[str] = asyncio.Queue()
    mics = [ClipMicrophone() for _ in range(2 * MAX_CALLS)]
    streams = [np.concatenate([speech(t), silence(1.0)]) for t in texts]  # Piper runs before, not while, offering
    questions = [speech(QUESTIONS[i % 2][0]) for i in range(2 * MAX_CALLS)]
    for question, _ in QUESTIONS:
        said(question)
    async with asyncio.TaskGroup() as group:
        offers = [group.create_task(connect_call(busy_server, mic)) for mic in mics]
        await until_calls(busy_server, MAX_CALLS)
        captions = [group.create_task(caption_socket(busy_server, a, ids)) for a in streams]
        agents = [group.create_task(realtime_socket(busy_server, None, q)) for q in questions]
    answered = [o.result() for o in offers]
    calls = [(c, m) for c, m in zip(answered, mics, strict=True) if isinstance(c, CallClient)]
    try:
        answers = await asyncio.gather(*(ask(c, m, q) for (c, m), (q, _) in zip(calls, QUESTIONS, strict=True)))
        hung_up = [c.closed.is_set() for c, _ in calls]
    finally:
        for client, _ in calls:
            await client.close()
    assert len(calls) == MAX_CALLS and not any(hung_up)
    for refused in answered:
        if isinstance(refused, CallRefusedError):
            assert refused.status == 503 and refused.code == "server_busy" and refused.retry_after_s, refused
    for (done, seen), (_, keyword) in zip(answers, QUESTIONS, strict=True):
        assert done["text"] and any(keyword in e["text"].lower() for e in seen if e["type"] == "user_turn"), seen
    for outcome in (a.result() for a in agents):  # past the calls, or past the sessions the captions filled
        assert_busy_refusal(outcome, "limit of")
    caption_outcomes = [c.result() for c in captions]
    assert sum(o.admitted for o in caption_outcomes) == MAX_SESSIONS - MAX_CALLS, "the calls hold session places too"
    for text, outcome in zip(texts, caption_outcomes, strict=True):
        if outcome.admitted:
            assert_no_refusal(outcome)
            assert word_errors(text, outcome.text()) <= 1, (text, outcome.text())
        else:
            assert_busy_refusal(outcome, f"limit of {MAX_SESSIONS} sessions")
    assert_idle(await until_idle(busy_server))


async def test_a_busy_socket_close_frame_carries_the_reason(busy_server: str) -> None:
    ids: asyncio.Queue[str] = asyncio.Queue()
    async with asyncio.TaskGroup() as group:
        sockets = [group.create_task(caption_socket(busy_server, speech(FOX), ids)) for _ in range(MAX_SESSIONS + 1)]
    refused = [s.result() for s in sockets if not s.result().admitted]
    assert refused and all(o.close_code == BUSY_CLOSE and "limit" in o.close_reason for o in refused), refused
