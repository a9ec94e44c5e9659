"""Viewers of a caption session: on its node, and on another node through a real Redis.

Real models and servers on loopback; the Redis is a redis-server started here on its
own port (so it can be restarted), never the machine's shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from conftest import free_port, http, running_server
from speech_fixtures import FOX, normalize, silence, speech

from voxline.clients.caption_client import pcm16
from voxline.config import BusConfig
from voxline.pipeline.recipes.captioner import CaptionEngines

pytestmark = pytest.mark.slow

CHUNK_S = 0.1


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A throwaway redis-server on ``port`` without persistence (a restart loses everything)."""
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def publish(url: str, audio: Any, *, pace_s: float = 0.0, between: Any = None) -> tuple[str, list[dict[str, Any]]]:
    """Caption ``audio`` as a publisher; the session id and the finals it got."""
    finals: list[dict[str, Any]] = []
    async with websockets.connect(url + "/v1/captions") as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "session"
        await ws.send(json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le", "language": "en"}))
        step = int(16000 * CHUNK_S)
        for i in range(0, len(audio), step):
            await ws.send(pcm16(audio[i : i + step]))
            await asyncio.sleep(pace_s)
            if between is not None and i == step * 10:
                await between(first["id"])
        await ws.send(json.dumps({"type": "end"}))
        async for message in ws:
            event = json.loads(message)
            if event["type"] == "final":
                finals.append(event)
    return first["id"], finals


async def watch(url: str, session_id: str, start: str = "start") -> tuple[list[dict[str, Any]], int | None]:
    """Every event a viewer gets, and the close code."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(f"{url}/v1/sessions/{session_id}/captions?from={start}") as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                events.append(json.loads(message))
        return events, ws.close_code


def words(finals: list[dict[str, Any]]) -> list[str]:
    return normalize(" ".join(f["text"] for f in finals))


SENTENCES = speech(FOX)


@pytest.fixture(scope="module")
def two_nodes(caption_engines: CaptionEngines) -> Iterator[tuple[str, str, int]]:
    port = free_port()
    with redis_server(port):
        bus_a = BusConfig(redis_url=f"redis://127.0.0.1:{port}/0", node_id="node-a", heartbeat_s=0.5, ttl_s=2.0)
        bus_b = BusConfig(redis_url=f"redis://127.0.0.1:{port}/0", node_id="node-b", heartbeat_s=0.5, ttl_s=2.0)
        with running_server(caption_engines, bus=bus_a) as a, running_server(caption_engines, bus=bus_b) as b:
            yield a, b, port


async def test_a_viewer_on_the_same_node_gets_the_replay_then_the_end(server_url: str) -> None:
    audio = SENTENCES
    session_id, finals = await publish(server_url, audio)
    events, code = await watch(server_url, session_id)
    assert events[0] == {**events[0], "type": "session", "id": session_id, "kind": "captions", "live": False}
    assert [e["type"] for e in events[1:]] == ["final"] * len(finals) + ["end"]
    assert words([e for e in events if e["type"] == "final"]) == words(finals) and code == 1000
    async with httpx.AsyncClient(base_url=http(server_url)) as client:
        transcript = (await client.get(f"/v1/sessions/{session_id}/transcript")).json()
        vtt = (await client.get(f"/v1/sessions/{session_id}/transcript?format=vtt")).text
    assert words(transcript["finals"]) == words(finals)
    assert vtt.startswith("WEBVTT") and normalize(finals[0]["text"])[0] in normalize(vtt)


async def test_an_unknown_session_is_a_clear_refusal(server_url: str) -> None:
    events, code = await watch(server_url, "no-such-session")
    assert (events[-1]["code"], code) == ("unknown_session", 4404)
    async with httpx.AsyncClient(base_url=http(server_url)) as client:
        assert (await client.get("/v1/sessions/nope/transcript")).status_code == 404


async def test_a_viewer_on_node_b_watches_a_live_publisher_on_node_a(two_nodes: tuple[str, str, int]) -> None:
    a, b, _port = two_nodes
    audio = SENTENCES
    seen: dict[str, Any] = {}

    async def start_viewer(session_id: str) -> None:
        seen["task"] = asyncio.create_task(watch(b, session_id, "start"))

    session_id, finals = await publish(a, audio, pace_s=CHUNK_S / 4, between=start_viewer)
    events, code = await seen["task"]
    assert events[0]["node"] == "node-a" and events[-1] == {**events[-1], "type": "end", "reason": "ended"}
    assert words([e for e in events if e["type"] == "final"]) == words(finals) and code == 1000
    late, _ = await watch(b, session_id, "start")  # a late joiner gets the replay
    assert words([e for e in late if e["type"] == "final"]) == words(finals)
    async with httpx.AsyncClient(base_url=http(b)) as client:
        nodes = (await client.get("/v1/nodes")).json()["nodes"]
    assert {n["node_id"] for n in nodes} >= {"node-a", "node-b"}


async def test_no_final_is_lost_across_a_redis_restart(two_nodes: tuple[str, str, int]) -> None:
    a, b, port = two_nodes
    audio = speech(FOX)
    long_audio = np.concatenate([audio, silence(1.0), audio, silence(1.0), audio])
    seen: dict[str, Any] = {}

    async def restart_mid_session(session_id: str) -> None:
        seen["task"] = asyncio.create_task(watch(b, session_id, "start"))
        await asyncio.sleep(0.5)
        stop = await asyncio.create_subprocess_exec("redis-cli", "-p", str(port), "shutdown", "nosave",
                                                    stdout=asyncio.subprocess.DEVNULL)
        await stop.wait()
        await asyncio.sleep(1.0)
        seen["redis"] = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(port), "--save", "", "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL)

    _session_id, finals = await publish(a, long_audio, pace_s=CHUNK_S / 2, between=restart_mid_session)
    events, code = await asyncio.wait_for(seen["task"], 60)
    got = [e for e in events if e["type"] == "final"]
    assert words(got) == words(finals) and len(got) == len(finals) and code == 1000
    assert [e["seq"] for e in got] == sorted({e["seq"] for e in got})  # none twice
    seen["redis"].terminate()
    await seen["redis"].wait()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_placement_answers_with_a_node_and_refuses_when_every_node_is_full(caption_engines: CaptionEngines) -> None:
    with running_server(caption_engines, max_sessions=1) as url:
        client = httpx.AsyncClient(base_url=http(url))
        placed = (await client.post("/v1/sessions", json={"kind": "captions"})).json()
        assert placed["endpoint"].startswith("ws://") and "/v1/captions?node=" in placed["endpoint"]
        async with websockets.connect(url + "/v1/captions") as ws:
            await ws.recv()
            full = await client.post("/v1/sessions", json={"kind": "captions"})
            await client.aclose()
            assert full.status_code == 503 and full.headers["retry-after"]
            async with websockets.connect(url + "/v1/captions") as refused:
                event = json.loads(await refused.recv())
                with contextlib.suppress(websockets.ConnectionClosed):
                    await refused.recv()
                assert (event["code"], refused.close_code) == ("server_busy", 1013)


async def test_a_killed_node_leaves_the_registry_and_its_viewers_get_end(caption_engines: CaptionEngines) -> None:
    import os
    import signal
    import sys
    from pathlib import Path

    redis_port, port_a = free_port(), free_port()
    env = {**os.environ, "VOXLINE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "VOXLINE_BUS__NODE_ID": "doomed",
           "VOXLINE_BUS__HEARTBEAT_S": "0.5", "VOXLINE_BUS__TTL_S": "2", "VOXLINE_SERVER__MAX_CALLS": "0"}
    voxline = str(Path(sys.executable).with_name("voxline"))
    with redis_server(redis_port):
        node_a = await asyncio.create_subprocess_exec(voxline, "serve", "--port", str(port_a), env=env,
                                                      stderr=asyncio.subprocess.DEVNULL)
        bus_b = BusConfig(redis_url=env["VOXLINE_REDIS_URL"], node_id="survivor", heartbeat_s=0.5, ttl_s=2.0)
        try:
            with running_server(caption_engines, bus=bus_b) as b:
                a = f"ws://127.0.0.1:{port_a}"
                async with httpx.AsyncClient() as client:
                    for _ in range(600):
                        with contextlib.suppress(httpx.HTTPError):
                            if (await client.get(http(a) + "/healthz")).status_code == 200:
                                break
                        await asyncio.sleep(0.1)
                async with websockets.connect(a + "/v1/captions") as publisher:
                    session_id = json.loads(await publisher.recv())["id"]
                    await publisher.send(json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le"}))
                    await publisher.send(pcm16(SENTENCES[:16000]))
                    await asyncio.sleep(1.0)  # the heartbeat has registered the session
                    viewer = asyncio.create_task(watch(b, session_id, "now"))
                    await asyncio.sleep(0.5)
                    node_a.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    events, code = await asyncio.wait_for(viewer, 15)
                    assert events[-1] == {**events[-1], "type": "end", "reason": "node_lost"} and code == 1000
                    assert time.monotonic() - killed_at <= 10.0
                async with httpx.AsyncClient() as client:
                    nodes = (await client.get(http(b) + "/v1/nodes")).json()["nodes"]
                assert [n["node_id"] for n in nodes] == ["survivor"]
        finally:
            if node_a.returncode is None:
                node_a.kill()
            await node_a.wait()
