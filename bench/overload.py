"""Overload: twice each limit offered at once; the refusals, and the admitted sessions' latency.

Starts one ``voxline serve`` (embedded models, CPU admission off, ``--max-sessions`` and
``--max-calls`` limits), warms it with one session of each kind, then per kind, for
``--rounds`` rounds:

- **at the limit**: exactly as many sessions as the limit, at once (the baseline);
- **twice the limit**: twice as many at once. Exactly the limit must be admitted, every
  other one refused clearly (a ``server_busy`` error and close 1013, or 503 with
  ``Retry-After``), and the admitted ones should keep the baseline's latency.

Kinds: ``captions`` (``/v1/captions`` streams of the ``real`` set at real-time pace;
latency: a sentence's final after its last speech sample was sent) and ``calls``
(WebRTC, one ``real`` recording as the question; latency: voice to voice). The refused
sessions go away at once, so what is measured is whether turning them away costs the
admitted ones anything. Prints one JSON object as its last line:

    python bench/overload.py [--max-sessions 4] [--max-calls 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_calls import ScriptedCall
from percentiles import p50_p95
from soak import (
    CaptionPublisher,
    SessionFailed,
    SessionRefused,
    Soak,
    Speech,
    counted,
    free_port,
    idle_counts,
    start_server,
    stop_server,
    wait_healthy,
    warm_up,
)

P95_RATIO_TARGET = 1.2
"""Admitted sessions under twice the offered load: p95 within 20 % of the same number at the limit."""


async def call_turn(url: str, speech: Speech, k: int, soak: Soak) -> None:
    """One call asking one recorded question; its v2v goes to ``soak``; raises when refused or unanswered."""
    report = await ScriptedCall(url, [speech.questions[k % len(speech.questions)]], [], []).run()
    if report.refused:
        raise SessionRefused(f"call: {report.error}")
    if report.error:
        raise SessionFailed(f"call: {report.error}")
    answered = [t for t in report.turns if t.reply is not None and t.v2v_ms is not None]
    if not answered:
        raise SessionFailed("call: the question was not answered")
    for turn in answered:
        soak.note("call_v2v_ms", float(turn.v2v_ms or 0.0), time.monotonic())


async def wave(kind: str, count: int, url: str, http_url: str, speech: Speech, first: int) -> Soak:
    """``count`` sessions of ``kind`` started together; what they measured and how they ended."""
    soak = Soak(t0=time.monotonic())
    async with asyncio.TaskGroup() as group:
        for i in range(count):
            if kind == "captions":
                publisher = CaptionPublisher(url, speech.streams[(first + i) % len(speech.streams)], soak)
                group.create_task(counted("captions", soak, publisher.run()))
            else:
                group.create_task(counted("calls", soak, call_turn(http_url, speech, first + i, soak)))
    return soak


def summary(soaks: list[Soak], kind: str, metric: str) -> dict[str, Any]:
    """Sessions run, admitted, refused (and why) and the latency figures over ``soaks``."""
    tallies = [s.tallies[kind] for s in soaks]
    samples = [ms for s in soaks for _at, ms in s.latency[metric]]
    return {
        "offered": sum(t.run for t in tallies),
        "admitted": sum(t.run - t.failed for t in tallies),
        "refused": sum(t.refused for t in tallies),
        "failed_otherwise": sum(t.failed - t.refused for t in tallies),
        "errors": sorted({e for t in tallies for e in t.errors})[:4],
        metric: p50_p95(samples),
        "samples": len(samples),
    }


async def measure(kind: str, limit: int, rounds: int, url: str, http_url: str, speech: Speech) -> dict[str, Any]:
    """The baseline and the doubled waves of ``kind``, alternating, ``rounds`` times."""
    metric = "caption_final_delay_ms" if kind == "captions" else "call_v2v_ms"
    at_limit: list[Soak] = []
    doubled: list[Soak] = []
    for r in range(rounds):
        at_limit.append(await wave(kind, limit, url, http_url, speech, first=4 * r))
        await asyncio.sleep(1.0)
        doubled.append(await wave(kind, 2 * limit, url, http_url, speech, first=4 * r + 1))
        await asyncio.sleep(1.0)
    base, over = summary(at_limit, kind, metric), summary(doubled, kind, metric)
    ratio = (over[metric]["p95"] / base[metric]["p95"]) if base[metric]["p95"] and over[metric]["p95"] else None
    return {
        "limit": limit, "metric": metric, "at_limit": base, "twice_the_limit": over,
        "p95_ratio": round(ratio, 3) if ratio is not None else None,
        "targets": {
            "exactly_the_limit_admitted": over["admitted"] == limit * rounds and over["refused"] == limit * rounds,
            "refusals_clear": over["failed_otherwise"] == 0 and all(
                "server_busy" in e or "1013" in e or "503" in e for e in over["errors"]),
            f"p95_ratio_le_{P95_RATIO_TARGET}": ratio is not None and ratio <= P95_RATIO_TARGET,
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, warm it, measure each kind, stop it; the report."""
    speech = await asyncio.to_thread(Speech.load)
    port = free_port()
    url, http_url = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    started = time.monotonic()
    args.max_viewers = 4  # start_server reads it (no viewers here)
    with tempfile.TemporaryFile() as log:
        server = await start_server(args, port, log)
        try:
            async with httpx.AsyncClient(base_url=http_url, timeout=10.0) as http:
                await wait_healthy(http, server)
                await warm_up(url, http_url, speech, Soak(t0=time.monotonic()))
                idle = await idle_counts(http, server.pid)
                kinds = {
                    "captions": await measure("captions", args.max_sessions, args.rounds, url, http_url, speech),
                    "calls": await measure("calls", args.max_calls, args.rounds, url, http_url, speech),
                }
                end = await idle_counts(http, server.pid)
        finally:
            server_exit = await stop_server(server)
    return {
        "bench": "overload", "set": "real", "max_sessions": args.max_sessions, "max_calls": args.max_calls,
        "rounds": args.rounds, "kinds": kinds,
        "leaked": {k: end[k] - idle[k] for k in ("graphs", "peer_connections", "sessions", "calls") if end[k] > idle[k]},
        "server_stop": server_exit, "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-sessions", type=int, default=4)
    parser.add_argument("--max-calls", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="(always JSON; kept for the bench convention)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
