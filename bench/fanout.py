"""Caption fan-out over two nodes sharing a real Redis: delivery latency and lost finals.

Starts a redis-server on a free port and two ``voxline serve`` nodes (captions only) on
loopback, publishes one caption session on node A at real-time pace (real human
speech, or Piper with ``--set piper``), and spreads ``--viewers`` viewers over both
nodes (half read A's log directly, half read the Redis stream through node B).
Delivery is a final's ``emitted_at`` (publisher node, wall clock) to its arrival at a
viewer. ``--redis-restart`` kills Redis (no persistence) mid-session and starts it
again, to count finals lost across it. Prints one JSON object as its last line:

    python bench/fanout.py [--viewers 1000] [--redis-restart]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speech_sets import load_set

from voxline.clients.caption_client import pcm16

CHUNK_S = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_redis(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec("redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                                stdout=asyncio.subprocess.DEVNULL)
    for _ in range(100):
        with contextlib.suppress(OSError):
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return proc
        await asyncio.sleep(0.05)
    raise RuntimeError("redis-server did not start")


async def start_node(name: str, port: int, redis_port: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "VOXLINE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "VOXLINE_BUS__NODE_ID": name,
           "VOXLINE_SERVER__MAX_CALLS": "0", "VOXLINE_SERVER__MAX_VIEWERS": "5000",
           "VOXLINE_SERVER__MAX_CPU_LOAD": "1.0"}
    voxline = str(Path(sys.executable).with_name("voxline"))
    return await asyncio.create_subprocess_exec(voxline, "serve", "--port", str(port), env=env,
                                                stderr=asyncio.subprocess.DEVNULL)


async def wait_healthy(port: int) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        for _ in range(1200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"node on {port} did not start")


async def viewer(url: str, session_id: str, delays_ms: list[float], finals: list[int]) -> None:
    async with websockets.connect(f"{url}/v1/sessions/{session_id}/captions?from=start", max_queue=None) as ws:
        async for message in ws:
            now = time.time()
            event = json.loads(message)
            if event["type"] == "final":
                finals.append(event["seq"])
                delays_ms.append((now - event["emitted_at"]) * 1000)
            elif event["type"] == "end":
                return


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clips = load_set(args.set)[: args.clips]
    audio = np.concatenate([np.concatenate([c.audio, np.zeros(8000, np.float32)]) for c in clips])
    redis_port, port_a, port_b = free_port(), free_port(), free_port()
    redis = await start_redis(redis_port)
    nodes = [await start_node("fanout-a", port_a, redis_port), await start_node("fanout-b", port_b, redis_port)]
    restarted = False
    try:
        await asyncio.gather(wait_healthy(port_a), wait_healthy(port_b))
        a, b = f"ws://127.0.0.1:{port_a}", f"ws://127.0.0.1:{port_b}"
        published: list[int] = []
        psutil.cpu_percent(interval=None)
        started = time.monotonic()
        async with websockets.connect(a + "/v1/captions") as pub:
            session_id = json.loads(await pub.recv())["id"]
            await pub.send(json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le"}))
            delays: list[list[float]] = [[] for _ in range(args.viewers)]
            got: list[list[int]] = [[] for _ in range(args.viewers)]
            step = int(16000 * CHUNK_S)
            first = audio[:step]
            await pub.send(pcm16(first))
            tasks = []
            if args.client_procs > 1:
                procs = [await start_viewer_proc(f"{a},{b}", session_id, k, args.viewers, args.client_procs)
                         for k in range(args.client_procs)]
            else:
                procs = []
                for i in range(args.viewers):
                    tasks.append(asyncio.create_task(viewer(a if i % 2 == 0 else b, session_id, delays[i], got[i])))
                    if i % 50 == 49:
                        await asyncio.sleep(0)

            async def read_publisher() -> None:
                async for message in pub:
                    event = json.loads(message)
                    if event["type"] == "final":
                        published.append(1)

            reader = asyncio.create_task(read_publisher())
            t0 = time.monotonic()
            for n, i in enumerate(range(step, len(audio), step)):
                await pub.send(pcm16(audio[i : i + step]))
                if args.redis_restart and not restarted and i >= len(audio) // 2:
                    redis.kill()
                    await redis.wait()
                    await asyncio.sleep(1.0)
                    redis = await start_redis(redis_port)
                    restarted = True
                await asyncio.sleep(max(0.0, t0 + (n + 1) * CHUNK_S - time.monotonic()))
            await pub.send(json.dumps({"type": "end"}))
            await reader
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for proc in procs:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            part = json.loads(out.decode().strip().splitlines()[-1])
            for i, (ds, seqs) in zip(part["indices"], zip(part["delays"], part["finals"], strict=True), strict=True):
                delays[i], got[i] = ds, seqs
        cpu = psutil.cpu_percent(interval=None) / 100.0
        all_delays = sorted(d for ds in delays for d in ds)
        lost = sum(max(0, len(published) - len(set(g))) for g in got)  # finals each viewer missed
        return {
            "bench": "fanout", "set": args.set, "viewers": args.viewers, "client_procs": args.client_procs, "nodes": 2,
            "redis_restart": args.redis_restart,
            "audio_s": round(len(audio) / 16000, 1), "finals_published": len(published),
            "delivery_ms": {"p50": round(statistics.median(all_delays), 1),
                            "p95": round(all_delays[int(0.95 * (len(all_delays) - 1))], 1),
                            "max": round(all_delays[-1], 1)} if all_delays else None,
            "lost_finals": lost, "cpu_util": round(cpu, 3), "wall_s": round(time.monotonic() - started, 1),
            "machine": {"cpu_count": os.cpu_count()},
        }
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.wait(), 15)
        redis.terminate()
        await redis.wait()


async def start_viewer_proc(urls: str, session_id: str, k: int, viewers: int, procs: int) -> asyncio.subprocess.Process:
    """A client process holding viewers k, k + procs, k + 2 procs, ... (its JSON on stdout at the end)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--viewer-proc", urls, "--session", session_id, "--viewers", str(viewers),
        "--client-procs", str(procs), "--proc-index", str(k), stdout=asyncio.subprocess.PIPE,
    )


async def viewer_proc(args: argparse.Namespace) -> dict[str, Any]:
    """``--viewer-proc``: this process's share of the viewers, each until its session's ``end``."""
    a, b = args.viewer_proc.split(",")
    indices = list(range(args.proc_index, args.viewers, args.client_procs))
    delays: list[list[float]] = [[] for _ in indices]
    got: list[list[int]] = [[] for _ in indices]
    tasks = []
    for n, i in enumerate(indices):
        tasks.append(asyncio.create_task(viewer(a if i % 2 == 0 else b, args.session, delays[n], got[n])))
        if n % 50 == 49:
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return {"indices": indices, "delays": delays, "finals": got}


def raise_open_files_limit() -> None:
    """A thousand viewer sockets need more descriptors than the usual soft limit of 1024 (the nodes inherit it)."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    raise_open_files_limit()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--set", choices=("real", "piper"), default="real")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--redis-restart", action="store_true")
    parser.add_argument("--client-procs", type=int, default=1,
                        help="spread the viewers over this many client processes (one Python process reading "
                             "1,000 sockets measures its own queue as much as the nodes' delivery)")
    parser.add_argument("--viewer-proc", help=argparse.SUPPRESS)
    parser.add_argument("--session", help=argparse.SUPPRESS)
    parser.add_argument("--proc-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="(always JSON; kept for the bench convention)")
    args = parser.parse_args()
    if args.viewer_proc:
        print(json.dumps(asyncio.run(viewer_proc(args))))
        return
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
