"""One worker of ``voxline serve --workers N``: a full node fed connections by the front.

The front (``front``) owns the listening socket. It starts this module as
``python -m voxline.stream.launch.worker_intake FD``, where FD is this worker's end of a Unix
``SOCK_SEQPACKET`` socketpair, the *channel*. Over it, one message each:

- front → worker, first: the pickled ``WorkerSpec`` (this worker's ``Config``, its
  ``node_id`` already set);
- front → worker, then: one accepted TCP connection per message, its fd attached
  (``SCM_RIGHTS``), its bytes untouched (the front only peeked at them);
- worker → front: JSON status messages, ``{"state": "ready"|"stopping", "report": {...}}``,
  the report being ``app.state.node_report()`` (node_id, sessions, max_sessions, calls,
  max_calls, session_ids, headroom, call_headroom, ...); sent once the app's lifespan has
  loaded the engines, then whenever the report changes (checked every 100 ms, on
  uvicorn's tick) and at least every ``REPORT_EVERY_S``.

The worker runs ``create_app(config)`` on uvicorn with ``uvicorn_config(config, app)``
(WebSocket limits, graceful shutdown), except that ``AdoptingServer`` binds no port: it
adopts each handed-over socket with ``loop.connect_accepted_socket`` and the protocol
factory uvicorn's own ``startup`` would use. A connection stays on this worker for
its whole life (keep-alive, WebSocket). SIGINT/SIGTERM shut it down as they would a
single-process server (drain, then the lifespan closes the engines); end of file on
the channel (the front is gone) does the same, so no worker outlives its front.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from voxline.allocator import limit_arenas
from voxline.config import Config
from voxline.stream.app import create_app
from voxline.stream.launch.uvicorn_settings import uvicorn_config

log = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0
"""A worker reports at least this often, changed or not (the front's liveness signal too)."""
MAX_CHANNEL_MESSAGE_BYTES = 128 * 1024
"""Largest message either side sends on the channel (a report with every session id, the spec)."""
MAX_FDS_PER_MESSAGE = 1
SPEC_TIMEOUT_S = 30.0
"""How long a fresh worker waits for its spec before giving up."""

NodeReport = Callable[[], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the front tells a worker: its config (``bus.node_id`` set) and its index."""

    config: Config
    index: int


class AdoptingServer(uvicorn.Server):
    """uvicorn's ``Server`` serving connections handed over on ``channel`` instead of a port.

    Everything else is uvicorn's: lifespan, protocols, ticks, signal handling and the
    graceful shutdown (``timeout_graceful_shutdown``) of the connections it adopted.
    """

    def __init__(self, config: uvicorn.Config, channel: socket.socket, node_report: NodeReport) -> None:
        super().__init__(config)
        self.channel = channel
        self.node_report = node_report
        self._intake: asyncio.Task[None] | None = None
        self._last_report: dict[str, Any] | None = None
        self._last_sent_at = 0.0
        self.adopted = 0
        self.dropped_reports = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Run the lifespan (engines load), then take connections and report ``ready``."""
        await super().startup(sockets=[])  # no listener of our own
        if not self.started:
            return
        self.channel.setblocking(False)
        self._intake = asyncio.create_task(self._adopt_connections(), name="voxline-worker-intake")
        self._report("ready", force=True)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 100 ms), plus a report when the load changed or 1 s passed."""
        if self.started and not self.should_exit:
            self._report("ready")
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop adopting, tell the front, then uvicorn's graceful shutdown and the lifespan's."""
        if self._intake is not None:
            self._intake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._intake
        self._report("stopping", force=True)
        await super().shutdown(sockets=[])

    def _protocol(self) -> asyncio.Protocol:
        """A connection's protocol, built exactly as ``uvicorn.Server.startup``'s factory does."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
            _loop=asyncio.get_running_loop(),
        )

    async def _adopt_connections(self) -> None:
        """Adopt every socket the front hands over until cancelled or the front is gone.

        Cancelled midway, a socket received but not yet adopted is closed.
        """
        loop = asyncio.get_running_loop()
        while True:
            await wait_readable(self.channel)
            while True:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(self.channel, 64, MAX_FDS_PER_MESSAGE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    log.error("worker channel failed (%s); stopping", exc)
                    self.should_exit = True
                    return
                if not data and not fds:
                    log.warning("the front is gone; stopping this worker")
                    self.should_exit = True
                    return
                for fd in fds:
                    sock = socket.socket(fileno=fd)
                    try:
                        sock.setblocking(False)
                        await loop.connect_accepted_socket(self._protocol, sock)
                    except BaseException:
                        sock.close()
                        raise
                    self.adopted += 1

    def _report(self, state: str, *, force: bool = False) -> None:
        """Send the node report when it changed, ``REPORT_EVERY_S`` passed, or ``force``.

        Latest wins: a report the channel has no room for is dropped (the next replaces it).
        """
        try:
            report = self.node_report()
        except Exception:  # a report that fails must not stop the server
            log.exception("node_report failed")
            return
        now = time.monotonic()
        if not force and report == self._last_report and now - self._last_sent_at < REPORT_EVERY_S:
            return
        message = json.dumps({"state": state, "report": report}).encode()
        if len(message) > MAX_CHANNEL_MESSAGE_BYTES:  # too many ids: the front routes on the counts
            message = json.dumps({"state": state, "report": {**report, "session_ids": []}}).encode()
        try:
            self.channel.send(message)
        except (BlockingIOError, InterruptedError):
            self.dropped_reports += 1
            return
        except OSError:
            self.should_exit = True  # the front is gone
            return
        self._last_report, self._last_sent_at = report, now


async def wait_readable(sock: socket.socket) -> None:
    """Wait until ``sock`` has something to read (or end of file); nothing is read."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def receive_spec(channel: socket.socket, timeout_s: float = SPEC_TIMEOUT_S) -> WorkerSpec:
    """The first message on the channel: this worker's spec (blocking, before any loop runs)."""
    channel.settimeout(timeout_s)
    data = channel.recv(MAX_CHANNEL_MESSAGE_BYTES)
    if not data:
        raise SystemExit("voxline worker: the front closed the channel before sending a spec")
    spec = pickle.loads(data)  # the front, our parent, is the only peer of this socketpair
    if not isinstance(spec, WorkerSpec):
        raise SystemExit(f"voxline worker: expected a WorkerSpec, got {type(spec).__name__}")
    return spec


def run_worker(channel: socket.socket) -> None:
    """Serve as one worker until stopped (blocking): the app, its engines, adopted connections."""
    spec = receive_spec(channel)
    limit_arenas(spec.config.server.malloc_arenas)  # before the engines start their threads
    app = create_app(spec.config, cpu_root_pid=os.getppid())  # the front: CPU load is the whole node's
    server = AdoptingServer(uvicorn_config(spec.config, app), channel, app.state.node_report)
    server.run()


def main(argv: list[str]) -> int:
    """``python -m voxline.stream.launch.worker_intake FD``: a worker on the channel at fd FD."""
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m voxline.stream.launch.worker_intake CHANNEL_FD", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_worker(socket.socket(fileno=int(argv[1])))
    return 0


if __name__ == "__main__":
    # Run the module under its own name, so the spec unpickles to the class the front pickled.
    from voxline.stream.launch import worker_intake

    sys.exit(worker_intake.main(sys.argv))
