"""Soak: one ``voxline serve`` under a steady mix of every session kind for ``--minutes``.

Starts one server subprocess (embedded models, calls on, CPU admission off with
``VOXLINE_SERVER__MAX_CPU_LOAD=1.0``, limits from ``--max-sessions``, ``--max-calls``,
``--max-viewers``) and keeps about ``--load`` (0.7) of its capacity busy: *lanes*, each
starting one session, running it to its end, pausing 0.2–0.8 s (seeded) and starting
the next, until the time is up. Lanes: ``round(load * max_calls)`` agent lanes (calls
and Realtime agents, half each; they share ``max_calls``), then caption lanes up to
``round(load * max_sessions)`` sessions in all, and ``round(load * max_viewers)``
viewers spread over the caption lanes' sessions.

- **captions**: ``/v1/captions`` streaming a stream of ``real`` recordings
  (``bench/speech_sets.py``; clips of at most 12 s, 0.8–1.2 s apart, about
  ``CAPTION_STREAM_S``) at real-time pace in 100 ms chunks, then ``end``.
- **viewers**: ``/v1/sessions/{id}/captions?from=start`` of a caption session, until its
  ``end``; a viewer that got fewer finals than the session's publisher lost some.
- **calls**: ``bench/agent_calls.ScriptedCall`` over WebRTC: one turn (a ``real``
  recording as the question), then one barge-in (a story asked for and interrupted, by
  Piper), then hang up.
- **realtime**: a raw ``websockets`` client on ``/v1/realtime`` (the agent): 20 ms
  ``input_audio_buffer.append`` in real time of one ``real`` recording, then silence,
  reading until ``response.done``; then it closes.

A failed session (refused, error, no answer, timeout) is counted, not fatal. Every
``--sample-s`` (10 s) the server's resident memory (psutil on its pid) is sampled, and
its ``/healthz``. The counts ``open_fds``, ``tasks``, ``graphs``, ``peer_connections``,
``sessions``, ``calls`` (and the RSS) are read at ``start`` (idle, after one session of each kind has
warmed the engines, then ``SETTLE_S``) and at ``end`` (after every session closed and
the server has been idle for ``SETTLE_S``). Printed last, one JSON object:

- ``rss_mb`` [[t_s, MB], ...] (t from the start of the load), ``rss_slope_mb_per_10min``:
  the least-squares slope after the warm-up (``warmup_s``: the first 20 % of the run or
  5 min, whichever is less);
- ``counts`` {start, end}, ``leaked``: each count above its idle value at the end;
- ``p95_ms_windows``: p95 per window (``window_s``: 5 min, or a third of a shorter run)
  of ``caption_final_delay_ms`` (a sentence's final's arrival − the wall time its last
  speech sample was due to be sent), ``call_v2v_ms`` (``agent_calls``: the frame holding
  a question's last loud sample sent → the first loud reply frame received) and
  ``realtime_v2v_ms`` (the last speech sample's append due → the first
  ``response.output_audio.delta`` received);
- ``sessions`` per kind: run, failed, refused and the first distinct errors;
- ``targets`` (the soak's: slope ≤ 1 MB per 10 min, counts back to idle, p95 flat
  within 20 %: every window's p95 within 20 % of the lowest window's).

    python bench/soak.py --minutes 30
    python bench/soak.py --minutes 2 --max-sessions 6 --max-calls 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_calls import LEAD_SILENCE_S, ScriptedCall, Utterance
from captions import normalize
from percentiles import p50_p95
from speech_sets import load_set
from testset import SAMPLE_RATE_HZ, Clip, Stream, build_stream

from voxline.clients.caption_client import pcm16
from voxline.testing.realtime_talk import FRAME, RATE_HZ, pcm24

CHUNK_S = 0.1
CAPTION_STREAM_S = 20.0
MAX_CLIP_S = 12.0
SESSION_TIMEOUT_S = 120.0
OPEN_TIMEOUT_S = 10.0
RESULT_TIMEOUT_S = 45.0
PAUSE_S = (0.2, 0.8)
SETTLE_S = 10.0
IDLE_TIMEOUT_S = 60.0
SERVER_START_S = 300.0
STOP_TIMEOUT_S = 20.0
HEALTH_COUNTS = ("open_fds", "tasks", "graphs", "peer_connections", "sessions", "calls")
STORY = "Tell me a long story about a pirate ship in a storm."
INTERRUPTION = "Stop. Tell me about cats instead."
RSS_SLOPE_TARGET_MB_PER_10MIN = 1.0
P95_FLAT_FRACTION = 0.2


# -- what the run measured ---------------------------------------------------------------


@dataclass
class Tally:
    """Sessions of one kind: how many ran, failed (refusals among them) and why."""

    run: int = 0
    failed: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, why: str, refused: bool = False) -> None:
        """Count one failed session; keep the first few distinct reasons."""
        self.failed += 1
        self.refused += refused
        if why not in self.errors and len(self.errors) < 5:
            self.errors.append(why[:300])


@dataclass
class Soak:
    """Everything measured, with times in seconds since the load began (``t0``)."""

    t0: float = 0.0
    tallies: dict[str, Tally] = field(default_factory=lambda: {k: Tally() for k in ("captions", "viewers", "calls", "realtime")})
    latency: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {k: [] for k in ("caption_final_delay_ms", "call_v2v_ms", "realtime_v2v_ms")}
    )
    rss_mb: list[list[float]] = field(default_factory=list)
    live_sessions: list[int] = field(default_factory=list)
    caption_wer: list[float] = field(default_factory=list)
    lost_finals: int = 0
    bargeins: int = 0
    interrupted: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, what: str, ms: float, at: float) -> None:
        """One latency sample of ``what`` (ms), observed at monotonic time ``at``."""
        self.latency[what].append((at - self.t0, ms))


# -- the sessions ------------------------------------------------------------------------


class CaptionPublisher:
    """One ``/v1/captions`` session streaming ``stream`` in real time; its finals, for viewers."""

    def __init__(self, url: str, stream: Stream, soak: Soak) -> None:
        self.url, self.stream, self.soak = url, stream, soak
        loop = asyncio.get_running_loop()
        self.session_id: asyncio.Future[str] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.finals: list[tuple[float, dict[str, Any]]] = []

    def finish(self) -> None:
        """The session is over (whatever its outcome): viewers may compare their finals now."""
        if not self.session_id.done():
            self.session_id.set_exception(SessionFailed("viewer: its caption session never started"))
            self.session_id.exception()  # marked retrieved: a lane may have no viewer to await it
        if not self.done.done():
            self.done.set_result(None)

    async def run(self) -> None:
        """Stream, end, read to the close; raises on a refusal or an error event. Ends with ``finish``."""
        try:
            await self._run()
        finally:
            self.finish()

    async def _run(self) -> None:
        async with websockets.connect(self.url + "/v1/captions", open_timeout=OPEN_TIMEOUT_S, max_size=None) as ws:
            try:
                await ws.send(json.dumps({"type": "config", "sample_rate": SAMPLE_RATE_HZ, "encoding": "pcm_s16le"}))
                first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S))
            except websockets.ConnectionClosed as closed:  # refused before the config was read
                if closed.rcvd is not None and closed.rcvd.code == 1013:
                    raise SessionRefused(f"captions: closed 1013: {closed.rcvd.reason}") from None
                raise
            if first.get("type") != "session":
                raise SessionRefused(f"captions: {first.get('code')}: {first.get('message')}")
            self.session_id.set_result(first["id"])
            t0 = time.monotonic()
            sender = asyncio.create_task(self._send(ws, t0), name="soak-captions-send")
            try:
                async with asyncio.timeout(self.stream.seconds + RESULT_TIMEOUT_S):
                    async for message in ws:
                        event = json.loads(message)
                        if event["type"] == "error":
                            raise SessionFailed(f"captions: {event.get('code')}: {event.get('message')}")
                        if event["type"] == "final":
                            self.finals.append((time.monotonic(), event))
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            if ws.close_code != 1000:
                raise SessionFailed(f"captions: closed {ws.close_code} {ws.close_reason}")
        self._measure(t0)

    async def _send(self, ws: Any, t0: float) -> None:
        audio, step = self.stream.audio, round(CHUNK_S * SAMPLE_RATE_HZ)
        for start in range(0, len(audio), step):
            await asyncio.sleep(max(0.0, t0 + (start + step) / SAMPLE_RATE_HZ - time.monotonic()))
            await ws.send(pcm16(audio[start : start + step]))
        await ws.send(json.dumps({"type": "end"}))

    def _measure(self, t0: float) -> None:
        """Each sentence's final delay (the final ending last among those overlapping its speech) and the WER."""
        import jiwer

        for sentence in self.stream.sentences:
            hits = [(float(e["end"]), at) for at, e in self.finals
                    if e.get("words") and float(e["start"]) <= sentence.speech_end_s and float(e["end"]) >= sentence.speech_start_s]
            if hits:
                at = max(hits)[1]
                self.soak.note("caption_final_delay_ms", (at - (t0 + sentence.speech_end_s)) * 1000, at)
        hypothesis = normalize(" ".join(e["text"] for _, e in self.finals))
        self.soak.caption_wer.append(float(jiwer.wer(normalize(self.stream.reference), hypothesis)) if hypothesis else 1.0)


class SessionRefused(Exception):
    """The server refused the session (busy)."""


class SessionFailed(Exception):
    """The session did not do its work (an error, no answer, a bad close)."""


async def watch(url: str, publisher: CaptionPublisher, soak: Soak) -> None:
    """A viewer of the publisher's session from the start until its ``end``; lost finals counted."""
    session_id = await asyncio.wait_for(asyncio.shield(publisher.session_id), OPEN_TIMEOUT_S)
    finals = 0
    async with websockets.connect(f"{url}/v1/sessions/{session_id}/captions?from=start", open_timeout=OPEN_TIMEOUT_S) as ws:
        async with asyncio.timeout(publisher.stream.seconds + RESULT_TIMEOUT_S):
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "error":
                    error = SessionRefused if event.get("code") == "server_busy" else SessionFailed
                    raise error(f"viewer: {event.get('code')}: {event.get('message')}")
                finals += event["type"] == "final"
                if event["type"] == "end":
                    break
    await asyncio.wait({publisher.done}, timeout=RESULT_TIMEOUT_S)
    soak.lost_finals += max(0, len(publisher.finals) - finals)


async def realtime_turn(url: str, clip: Clip, soak: Soak) -> None:
    """One Realtime agent session: say ``clip``, read to ``response.done``, close."""
    speech = pcm24(clip.audio[: clip.speech_end + 1])
    async with websockets.connect(
        url + "/v1/realtime", additional_headers={"Authorization": "Bearer soak"}, open_timeout=OPEN_TIMEOUT_S, max_size=None,
    ) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S))
        if first["type"] != "session.created":
            error = first.get("error", {})
            raise SessionRefused(f"realtime: {error.get('code')}: {error.get('message')}")
        spoken_at = time.monotonic() + len(speech) / 2 / RATE_HZ
        microphone = asyncio.create_task(_speak(ws, speech), name="soak-realtime-mic")
        first_audio: float | None = None
        try:
            async with asyncio.timeout(len(speech) / 2 / RATE_HZ + RESULT_TIMEOUT_S):
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "error":
                        raise SessionFailed(f"realtime: {event['error'].get('code')}: {event['error'].get('message')}")
                    if event["type"] == "response.output_audio.delta" and first_audio is None:
                        first_audio = time.monotonic()
                    if event["type"] == "response.done":
                        status = event["response"]["status"]
                        if status != "completed" or first_audio is None:
                            raise SessionFailed(f"realtime: response {status}, audio {first_audio is not None}")
                        break
        finally:
            microphone.cancel()
            await asyncio.gather(microphone, return_exceptions=True)
    soak.note("realtime_v2v_ms", (first_audio - spoken_at) * 1000, first_audio)


async def _speak(ws: Any, pcm: bytes) -> None:
    """``pcm`` (24 kHz PCM16) as 20 ms appends in real time, then silence, until cancelled."""
    start, sent, size = time.monotonic(), 0, FRAME * 2
    while True:
        chunk = pcm[sent * size : (sent + 1) * size].ljust(size, b"\0")
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
        sent += 1
        await asyncio.sleep(max(0.0, start + sent * 0.02 - time.monotonic()))


async def call_turns(url: str, question: Utterance, story: Utterance, interruption: Utterance, soak: Soak) -> None:
    """One WebRTC call: a question, then a barge-in over a story, then hang up."""
    report = await ScriptedCall(url, [question], [story], [interruption]).run()
    if report.refused:
        raise SessionRefused(f"call: {report.error}")
    if report.error:
        raise SessionFailed(f"call: {report.error}")
    answered = [t for t in report.turns if t.reply is not None]
    now = time.monotonic()
    for turn in answered:
        if turn.v2v_ms is not None:
            soak.note("call_v2v_ms", turn.v2v_ms, turn.playing[0] if turn.playing else now)
    for barge in report.barges:
        if not barge.void:
            soak.bargeins += 1
            soak.interrupted += barge.stopped
    if not answered:
        raise SessionFailed("call: the question was not answered")


async def counted(kind: str, soak: Soak, session: Awaitable[None]) -> None:
    """Run one session, bounded by ``SESSION_TIMEOUT_S``; its outcome goes to the kind's tally."""
    tally = soak.tallies[kind]
    tally.run += 1
    try:
        async with asyncio.timeout(SESSION_TIMEOUT_S):
            await session
    except SessionRefused as exc:
        tally.fail(str(exc), refused=True)
    except TimeoutError:
        tally.fail(f"{kind}: no result within {SESSION_TIMEOUT_S:.0f} s")
    except Exception as exc:  # a failed session is counted, never fatal to the soak
        tally.fail(f"{type(exc).__name__}: {exc}")


# -- lanes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speech:
    """What the clients say: caption streams, questions (48 kHz), the story and the interruption."""

    streams: list[Stream]
    clips: list[Clip]
    questions: list[Utterance]
    story: Utterance
    interruption: Utterance

    @classmethod
    def load(cls) -> Speech:
        """The ``real`` recordings (at most ``MAX_CLIP_S``) and Piper's story request and interruption."""
        clips = [c for c in load_set("real") if len(c.audio) <= MAX_CLIP_S * SAMPLE_RATE_HZ]
        streams = [build_stream(clips, i, CAPTION_STREAM_S) for i in range(len(clips))]
        questions = [Utterance.recorded(c.text, c.audio[: c.speech_end + 1]) for c in clips]
        story = Utterance.speak(STORY, LEAD_SILENCE_S)
        return cls(streams, clips, questions, story, Utterance.speak(INTERRUPTION))


async def caption_lane(index: int, url: str, speech: Speech, viewers: int, soak: Soak, until: float) -> None:
    """Caption sessions one after another (each with ``viewers`` viewers) until ``until``."""
    rng, k = random.Random(index), index
    while time.monotonic() < until:
        publisher = CaptionPublisher(url, speech.streams[k % len(speech.streams)], soak)
        async with asyncio.TaskGroup() as group:
            for _ in range(viewers):
                group.create_task(counted("viewers", soak, watch(url, publisher, soak)))
            await counted("captions", soak, publisher.run())
        k += 1
        await asyncio.sleep(rng.uniform(*PAUSE_S))


async def session_lane(index: int, kind: str, start: Callable[[int], Awaitable[None]], soak: Soak, until: float) -> None:
    """Sessions of ``kind`` (``start(k)`` runs the k-th) one after another until ``until``."""
    rng, k = random.Random(1000 + index), index
    while time.monotonic() < until:
        await counted(kind, soak, start(k))
        k += 1
        await asyncio.sleep(rng.uniform(*PAUSE_S))


# -- the server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_server(args: argparse.Namespace, port: int, log: Any) -> asyncio.subprocess.Process:
    """``voxline serve`` with the soak's limits, CPU admission off; its output goes to ``log``."""
    env = {**os.environ, "VOXLINE_SERVER__MAX_CPU_LOAD": "1.0", "VOXLINE_SERVER__MAX_VIEWERS": str(args.max_viewers)}
    voxline = str(Path(sys.executable).with_name("voxline"))
    return await asyncio.create_subprocess_exec(
        voxline, "serve", "--port", str(port), "--max-sessions", str(args.max_sessions), "--max-calls", str(args.max_calls),
        env=env, stdout=log, stderr=log,
    )


async def stop_server(server: asyncio.subprocess.Process) -> str:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; how it went ("terminated", "killed", or its early exit)."""
    if server.returncode is not None:
        return f"exited early with {server.returncode}"
    server.terminate()
    try:
        await asyncio.wait_for(server.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        server.kill()
        await server.wait()
        return f"killed: no exit {STOP_TIMEOUT_S:.0f} s after SIGTERM"
    return "terminated"


async def healthz(http: httpx.AsyncClient) -> dict[str, Any]:
    """The server's ``GET /healthz`` as JSON; ``httpx.HTTPError`` when it does not answer 200."""
    response = await http.get("/healthz")
    response.raise_for_status()
    return response.json()


async def wait_healthy(http: httpx.AsyncClient, server: asyncio.subprocess.Process) -> None:
    """Until ``/healthz`` answers (the engines loaded), at most ``SERVER_START_S``."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.returncode is not None:
            raise RuntimeError(f"voxline serve exited with {server.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            await healthz(http)
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"voxline serve did not answer /healthz within {SERVER_START_S:.0f} s")


async def idle_counts(http: httpx.AsyncClient, pid: int) -> dict[str, float]:
    """The leak counts (and ``rss_mb``) once no session or call is live, then ``SETTLE_S`` more
    (at most ``IDLE_TIMEOUT_S``)."""
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while time.monotonic() < deadline:
        state = await healthz(http)
        if state["sessions"] == 0 and state["calls"] == 0 and state["peer_connections"] == 0:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(SETTLE_S)
    state = await healthz(http)
    rss = await asyncio.to_thread(lambda: psutil.Process(pid).memory_info().rss)
    return {**{k: int(state[k]) for k in HEALTH_COUNTS}, "rss_mb": round(rss / 2**20, 1)}


async def sample(pid: int, http: httpx.AsyncClient, soak: Soak, every_s: float) -> None:
    """Every ``every_s``: the server's RSS (MB) and its live sessions, until cancelled."""
    process = psutil.Process(pid)
    while True:
        rss = await asyncio.to_thread(lambda: process.memory_info().rss)
        soak.rss_mb.append([round(soak.now(), 1), round(rss / 2**20, 1)])
        with contextlib.suppress(httpx.HTTPError):
            soak.live_sessions.append(int((await healthz(http))["sessions"]))
        await asyncio.sleep(every_s)


# -- the figures -------------------------------------------------------------------------


def slope_mb_per_10min(samples: list[list[float]], after_s: float) -> float | None:
    """Least-squares slope of the RSS samples taken after ``after_s`` (MB per 10 min)."""
    points = np.array([p for p in samples if p[0] >= after_s], dtype=np.float64)
    if len(points) < 3 or np.ptp(points[:, 0]) <= 0:
        return None
    return round(float(np.polyfit(points[:, 0], points[:, 1], 1)[0]) * 600, 3)


def p95_windows(samples: list[tuple[float, float]], window_s: float, duration_s: float) -> list[float | None]:
    """The p95 (``p50_p95``'s nearest rank) of the samples in each window of the run."""
    count = max(1, int(np.ceil(duration_s / window_s - 1e-9)))
    windows: list[list[float]] = [[] for _ in range(count)]
    for at, ms in samples:
        windows[min(count - 1, max(0, int(at // window_s)))].append(ms)
    return [p50_p95(w)["p95"] for w in windows]


def flat(p95s: list[float | None]) -> bool | None:
    """Every window's p95 within ``P95_FLAT_FRACTION`` of the lowest (None: under two windows with figures)."""
    values = [v for v in p95s if v is not None]
    if len(values) < 2:
        return None
    return max(values) <= min(values) * (1 + P95_FLAT_FRACTION)


def report(args: argparse.Namespace, soak: Soak, counts: dict[str, dict[str, float]], lanes: dict[str, int],
           duration_s: float, warmup_s: float, window_s: float, wall_s: float, server_exit: str) -> dict[str, Any]:
    """The JSON object (see the module docstring)."""
    slope = slope_mb_per_10min(soak.rss_mb, warmup_s)
    leaked = {k: counts["end"][k] - counts["start"][k] for k in HEALTH_COUNTS if counts["end"][k] > counts["start"][k]}
    windows = {name: p95_windows(values, window_s, duration_s) for name, values in soak.latency.items()}
    return {
        "bench": "soak", "command": " ".join(["python bench/soak.py", *sys.argv[1:]]), "set": ["real", "piper"],
        "speech": {"captions": "real (clips <= 12 s)", "calls": "real questions; Piper story and interruption",
                   "realtime": "real"},
        "minutes": args.minutes, "capacity": {"max_sessions": args.max_sessions, "max_calls": args.max_calls,
                                              "max_viewers": args.max_viewers, "max_cpu_load": 1.0},
        "load": args.load, "lanes": lanes,
        "occupancy": round(float(np.mean(soak.live_sessions)) / args.max_sessions, 3) if soak.live_sessions else None,
        "warmup": "the first 20 % of the run or 5 min, whichever is less", "warmup_s": round(warmup_s, 1),
        "rss_mb": soak.rss_mb, "rss_slope_mb_per_10min": slope,
        "counts": counts, "leaked": leaked,
        "p95_ms_windows": {"window_s": round(window_s, 1), **windows, "what": {
            "caption_final_delay_ms": "a sentence's final received - its last speech sample due to be sent",
            "call_v2v_ms": "a question's last loud sample sent - the first loud reply frame received (WebRTC)",
            "realtime_v2v_ms": "the last speech append due - the first response.output_audio.delta received",
        }},
        "latency_ms": {name: p50_p95([ms for _, ms in values]) for name, values in soak.latency.items()},
        "sessions": {k: {"run": t.run, "failed": t.failed, "refused": t.refused, "errors": t.errors}
                     for k, t in soak.tallies.items()},
        "caption_wer": round(float(np.mean(soak.caption_wer)), 4) if soak.caption_wer else None,
        "viewer_lost_finals": soak.lost_finals,
        "bargeins": {"trials": soak.bargeins, "interrupted": soak.interrupted},
        "targets": {
            "rss_slope_le_1mb_per_10min": None if slope is None else slope <= RSS_SLOPE_TARGET_MB_PER_10MIN,
            "counts_back_to_idle": not leaked,
            "p95_flat_within_20pct": {name: flat(p95s) for name, p95s in windows.items()},
        },
        "server_stop": server_exit, "wall_s": round(wall_s, 1), "machine": {"cpu_count": os.cpu_count()},
    }


# -- the run -----------------------------------------------------------------------------


def plan_lanes(args: argparse.Namespace) -> dict[str, int]:
    """How many sessions of each kind run at once: ``load`` of each limit (at least one of each)."""
    agents = max(2, round(args.load * args.max_calls))
    captions = max(1, round(args.load * args.max_sessions) - agents)
    return {"calls": (agents + 1) // 2, "realtime": agents // 2, "captions": captions,
            "viewers": max(1, round(args.load * args.max_viewers))}


async def warm_up(url: str, http_url: str, speech: Speech, soak: Soak) -> None:
    """One session of each kind at once, so lazily made things exist before the idle counts."""
    async with asyncio.TaskGroup() as group:
        publisher = CaptionPublisher(url, speech.streams[0], soak)
        group.create_task(counted("captions", soak, publisher.run()))
        group.create_task(counted("viewers", soak, watch(url, publisher, soak)))
        group.create_task(counted("realtime", soak, realtime_turn(url, speech.clips[0], soak)))
        group.create_task(counted("calls", soak, call_turns(http_url, speech.questions[0], speech.story, speech.interruption, soak)))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, warm it, load it for ``--minutes``, let it go idle, stop it; the report."""
    speech = await asyncio.to_thread(Speech.load)
    duration_s = args.minutes * 60.0
    warmup_s = min(0.2 * duration_s, 300.0)
    window_s = min(300.0, duration_s / 3) if args.window_s is None else args.window_s
    lanes = plan_lanes(args)
    port = free_port()
    url, http_url = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        server = await start_server(args, port, log)
        try:
            async with httpx.AsyncClient(base_url=http_url, timeout=10.0) as http:
                await wait_healthy(http, server)
                warm = Soak(t0=time.monotonic())
                await warm_up(url, http_url, speech, warm)
                counts = {"start": await idle_counts(http, server.pid)}
                soak = Soak(t0=time.monotonic())
                until = soak.t0 + duration_s
                sampler = asyncio.create_task(sample(server.pid, http, soak, args.sample_s), name="soak-sampler")
                try:
                    await load(url, http_url, speech, soak, lanes, until)
                finally:
                    sampler.cancel()
                    await asyncio.gather(sampler, return_exceptions=True)
                counts["end"] = await idle_counts(http, server.pid)
        finally:
            server_exit = await stop_server(server)
            if args.server_log:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-4000:])
    return report(args, soak, counts, lanes, duration_s, warmup_s, window_s, time.monotonic() - started, server_exit) | {
        "warm_up_sessions": {k: {"run": t.run, "failed": t.failed, "errors": t.errors} for k, t in warm.tallies.items()},
    }


async def load(url: str, http_url: str, speech: Speech, soak: Soak, lanes: dict[str, int], until: float) -> None:
    """Every lane at once until ``until``; each finishes the session it is in."""

    def call(k: int) -> Awaitable[None]:
        return call_turns(http_url, speech.questions[k % len(speech.questions)], speech.story, speech.interruption, soak)

    def realtime(k: int) -> Awaitable[None]:
        return realtime_turn(url, speech.clips[(3 * k + 1) % len(speech.clips)], soak)

    viewers = [lanes["viewers"] // lanes["captions"] + (i < lanes["viewers"] % lanes["captions"]) for i in range(lanes["captions"])]
    async with asyncio.TaskGroup() as group:
        for i in range(lanes["captions"]):
            group.create_task(caption_lane(i, url, speech, viewers[i], soak, until))
        for i in range(lanes["calls"]):
            group.create_task(session_lane(i, "calls", call, soak, until))
        for i in range(lanes["realtime"]):
            group.create_task(session_lane(i, "realtime", realtime, soak, until))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the load (may be fractional)")
    parser.add_argument("--max-sessions", type=int, default=6)
    parser.add_argument("--max-calls", type=int, default=3)
    parser.add_argument("--max-viewers", type=int, default=4)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of each limit kept busy")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--window-s", type=float, default=None, help="p95 window (default 300 s, or a third of a shorter run)")
    parser.add_argument("--server-log", action="store_true", help="copy the tail of the server's output to stderr")
    parser.add_argument("--json", action="store_true", help="(always JSON; kept for the bench convention)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
