"""``voxline serve --workers 2``: one port, two worker processes, as a user runs it.

The server is a real subprocess (the front and its workers, real models); clients are
real WebRTC peers and WebSocket clients on loopback. Which worker served a request is
what ``/healthz?node=ID`` says (``?node=`` pins a request to the worker named ID).
The routing core (``Placement``, ``parse_request_line``) is checked without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import websockets

from tests.conftest import free_port
from tests.e2e.call_events import Events, said
from tests.speech_fixtures import COFFEE, FOX, normalize, silence, speech, word_errors
from voxline.clients.caption_client import pcm16
from voxline.clients.webrtc_client import CallClient
from voxline.stream.launch.placement import Placement, RequestTarget, parse_request_line
from voxline.testing.clip_microphone import ClipMicrophone

pytestmark = pytest.mark.slow
NODE = "wtest"
WORKERS = [f"{NODE}-w0", f"{NODE}-w1"]
START_TIMEOUT_S = 240.0
LOUD = 0.02
QUESTIONS = ["How many legs does a spider have?", "What is the capital of France?"]


@contextlib.contextmanager
def workers_server(log_path: Path, *args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``voxline serve --workers 2`` on a free port; yields (http:// URL, the front's process)."""
    port = free_port()
    with log_path.open("wb") as log:
        front = subprocess.Popen(
            [sys.executable, "-m", "voxline.cli", "serve", "--workers", "2", "--port", str(port), *args],
            # CPU admission off, as in conftest: the machine's other work must not refuse a test's call.
            env={**os.environ, "VOXLINE_BUS__NODE_ID": NODE, "VOXLINE_SERVER__MAX_CPU_LOAD": "1.0", **env},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert front.poll() is None, f"the server exited: {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"the server did not start: {log_path.read_text()[-2000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield url, front
    finally:
        workers = _workers_of(front)
        if front.poll() is None:
            front.send_signal(signal.SIGTERM)
            try:
                front.wait(60)
            except subprocess.TimeoutExpired:
                front.kill()
        for worker in psutil.wait_procs(workers, timeout=30)[1]:
            worker.kill()


def _workers_of(front: subprocess.Popen[bytes]) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [p for p in psutil.Process(front.pid).children() if "worker_intake" in " ".join(p.cmdline())]
    return []


def health(url: str, node: str | None = None) -> dict[str, Any]:
    """``/healthz`` through the front on a fresh connection (``?node=`` when given)."""
    query = f"?node={node}" if node else ""
    return httpx.get(f"{url}/healthz{query}", timeout=10).json()


@pytest.fixture(scope="module")
def call_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two workers serving calls (2 each) and captions; replies kept short."""
    log = tmp_path_factory.mktemp("workers") / "server.log"
    with workers_server(log, "--max-calls", "2", VOXLINE_AGENT__MAX_REPLY_TOKENS="40") as (url, _):
        yield url


class Ear:
    """Arrival time and peak of every frame a caller received."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, float]] = []

    def __call__(self, samples: np.ndarray) -> None:
        self.frames.append((time.monotonic(), float(np.abs(samples).max(initial=0.0))))

    def loud_after(self, at: float) -> bool:
        return any(t > at and peak > LOUD for t, peak in self.frames)


async def test_two_calls_at_once_land_on_different_workers_and_both_hear_a_spoken_answer(call_server: str) -> None:
    mics, ears = [ClipMicrophone(), ClipMicrophone()], [Ear(), Ear()]
    clients = [CallClient(call_server, mic, on_audio=ear) for mic, ear in zip(mics, ears, strict=True)]
    await asyncio.gather(*(client.connect() for client in clients))
    events = [Events(client) for client in clients]
    try:
        by_node = {node: await asyncio.to_thread(health, call_server, node) for node in WORKERS}
        questions = [mic.say(said(text)) for mic, text in zip(mics, QUESTIONS, strict=True)]
        turns = [await e.wait_for("user_turn", within_s=30) for e in events]
        done = [await e.wait_for("agent_done", within_s=45) for e in events]
    finally:
        await asyncio.gather(*(client.close() for client in clients))
        for e in events:
            await e.stop()
    assert {node: state["node_id"] for node, state in by_node.items()} == {node: node for node in WORKERS}
    assert [state["calls"] for state in by_node.values()] == [1, 1], "one call on each worker"
    # two calls share two cores with their caller here: a word may be misheard ("France" as "friends")
    assert [word_errors(q, turn["text"]) <= 1 for q, turn in zip(QUESTIONS, turns, strict=True)] == [True, True], turns
    assert all(d["text"] for d in done), done
    for question, ear in zip(questions, ears, strict=True):
        assert question.ended_at is not None and ear.loud_after(question.ended_at), "the answer was heard"


async def test_a_caption_socket_through_the_front_gets_its_finals_and_its_transcript_stays_reachable(
    call_server: str,
) -> None:
    ws_url = call_server.replace("http://", "ws://", 1)
    audio = np.concatenate([silence(0.5), speech(FOX), silence(1.0), speech(COFFEE), silence(0.5)])
    events: list[dict[str, Any]] = []
    async with websockets.connect(f"{ws_url}/v1/captions?session=wtest-captions-1") as ws:
        await ws.send(json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le", "language": "en"}))
        for i in range(0, len(audio), 1600):
            await ws.send(pcm16(audio[i : i + 1600]))
            await asyncio.sleep(0.02)
        await ws.send(json.dumps({"type": "end"}))
        async for message in ws:
            events.append(json.loads(message))
    assert ws.close_code == 1000
    finals = [e["text"] for e in events if e["type"] == "final"]
    assert word_errors(FOX + " " + COFFEE, " ".join(finals)) <= 1, finals
    assert (events[0]["type"], events[0]["id"]) == ("session", "wtest-captions-1")
    # Without Redis only the worker that ran the session keeps its transcript: the front
    # sends every request for it there, whichever worker would be next otherwise.
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(4):
            response = await http.get(f"{call_server}/v1/sessions/wtest-captions-1/transcript",
                                      headers={"Connection": "close"})
            assert response.status_code == 200, response.text
            assert normalize(response.json()["text"])[-3:] == normalize("with milk, please")


def test_a_dead_worker_is_routed_around_and_restarted_and_a_stopped_front_leaves_no_worker(tmp_path: Path) -> None:
    with workers_server(tmp_path / "server.log", "--max-calls", "0") as (url, front):
        workers = _workers_of(front)
        assert len(workers) == 2
        workers[0].kill()
        psutil.wait_procs([workers[0]], timeout=10)
        answered = [health(url)["status"] for _ in range(10)]
        assert answered == ["ok"] * 10, "the live worker answers meanwhile"
        deadline = time.monotonic() + START_TIMEOUT_S
        while [health(url, node)["node_id"] for node in WORKERS] != WORKERS:
            assert time.monotonic() < deadline, "the dead worker came back"
            time.sleep(0.3)
        restarted = _workers_of(front)
        assert len(restarted) == 2 and workers[0].pid not in {p.pid for p in restarted}
        front.send_signal(signal.SIGTERM)
        assert front.wait(60) == 0
        _, alive = psutil.wait_procs(restarted, timeout=10)
        assert not alive, "no worker outlives its front"


def test_workers_stop_by_themselves_when_the_front_is_killed(tmp_path: Path) -> None:
    with workers_server(tmp_path / "server.log", "--max-calls", "0") as (_, front):
        workers = _workers_of(front)
        assert len(workers) == 2
        front.kill()
        front.wait(10)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, "a worker whose front died stops (no orphans)"


# --- the routing core, without sockets ----------------------------------------------------


def _report(sessions: int = 0, calls: int = 0, ids: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"sessions": sessions, "max_sessions": 4, "calls": calls, "max_calls": 2,
            "session_ids": ids or [], "headroom": True, **extra}


def _target(line: str) -> RequestTarget | None:
    return parse_request_line(line.encode() + b"\r\nHost: x\r\n\r\n")


def test_a_request_line_gives_path_query_node_and_session() -> None:
    target = _target("GET /v1/sessions/abc/captions?node=n-w1&x=1 HTTP/1.1")
    assert target is not None
    assert (target.method, target.path, target.node, target.session_id) == ("GET", "/v1/sessions/abc/captions", "n-w1", "abc")
    watch = _target("GET /watch/s-9 HTTP/1.1")
    assert watch is not None and watch.session_id == "s-9" and watch.node is None
    assert parse_request_line(b"GET /healthz HTTP/1.1") is None, "no line end yet"
    assert parse_request_line(b"\x16\x03\x01 hello\r\n") is None, "not HTTP"


def test_offers_arriving_together_go_to_different_workers_before_any_report_counts_them() -> None:
    placement = Placement(["a", "b"])
    for i in range(2):
        placement.reported(i, "ready", _report(), now=0.0)
    offer = _target("POST /v1/webrtc/offer HTTP/1.1")
    chosen = [placement.choose(offer, now=0.1) for _ in range(4)]
    assert sorted(chosen) == [0, 0, 1, 1]  # type: ignore[type-var]
    # full everywhere: each offer still goes to the least loaded (which refuses it itself), so they keep alternating
    assert sorted(placement.choose(offer, now=0.1) for _ in range(2)) == [0, 1]  # type: ignore[type-var]


def test_the_busier_worker_gets_fewer_new_sessions_and_pins_win() -> None:
    placement = Placement(["a", "b"])
    placement.reported(0, "ready", _report(sessions=3, ids=["s1"]), now=0.0)
    placement.reported(1, "ready", _report(sessions=0), now=0.0)
    captions = _target("GET /v1/captions HTTP/1.1")
    assert placement.choose(captions, now=0.0) == 1
    assert placement.choose(_target("GET /healthz?node=a HTTP/1.1"), now=0.0) == 0
    assert placement.choose(_target("GET /v1/sessions/s1/transcript HTTP/1.1"), now=0.0) == 0
    placement.reported(0, "ready", _report(sessions=2, ids=[]), now=1.0)  # s1 ended: its owner is remembered
    assert placement.choose(_target("GET /watch/s1 HTTP/1.1"), now=1.0) == 0
    placement.reported(1, "stopping", _report(), now=1.0)
    assert placement.choose(captions, now=1.0) == 0, "a stopping worker gets nothing new"
    placement.down(0)
    assert placement.choose(captions, now=1.0) is None, "no worker ready: nowhere to go"


def test_a_pinned_worker_that_could_not_take_the_connection_is_not_chosen_again() -> None:
    placement = Placement(["a", "b"])
    for i in range(2):
        placement.reported(i, "ready", _report(), now=0.0)
    pinned = _target("GET /healthz?node=b HTTP/1.1")
    assert placement.choose(pinned, now=0.0) == 1
    assert placement.choose(pinned, now=0.0, exclude=frozenset({1})) == 0
    assert placement.choose(pinned, now=0.0, exclude=frozenset({0, 1})) is None
