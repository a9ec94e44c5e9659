"""Async drivers that fuzz a running voxline server, one per wire protocol (shared by bench/fuzz.py and tests).

Each ``fuzz_*`` coroutine sends about ``messages`` seeded messages (``fuzz_cases``) to
the server at ``url`` (``ws://HOST:PORT``) and returns a ``Tally``: how many were sent,
how many bad ones got the answer they are owed, and every answer that was not clear
(a wrong error code or close code, an error shape the README does not document, a
session that died for another client's message, a hang). ``HealthWatch`` polls
``/healthz`` meanwhile; ``idle_counts`` / ``leaks`` compare its leak counters with the
idle ones; ``healthy_captions`` streams a known clip and checks its words.

Every task a driver starts is awaited before it returns; every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import websockets

try:  # run as a script (bench/ on sys.path) or imported as bench.fuzz_drivers
    import fuzz_cases as cases
except ImportError:  # pragma: no cover
    from bench import fuzz_cases as cases  # type: ignore[no-redef]

LEAK_FIELDS = ("sessions", "graphs", "peer_connections", "calls", "tasks")
ANSWER_TIMEOUT_S = 30.0
MAX_PROBLEMS_KEPT = 25


@dataclass
class Tally:
    """What one protocol's fuzzing sent and how the server answered."""

    messages: int = 0
    connections: int = 0
    answered: int = 0
    """Bad messages that got the answer they are owed."""
    unclear: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        """Count an answer that was not clear, keeping the first few descriptions."""
        self.unclear += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(text[:400])

    def as_dict(self) -> dict[str, Any]:
        """The tally for the bench's JSON."""
        return {"messages": self.messages, "connections": self.connections, "answered": self.answered,
                "unclear": self.unclear, "problems": self.problems}


def http_url(url: str) -> str:
    """The http:// form of a ws:// base URL."""
    return url.replace("ws://", "http://", 1)


# --- health and leaks ---------------------------------------------------------------------------


class HealthWatch:
    """Polls ``/healthz`` every ``interval_s`` until ``stop``; counts polls that were not a quick 200."""

    def __init__(self, url: str, interval_s: float = 0.25, timeout_s: float = 5.0) -> None:
        self.url = http_url(url)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.polls = 0
        self.failures: list[str] = []
        self.max_ms = 0.0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Poll until ``stop`` is called."""
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = await client.get(self.url + "/healthz")
                    if response.status_code != 200 or response.json().get("status") != "ok":
                        self.failures.append(f"healthz {response.status_code}")
                except (httpx.HTTPError, ValueError) as exc:
                    self.failures.append(f"healthz failed: {exc!r}")
                self.polls += 1
                self.max_ms = max(self.max_ms, (time.monotonic() - started) * 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)

    def stop(self) -> None:
        """End ``run`` after its current poll."""
        self._stop.set()


async def health(url: str) -> dict[str, Any]:
    """One ``/healthz`` body."""
    async with httpx.AsyncClient(timeout=10) as client:
        body: dict[str, Any] = (await client.get(http_url(url) + "/healthz")).json()
        return body


async def idle_counts(url: str, settle_s: float = 3.0) -> dict[str, int]:
    """The leak counters once they stop falling for ``settle_s`` (the idle values)."""
    best = {k: int((await health(url))[k]) for k in LEAK_FIELDS}
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = await health(url)
        best = {k: min(best[k], int(now[k])) for k in LEAK_FIELDS}
    return best


async def leaks(url: str, idle: dict[str, int], within_s: float = 20.0) -> dict[str, int]:
    """Each leak counter's excess over ``idle`` once settled (waiting up to ``within_s`` for it to come down)."""
    deadline = time.monotonic() + within_s
    while True:
        now = await health(url)
        excess = {k: max(0, int(now[k]) - idle[k]) for k in LEAK_FIELDS}
        if not any(excess.values()) or time.monotonic() > deadline:
            return excess
        await asyncio.sleep(0.25)


# --- the healthy session ----------------------------------------------------------------------------


async def healthy_captions(url: str, audio_16k: np.ndarray, words: tuple[str, ...], pace: float = 1.0) -> str:
    """Caption ``audio_16k`` at ``pace`` × real time; the finals' text ("" plus a reason when ``words`` are missing)."""
    chunk = 1600
    finals: list[str] = []
    pcm = (np.clip(audio_16k, -1, 1) * 32767).astype("<i2")
    async with asyncio.timeout(len(audio_16k) / 16000 / pace + ANSWER_TIMEOUT_S):
        async with websockets.connect(url + "/v1/captions") as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le", "language": "en"}))
            for i in range(0, len(pcm), chunk):
                await ws.send(pcm[i : i + chunk].tobytes())
                await asyncio.sleep(chunk / 16000 / pace)
            await ws.send(json.dumps({"type": "end"}))
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "final":
                    finals.append(event["text"])
    text = " ".join(finals)
    heard = set(text.lower().replace(".", " ").replace(",", " ").split())
    missing = [w for w in words if w not in heard]
    return text if not missing else f"MISSING {missing} in {text!r}"


async def healthy_while(url: str, audio_16k: np.ndarray, words: tuple[str, ...], busy: Awaitable[Any]) -> tuple[Any, list[str]]:
    """Run ``busy`` while captioning ``audio_16k`` again and again; its result and every transcript.

    Returns after the first caption session that ends after ``busy`` did; if a caption
    session raises or this is cancelled, ``busy`` is cancelled and awaited first.
    """
    transcripts: list[str] = []
    task = asyncio.ensure_future(busy)
    try:
        while True:
            transcripts.append(await healthy_captions(url, audio_16k, words))
            if task.done():
                break
    except BaseException:
        task.cancel()  # the healthy session failed, or this was cancelled: the fuzzing stops too
        await asyncio.gather(task, return_exceptions=True)
        raise
    return task.result(), transcripts


# --- /v1/captions -------------------------------------------------------------------------------------


async def _read_to_close(ws: Any, timeout_s: float = ANSWER_TIMEOUT_S) -> tuple[list[dict[str, Any]], int | None]:
    """Every JSON event until the server closes, and its close code (None: it did not close in time)."""
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for message in ws:
                if isinstance(message, str):
                    events.append(json.loads(message))
    except TimeoutError:
        return events, None
    except websockets.ConnectionClosed:
        pass
    return events, ws.close_code


def _check_caption_answer(tally: Tally, what: str, events: list[dict[str, Any]], code: int | None,
                          expected: cases.Expected | None) -> None:
    errors = [e for e in events if e.get("type") == "error"]
    for e in errors:
        if set(e) != {"type", "code", "message"} or e["code"] not in cases.CAPTION_CLOSE or not e["message"]:
            tally.problem(f"captions {what}: error shape {e}")
    got = errors[-1]["code"] if errors else None
    if code is None:
        tally.problem(f"captions {what}: no close within {ANSWER_TIMEOUT_S:g} s (events {events[-3:]})")
        return
    if len(errors) > 1:
        tally.problem(f"captions {what}: {len(errors)} error events")
    want_close = 1000 if got is None else cases.CAPTION_CLOSE.get(got)
    if code != want_close:
        tally.problem(f"captions {what}: error {got!r} with close {code}, not {want_close}")
        return
    if got == "internal_error":
        tally.problem(f"captions {what}: internal_error {errors[-1]['message']!r}")
        return
    if expected is None:
        return
    if got not in expected.codes:
        tally.problem(f"captions {what}: answered {got!r}, owed one of {sorted(map(str, expected.codes))}")
        return
    tally.answered += 1


async def _caption_stream(url: str, rng: random.Random, tally: Tally, max_bytes: int, per_connection: int) -> None:
    """One session: a valid config, ``per_connection`` messages it must take, then one that ends it."""
    config = cases.caption_config(rng)
    async with websockets.connect(url + "/v1/captions", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps(config))
        for _ in range(per_connection):
            await ws.send(cases.caption_message(rng, config["encoding"]))
        last, expected = cases.caption_terminal(rng, config["encoding"], max_bytes)
        await ws.send(last)
        tally.messages += per_connection + 2
        if expected.codes == {None} and rng.random() < 0.5:  # end out of order: more after it
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(cases.caption_audio(rng, config["encoding"]))
                await ws.send(json.dumps({"type": "end"}))
                tally.messages += 2
        events, code = await _read_to_close(ws)
    _check_caption_answer(tally, f"after {per_connection} messages, {str(last)[:60]!r}", events, code, expected)


async def _caption_first(url: str, rng: random.Random, tally: Tally, max_bytes: int) -> None:
    """One session whose first message is fuzzed (bad configs, audio or end before config)."""
    first, expected = cases.caption_first(rng, max_bytes)
    async with websockets.connect(url + "/v1/captions", max_size=None) as ws:
        await ws.recv()
        await ws.send(first)
        tally.messages += 1
        if expected is None:  # maybe a config the server takes: end it, then it must close cleanly or refuse
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps({"type": "end"}))
                tally.messages += 1
        events, code = await _read_to_close(ws)
    allowed = expected or cases.Expected(frozenset({None, "bad_config", "config_required", "unexpected_message",
                                                    "message_too_big"}))
    _check_caption_answer(tally, f"first message {str(first)[:80]!r}", events, code, allowed)


async def _caption_storm(url: str, rng: random.Random, tally: Tally, sockets: int) -> None:
    """Open ``sockets`` sockets at once and drop them: at once, after a config, or halfway through a frame."""

    async def one() -> None:
        with contextlib.suppress(OSError, websockets.WebSocketException, TimeoutError):
            async with asyncio.timeout(10):
                ws = await websockets.connect(url + "/v1/captions", max_size=None)
                tally.messages += 1
                how = rng.randrange(3)
                if how >= 1:
                    await ws.send(json.dumps(cases.caption_config(rng)))
                    tally.messages += 1
                if how == 2:
                    ws.transport.write(b"\x82\xfe\x10\x00" + rng.randbytes(4) + rng.randbytes(100))  # 4096 promised
                    tally.messages += 1
                ws.transport.abort()

    await asyncio.gather(*(one() for _ in range(sockets)))
    tally.connections += sockets


async def fuzz_captions(url: str, rng: random.Random, messages: int, *, max_message_bytes: int,
                        per_connection: int = 200, parallel: int = 2) -> Tally:
    """Fuzz ``/v1/captions`` with about ``messages`` messages (see module doc)."""
    tally = Tally()

    async def one_connection(seed: int) -> None:
        local = random.Random(seed)
        roll = local.random()
        try:
            if roll < 0.65:
                await _caption_stream(url, local, tally, max_message_bytes, local.randrange(1, per_connection * 2))
            elif roll < 0.93:
                await _caption_first(url, local, tally, max_message_bytes)
            else:
                await _caption_storm(url, local, tally, local.randrange(5, 40))
                return
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            tally.problem(f"captions connection (seed {seed}) failed: {exc!r}")
        tally.connections += 1

    while tally.messages < messages:
        await asyncio.gather(*(one_connection(rng.randrange(2**32)) for _ in range(parallel)))
    return tally


# --- WS /v1/realtime ---------------------------------------------------------------------------------------

REALTIME_ERROR_KEYS = {"type", "code", "message", "param", "event_id"}


async def _realtime_connection(url: str, rng: random.Random, tally: Tally, count: int, limit_bytes: int) -> None:
    """One Realtime session: ``count`` fuzzed events, then a sentinel it must still answer."""
    agent = rng.random() < 0.25
    beta = rng.random() < 0.3
    query = "" if agent else "?intent=transcription"
    headers = {"Authorization": "Bearer fuzz", **({"OpenAI-Beta": "realtime=v1"} if beta else {})}
    sentinel = f"sentinel-{rng.randrange(2**32)}"
    seen: list[dict[str, Any]] = []
    got_sentinel = asyncio.Event()
    async with websockets.connect(url + "/v1/realtime" + query, additional_headers=headers, max_size=None) as ws:
        created = json.loads(await ws.recv())
        if created.get("type") != "session.created":
            tally.problem(f"realtime: first event {created}")
            return

        async def read() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    event = json.loads(message)
                    seen.append(event)
                    if event.get("type") == "error" and event["error"].get("event_id") == sentinel:
                        got_sentinel.set()

        reader = asyncio.create_task(read(), name="fuzz-realtime-reader")
        try:
            for n in range(count):
                if rng.random() < 0.01:
                    await ws.send("x" * (limit_bytes + 1))
                else:
                    await ws.send(cases.realtime_event(rng, n, agent=agent, max_message_bytes=limit_bytes))
                if agent and rng.random() < 0.02:
                    await ws.send(json.dumps({"type": "response.create"}))
                    await ws.send(json.dumps({"type": "response.cancel"}))
                    tally.messages += 2
                tally.messages += 1
            await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": "item_fuzz_none",
                                      "event_id": sentinel}))
            tally.messages += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got_sentinel.wait(), ANSWER_TIMEOUT_S)
            closed_by_server = ws.close_code
        finally:
            await ws.close()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    tally.connections += 1
    errors = [e for e in seen if e.get("type") == "error"]
    for e in errors:
        body = e.get("error")
        if not isinstance(body, dict) or set(body) != REALTIME_ERROR_KEYS or not body.get("message") or not body.get("code"):
            tally.problem(f"realtime: error shape {e}")
        elif body["code"] == "internal_error" or body.get("type") == "server_error":
            tally.problem(f"realtime: server error {body}")
    tally.answered += len(errors)
    if not got_sentinel.is_set():
        tally.problem(f"realtime (agent={agent}, beta={beta}): session stopped answering (close {closed_by_server}); "
                      f"last events {[e.get('type') for e in seen[-4:]]}")


async def fuzz_realtime(url: str, rng: random.Random, messages: int, *, max_message_bytes: int,
                        per_connection: int = 1000, parallel: int = 2) -> Tally:
    """Fuzz ``/v1/realtime`` with about ``messages`` client events over long-lived sessions."""
    tally = Tally()

    async def one(seed: int) -> None:
        local = random.Random(seed)
        try:
            await _realtime_connection(url, local, tally, local.randrange(per_connection // 2, per_connection + 1),
                                       max_message_bytes)
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            tally.problem(f"realtime connection (seed {seed}) failed: {exc!r}")

    while tally.messages < messages:
        await asyncio.gather(*(one(rng.randrange(2**32)) for _ in range(parallel)))
    return tally


# --- POST /v1/webrtc/offer ------------------------------------------------------------------------------------


async def valid_offer_sdp() -> str:
    """A real aiortc offer (one audio track, the ``events`` data channel), gathered, for mutating."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        pc.createDataChannel("events")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


OFFER_CODES = {"bad_offer", "server_busy", "calls_unavailable"}


async def fuzz_offers(url: str, rng: random.Random, messages: int, sdp: str, parallel: int = 4) -> Tally:
    """Post about ``messages`` fuzzed offers over keep-alive connections; every answer must be documented."""
    tally = Tally()
    accepted = 0

    async def worker(client: httpx.AsyncClient, seed: int) -> None:
        nonlocal accepted
        local = random.Random(seed)
        while tally.messages < messages:
            body, statuses = cases.offer_body(local, sdp)
            tally.messages += 1
            try:
                response = await client.post("/v1/webrtc/offer", content=body, headers={"content-type": "application/json"})
                answer = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                tally.problem(f"offer {body[:80]!r}: {exc!r}")
                continue
            status = response.status_code
            if status == 200 and answer.get("type") == "answer" and answer.get("sdp") and answer.get("session_id"):
                accepted += 1
                continue
            error = answer.get("error") if isinstance(answer, dict) else None
            if status not in statuses or not isinstance(error, dict) or error.get("code") not in OFFER_CODES:
                tally.problem(f"offer {body[:100]!r}: {status} {str(answer)[:200]}")
            elif status == 503 and error["code"] == "server_busy" and "Retry-After" not in response.headers:
                tally.problem("offer: 503 server_busy without Retry-After")
            else:
                tally.answered += 1

    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    async with httpx.AsyncClient(base_url=http_url(url), timeout=20, limits=limits) as client:
        await asyncio.gather(*(worker(client, rng.randrange(2**32)) for _ in range(parallel)))
    tally.connections = accepted
    return tally


# --- the call's data channel ---------------------------------------------------------------------------------


def vc_answer(message: str | bytes) -> str:
    """The event a voice-changer call owes one client message: ``vc.updated`` or an error code."""
    from voxline.errors import ConfigError
    from voxline.models.voice_params import VoiceParams

    try:
        event = json.loads(message)
    except (TypeError, ValueError, RecursionError):
        return "bad_event"
    if not isinstance(event, dict):
        return "bad_event"
    if event.get("type") != "vc.update":
        return "unknown_event"
    try:
        VoiceParams.from_options({k: v for k, v in event.items() if k != "type"}, base=VoiceParams())
    except ConfigError:
        return "bad_vc_update"
    return "vc.updated"


async def _vc_call(url: str, rng: random.Random, tally: Tally, count: int, window: int) -> None:
    """One voice-changer call: ``count`` fuzzed channel messages in windows, each answered in order."""
    from voxline.clients.webrtc_client import CallClient

    client = CallClient(http_url(url), lambda n: np.zeros(n, np.float32), session={"mode": "voice_changer"})
    try:
        await client.connect(timeout_s=20)
        events = client.events()
        sent = 0
        while sent < count:
            batch = [cases.vc_message(rng) for _ in range(min(window, count - sent))]
            owed = [vc_answer(m) for m in batch]
            for message in batch:
                client.channel.send(message)
            sent += len(batch)
            tally.messages += len(batch)
            got: list[str] = []
            try:
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    while len(got) < len(owed):
                        event = await anext(events)
                        if event.get("type") in ("vc.updated", "error"):
                            got.append(event["type"] if event["type"] != "error" else event.get("code", "?"))
                            if event["type"] == "error" and not event.get("message"):
                                tally.problem(f"data channel: error without a message {event}")
            except (TimeoutError, StopAsyncIteration):
                tally.problem(f"data channel: {len(got)} of {len(owed)} answers came (call closed: {client.closed.is_set()})")
                return
            for message, want, have in zip(batch, owed, got, strict=True):
                if want != have:
                    tally.problem(f"data channel {str(message)[:100]!r}: answered {have!r}, owed {want!r}")
                else:
                    tally.answered += 1
    finally:
        await client.close()
        tally.connections += 1


async def fuzz_data_channel(url: str, rng: random.Random, messages: int, *, per_call: int = 5000,
                            window: int = 100) -> Tally:
    """Fuzz a voice-changer call's ``events`` channel with about ``messages`` messages over a few calls."""
    tally = Tally()
    while tally.messages < messages:
        seed = rng.randrange(2**32)
        try:
            await _vc_call(url, random.Random(seed), tally, min(per_call, messages - tally.messages), window)
        except Exception as exc:  # a refused or failed call is a finding, not a crash of the bench
            tally.problem(f"data channel call (seed {seed}) failed: {exc!r}")
            await asyncio.sleep(1.0)
    return tally


# --- the Redis bus ---------------------------------------------------------------------------------------------

VIEWER_CLOSES = {"unknown_session": 4404, "bus_unavailable": 1013, "server_busy": 1013}


async def _watch(url: str, session_id: str, start: str, timeout_s: float) -> tuple[list[Any], int | None]:
    events: list[Any] = []
    async with websockets.connect(f"{url}/v1/sessions/{session_id}/captions?from={start}") as ws:
        try:
            async with asyncio.timeout(timeout_s):
                async for message in ws:
                    try:
                        events.append(json.loads(message))
                    except ValueError:
                        events.append(message)
        except TimeoutError:
            return events, None
        except websockets.ConnectionClosed:
            pass
        return events, ws.close_code


def _check_viewer(tally: Tally, what: str, events: list[Any], code: int | None, ending: str) -> None:
    if code is None:
        tally.problem(f"redis {what}: the viewer hung (last {events[-2:]})")
        return
    junk = [e for e in events if not isinstance(e, dict) or not isinstance(e.get("type"), str)]
    if junk:
        tally.problem(f"redis {what}: the viewer got {len(junk)} malformed events, e.g. {str(junk[0])[:100]}")
    last = events[-1] if events else {}
    if isinstance(last, dict) and last.get("type") == "error":
        if VIEWER_CLOSES.get(last.get("code", "")) != code or not last.get("message"):
            tally.problem(f"redis {what}: error {last} with close {code}")
        else:
            tally.answered += 1
        return
    if not (isinstance(last, dict) and last.get("type") == "end" and code == 1000):
        tally.problem(f"redis {what}: ended with {str(last)[:120]} and close {code}")
    elif last.get("reason") not in ("ended", "node_lost") or (ending == "ended" and last["reason"] != "ended"):
        tally.problem(f"redis {what}: end reason {last.get('reason')!r}, expected {ending!r}")
    else:
        tally.answered += 1


async def _redis_round(url: str, redis: Any, rng: random.Random, tally: Tally, n: int, count: int) -> None:
    """One remote session as a viewer on the node sees it: fuzzed registry entry and stream, then its end."""
    from redis.exceptions import ResponseError

    sid = f"fuzz-{n}-{rng.randrange(10**6)}"
    session_key, stream_key = f"voxline:session:{sid}", f"voxline:stream:{sid}"
    wrong_type = rng.random() < 0.05
    fields = cases.redis_session_fields(rng, sid, malformed=rng.random() < 0.3)
    if not fields:
        fields = {"junk": "1"}
    await redis.hset(session_key, mapping=fields)
    if wrong_type:
        await redis.set(stream_key, "not a stream")
    seq = 0

    async def write(how_many: int) -> None:
        nonlocal seq
        pipe = redis.pipeline(transaction=False)
        for _ in range(how_many):
            seq += 1
            entry, _good = cases.redis_entry(rng, seq)
            pipe.xadd(stream_key, entry, id=f"{seq}-0")
        await pipe.execute(raise_on_error=False)
        tally.messages += how_many

    await write(rng.randrange(0, 50))
    ending = "ended" if rng.random() < 0.75 else "node_lost"
    viewer = asyncio.create_task(_watch(url, sid, rng.choice(("start", "now")), 20.0), name="fuzz-viewer")
    try:
        await asyncio.sleep(0.05)
        for _ in range(max(1, count // 100)):
            await write(100)
            await asyncio.sleep(0)
        if ending == "ended":
            seq += 1
            end = json.dumps({"type": "end", "reason": "ended", "seq": seq, "emitted_at": 1.0})
            with contextlib.suppress(ResponseError):  # the key is not a stream (wrong_type)
                await redis.xadd(stream_key, {"e": end}, id=f"{seq}-0")
        else:
            await redis.delete(session_key)
        tally.messages += 1
        events, code = await viewer
    finally:
        viewer.cancel()
        await asyncio.gather(viewer, return_exceptions=True)
        await redis.delete(session_key, stream_key)
    tally.connections += 1
    what = f"session {sid} (fields {sorted(fields)}, wrong_type={wrong_type}, ending {ending})"
    if wrong_type or "id" not in fields or fields.get("id") != sid:
        ending = "any"
    _check_viewer(tally, what, events, code, ending)


async def _redis_nodes(url: str, redis: Any, rng: random.Random, tally: Tally) -> None:
    """Malformed node entries in the registry: ``/v1/nodes`` and placement must still answer in JSON."""
    node_id = f"fuzz-node-{rng.randrange(1000)}"
    await redis.hset(f"voxline:node:{node_id}", mapping=cases.redis_node_fields(rng, node_id))
    await redis.sadd("voxline:nodes", node_id)
    tally.messages += 2
    async with httpx.AsyncClient(base_url=http_url(url), timeout=10) as client:
        for method, path, body in (("GET", "/v1/nodes", None), ("POST", "/v1/sessions", {"kind": "captions"})):
            response = await client.request(method, path, json=body)
            if response.status_code not in (200, 503):
                tally.problem(f"redis node entry: {method} {path} → {response.status_code} {response.text[:160]}")
            else:
                tally.answered += 1
    await redis.delete(f"voxline:node:{node_id}")
    await redis.srem("voxline:nodes", node_id)


async def fuzz_redis(url: str, redis_url: str, rng: random.Random, messages: int, per_session: int = 1000,
                     parallel: int = 4) -> Tally:
    """Write about ``messages`` fuzzed registry and stream entries for sessions viewers follow through the node."""
    import redis.asyncio as aioredis

    tally = Tally()
    redis = aioredis.from_url(redis_url, decode_responses=True)
    rounds = 0
    try:
        while tally.messages < messages:
            batch = []
            for _ in range(parallel):
                rounds += 1
                local = random.Random(rng.randrange(2**32))
                batch.append(_redis_round(url, redis, local, tally, rounds, local.randrange(100, per_session + 1)))
            batch.append(_redis_nodes(url, redis, random.Random(rng.randrange(2**32)), tally))
            results = await asyncio.gather(*batch, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    tally.problem(f"redis round failed: {result!r}")
    finally:
        await redis.aclose()
    return tally


Driver = Callable[..., Awaitable[Tally]]


# --- WS /v1/telephony/twilio and /telnyx ---------------------------------------------------------------------

PHONE_ALIVE_FRAMES = 5
"""Media frames the server must send after the junk to count the call as going on (100 ms of audio)."""


async def _phone_connection(url: str, rng: random.Random, tally: Tally, count: int, limit_bytes: int) -> None:
    """One phone call: ``count`` frames, junk among quiet media; the call must go on, or end with a documented code."""
    carrier = rng.choice(("twilio", "telnyx"))
    media_from_server = 0
    async with websockets.connect(f"{url}/v1/telephony/{carrier}", max_size=None) as ws:

        async def read() -> None:
            nonlocal media_from_server
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    frame = json.loads(message)
                    if frame.get("event") == "media":
                        media_from_server += 1
                    elif frame.get("event") not in ("mark", "clear"):
                        tally.problem(f"{carrier}: the server sent {str(frame)[:200]}")

        reader = asyncio.create_task(read(), name="fuzz-phone-reader")
        try:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(json.dumps(cases.phone_start(carrier, rng.choice(("PCMU", "PCMA")))))
            tally.messages += 2
            chunk = 1
            for _ in range(count):
                if rng.random() < 0.005:
                    frame: str | bytes = "x" * (limit_bytes + 1)
                    valid = False
                else:
                    frame, valid = cases.phone_frame(rng, carrier, chunk)
                chunk += valid
                await ws.send(frame)
                tally.messages += 1
                tally.answered += not valid
                if rng.random() < 0.05:
                    await asyncio.sleep(0.02)
            seen = media_from_server
            deadline = time.monotonic() + ANSWER_TIMEOUT_S
            while media_from_server < seen + PHONE_ALIVE_FRAMES and ws.close_code is None:
                if time.monotonic() > deadline:
                    tally.problem(f"{carrier}: the call went quiet: no audio from the server for {ANSWER_TIMEOUT_S} s")
                    break
                await ws.send(json.dumps(cases.phone_media(carrier, chunk, b"\xff" * 160)))
                chunk += 1
                await asyncio.sleep(0.02)
            if ws.close_code is None:
                await ws.send(json.dumps({"event": "stop", "stop": {}}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), ANSWER_TIMEOUT_S)
            code = ws.close_code
        finally:
            await ws.close()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    tally.connections += 1
    if code not in cases.PHONE_CLOSE_CODES:
        tally.problem(f"{carrier}: closed with {code} ({ws.close_reason!r}), not one of {sorted(cases.PHONE_CLOSE_CODES)}")


async def fuzz_telephony(url: str, rng: random.Random, messages: int, *, max_message_bytes: int,
                         per_call: int = 400, parallel: int = 2) -> Tally:
    """Fuzz the carriers' media-stream sockets with about ``messages`` frames over calls of ``per_call``."""
    tally = Tally()

    async def one(seed: int) -> None:
        local = random.Random(seed)
        try:
            await _phone_connection(url, local, tally, local.randrange(per_call // 2, per_call + 1), max_message_bytes)
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            tally.problem(f"phone call (seed {seed}) failed: {exc!r}")

    while tally.messages < messages:
        await asyncio.gather(*(one(rng.randrange(2**32)) for _ in range(parallel)))
    return tally
