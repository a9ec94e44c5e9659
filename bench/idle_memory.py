"""Idle memory of one ``voxline serve`` with the agent: resident, anonymous, file-backed, proportional, per engine.

Starts ``voxline serve`` (embedded defaults: captions and calls on) on a free port,
waits for ``/healthz``, lets it sit idle for ``--idle-s`` (past one of the allocator's
``server.memory_trim_s`` trims), and reads the process's memory from ``/proc``:
``rss_mb`` (the figure the target is on), its anonymous and file-backed parts, and
``pss_mb`` (file pages shared between mappings counted once: llama.cpp maps its GGUF
once per slot), with ``/healthz``'s ``engine_load_mb``. The last line of stdout is
one JSON object.

    python bench/idle_memory.py
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

TARGET_RSS_MB = 1200


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_memory(pid: int) -> dict[str, float]:
    """RSS, its anonymous and file parts, and PSS of ``pid`` (MB)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    rollup = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])

    def mb(table: dict[str, str], key: str) -> float:
        return round(int(table[key].split()[0]) / 1024, 1)

    return {"rss_mb": mb(status, "VmRSS"), "anon_mb": mb(status, "RssAnon"), "file_mb": mb(status, "RssFile"),
            "pss_mb": mb(rollup, "Pss")}


def measure(idle_s: float, start_timeout_s: float) -> dict[str, Any]:
    """Start the server, wait, measure, stop it."""
    port = free_port()
    voxline = Path(sys.executable).with_name("voxline")
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen([str(voxline), "serve", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"voxline serve exited: {log.read()[-2000:]}")
            try:
                httpx.get(url, timeout=2.0).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() - started > start_timeout_s:
                    raise SystemExit(f"voxline serve not up after {start_timeout_s:g} s") from None
                time.sleep(1.0)
        ready_s = time.monotonic() - started
        at_ready = proc_memory(server.pid)
        time.sleep(idle_s)
        idle = proc_memory(server.pid)
        health = httpx.get(url, timeout=5.0).json()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return {
        "bench": "idle_memory", "ready_s": round(ready_s, 1), "idle_s": idle_s,
        "at_ready": at_ready, "idle": idle, "engine_load_mb": health.get("engine_load_mb"),
        "target_rss_mb": TARGET_RSS_MB, "target_met": idle["rss_mb"] <= TARGET_RSS_MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=40.0, help="idle time before the reading (past one trim)")
    parser.add_argument("--start-timeout-s", type=float, default=300.0)
    parser.add_argument("--json", action="store_true", help="(always JSON; kept for the bench convention)")
    args = parser.parse_args()
    print(json.dumps(measure(args.idle_s, args.start_timeout_s)))


if __name__ == "__main__":
    main()
