"""Structured protocol fuzzing of a real voxline server: captions, offers, the data channel, Realtime, phone, Redis.

Starts a redis-server on a free port and one ``voxline serve`` node on loopback (real
engines; calls on, ``call_connect_timeout_s`` 2 s so accepted offers nobody connects
end quickly), warms it up (one call, one caption and one Realtime session), measures
the idle leak counters of ``/healthz``, then fuzzes each protocol in turn with
``--messages-per-protocol`` seeded messages (``fuzz_cases``, ``fuzz_drivers``) while
``/healthz`` is polled and a healthy caption session streams a Piper clip whose words
must come out right. After each protocol the counters must settle back to idle.
Prints one JSON object as its last line:

    python bench/fuzz.py [--messages-per-protocol 100000] [--seed 1] [--protocols captions,realtime]

``crashes`` counts a dead server process or failed ``/healthz`` polls; ``leaked`` the
sessions, graphs, peer connections, calls and tasks left over the idle values;
``unclear`` the answers that were not the documented error or close code (``problems``
lists the first few).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_drivers as drivers
from fanout import free_port, start_redis

PROTOCOLS = ("captions", "offer", "data_channel", "realtime", "telephony", "redis")
FOX = "The quick brown fox jumps over the lazy dog."
FOX_WORDS = ("quick", "brown", "fox", "lazy", "dog")
MAX_MESSAGE_BYTES = 64000


async def start_node(port: int, redis_port: int, log_path: Path) -> asyncio.subprocess.Process:
    """``voxline serve`` on ``port`` with calls on, short call timeouts and the Redis bus; stderr to ``log_path``."""
    env = {**os.environ, "VOXLINE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "VOXLINE_BUS__NODE_ID": "fuzz-a",
           "VOXLINE_BUS__HEARTBEAT_S": "0.5", "VOXLINE_BUS__TTL_S": "2.0",
           "VOXLINE_SERVER__MAX_CALLS": "6", "VOXLINE_SERVER__MAX_SESSIONS": "64",
           "VOXLINE_SERVER__CALL_CONNECT_TIMEOUT_S": "2.0", "VOXLINE_SERVER__MAX_CPU_LOAD": "1.0",
           "VOXLINE_SERVER__MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES), "VOXLINE_SERVER__IDLE_TIMEOUT_S": "10",
           "VOXLINE_AGENT__MAX_REPLY_TOKENS": "24"}
    voxline = str(Path(sys.executable).with_name("voxline"))
    log = log_path.open("wb")
    try:
        return await asyncio.create_subprocess_exec(voxline, "serve", "--port", str(port), env=env, stderr=log,
                                                    stdout=asyncio.subprocess.DEVNULL)
    finally:
        log.close()


async def wait_healthy(url: str, node: asyncio.subprocess.Process, within_s: float = 300) -> None:
    """Return once ``/healthz`` answers; raise if the node exits or takes longer than ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if node.returncode is not None:
            raise RuntimeError(f"the node exited with {node.returncode} before serving")
        with contextlib.suppress(Exception):
            await drivers.health(url)
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the node did not start")


async def warm_up(url: str, sdp: str, audio: Any) -> None:
    """One of each session kind, so engines made on first use (the voice changer) count as idle."""
    rng = random.Random(0)
    await drivers.fuzz_data_channel(url, rng, 10, per_call=10)
    await drivers.healthy_captions(url, audio[:16000], (), pace=4.0)
    await drivers.fuzz_realtime(url, rng, 20, max_message_bytes=MAX_MESSAGE_BYTES, per_connection=20, parallel=1)


async def run_protocol(name: str, url: str, redis_url: str, rng: random.Random, messages: int, sdp: str) -> drivers.Tally:
    """Fuzz one protocol with ``messages`` messages."""
    if name == "captions":
        return await drivers.fuzz_captions(url, rng, messages, max_message_bytes=MAX_MESSAGE_BYTES)
    if name == "offer":
        return await drivers.fuzz_offers(url, rng, messages, sdp)
    if name == "data_channel":
        return await drivers.fuzz_data_channel(url, rng, messages)
    if name == "realtime":
        return await drivers.fuzz_realtime(url, rng, messages, max_message_bytes=MAX_MESSAGE_BYTES)
    if name == "telephony":
        return await drivers.fuzz_telephony(url, rng, messages, max_message_bytes=MAX_MESSAGE_BYTES)
    return await drivers.fuzz_redis(url, redis_url, rng, messages)


async def fuzz_one(name: str, url: str, redis_url: str, node: asyncio.subprocess.Process, seed: int, messages: int,
                   sdp: str, audio: Any, idle: dict[str, int]) -> dict[str, Any]:
    """One protocol's result: messages, crashes, leaked, the healthy session, the unclear answers."""
    watch = drivers.HealthWatch(url)
    poller = asyncio.create_task(watch.run(), name=f"fuzz-health-{name}")
    started = time.monotonic()
    try:
        tally, transcripts = await drivers.healthy_while(
            url, audio, FOX_WORDS, run_protocol(name, url, redis_url, random.Random(seed), messages, sdp))
    finally:
        watch.stop()
        await asyncio.gather(poller, return_exceptions=True)
    wall_s = time.monotonic() - started
    crashed = node.returncode is not None
    leaked = {} if crashed else await drivers.leaks(url, idle)
    healthy_ok = bool(transcripts) and not any(t.startswith("MISSING") for t in transcripts)
    return {
        **tally.as_dict(), "crashes": int(crashed) + len(watch.failures), "health_polls": watch.polls,
        "health_max_ms": round(watch.max_ms, 1), "leaked": sum(leaked.values()), "leaked_by_kind": leaked,
        "healthy_session_ok": healthy_ok, "healthy_sessions": len(transcripts),
        "healthy_transcript": transcripts[-1] if transcripts else None, "wall_s": round(wall_s, 1),
        "messages_per_s": round(tally.messages / wall_s, 1) if wall_s else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole bench (see module doc)."""
    from voxline.testing.speech_synth import synthesize

    names = [p for p in args.protocols.split(",") if p]
    unknown = sorted(set(names) - set(PROTOCOLS))
    if unknown:
        raise SystemExit(f"unknown protocol(s) {unknown}; known: {', '.join(PROTOCOLS)}")
    import numpy as np

    audio = np.concatenate([synthesize(FOX, 16000), np.zeros(12000, np.float32)])
    redis_port, port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    url = f"ws://127.0.0.1:{port}"
    log_path = Path(args.server_log)
    redis = await start_redis(redis_port)
    node = await start_node(port, redis_port, log_path)
    started = time.monotonic()
    results: dict[str, Any] = {}
    try:
        await wait_healthy(url, node)
        sdp = await drivers.valid_offer_sdp()
        await warm_up(url, sdp, audio)
        idle = await drivers.idle_counts(url)
        for i, name in enumerate(names):
            results[name] = await fuzz_one(name, url, redis_url, node, args.seed * 100 + i, args.messages_per_protocol,
                                           sdp, audio, idle)
            print(json.dumps({"protocol": name, **{k: results[name][k] for k in
                              ("messages", "crashes", "leaked", "unclear", "healthy_session_ok", "wall_s")}}),
                  file=sys.stderr, flush=True)
        final = await drivers.health(url) if node.returncode is None else {}
    finally:
        node.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.wait(), 20)
        if node.returncode is None:
            node.kill()
            await node.wait()
        redis.terminate()
        await redis.wait()
    return {
        "bench": "fuzz", "seed": args.seed, "messages_per_protocol": args.messages_per_protocol, "protocols": results,
        "idle": idle, "final_health": {k: final.get(k) for k in (*drivers.LEAK_FIELDS, "open_fds")},
        "server_log": str(log_path), "wall_s": round(time.monotonic() - started, 1),
        "machine": {"cpu_count": os.cpu_count()},
    }


def main() -> None:
    """The CLI: flags, run, one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages-per-protocol", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"comma-separated, of {', '.join(PROTOCOLS)}")
    parser.add_argument("--server-log", default="/tmp/voxline-fuzz-server.log")
    parser.add_argument("--json", action="store_true", help="(always JSON; kept for the bench convention)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    log_path = Path(args.server_log)
    result["server_tracebacks"] = log_path.read_text(errors="replace").count("Traceback") if log_path.exists() else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
