"""What the front of ``voxline serve --workers N`` adds to a connection: the handover's cost.

Starts two servers on loopback, calls off (``--max-calls 0``) so they load only the
caption engines: a single process (``--workers 1``, uvicorn listening itself) and a
front with ``--workers 2`` (accept, peek at the request line, pass the fd to a worker).
Then, alternating between them, ``--requests`` times each: open a fresh TCP connection,
send ``GET /healthz`` with ``Connection: close`` and read the whole response.
``connect_to_response_ms``: the wall time from ``connect()`` to the response's last
byte, p50/p95 for each, and the p50 difference (``added_ms``) and ratio, all from
this one run. A warm-up of ``--warmup`` requests each is not counted.

    python bench/workers_handover.py --requests 300 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
START_TIMEOUT_S = 180.0


def p50_p95(values: list[float]) -> dict[str, float]:
    """Median and nearest-rank p95 to 1 µs (the shared helper rounds to 0.1 ms: too coarse here)."""
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_request(port: int) -> float:
    """Milliseconds from connect to the last byte of a ``/healthz`` response on a fresh connection."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(REQUEST)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    elapsed_ms = (time.perf_counter() - started) * 1000
    if not received.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response on port {port}: {received[:80]!r}")
    return elapsed_ms


def start_server(workers: int, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VOXLINE_SERVER__MAX_CALLS": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "voxline.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        try:
            one_request(port)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not come up in {START_TIMEOUT_S:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print only the JSON summary line")
    args = parser.parse_args()
    ports = {"single": free_port(), "front": free_port()}
    servers = {"single": start_server(1, ports["single"]), "front": start_server(2, ports["front"])}
    times: dict[str, list[float]] = {"single": [], "front": []}
    try:
        for name, port in ports.items():
            until_up(port, servers[name])
        for i in range(args.warmup + args.requests):
            for name, port in ports.items():
                ms = one_request(port)
                if i >= args.warmup:
                    times[name].append(ms)
    finally:
        for server in servers.values():
            server.send_signal(signal.SIGTERM)
        for server in servers.values():
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
    single, front = p50_p95(times["single"]), p50_p95(times["front"])
    result: dict[str, Any] = {
        "bench": "workers_handover",
        "requests": args.requests,
        "connect_to_response_ms": {"single_process": single, "front_workers_2": front},
        "added_ms": round(front["p50"] - single["p50"], 3),
        "ratio": round(front["p50"] / single["p50"], 3) if single["p50"] else None,
    }
    if not args.json:
        print(f"single process p50 {single['p50']} ms, through the front p50 {front['p50']} ms", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
