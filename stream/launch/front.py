"""``voxline serve --workers N``: N worker processes behind one port, and the front before them.

Why: one process runs aiortc's per-packet Python, the echo canceller (whose C call
holds the GIL) and every session's stages on one event loop; with four calls it used
about 45 % of the two cores here and the calls queued behind each other. N workers
are N full nodes (``create_app`` each, own engines, ``bus.node_id`` = ``BASE-wI``),
so their single-threaded stages run side by side.

How a connection reaches a worker: this process, the *front*, owns the listening
socket. For each accepted TCP connection it peeks at the HTTP request line
(``MSG_PEEK``: no byte is consumed), picks a worker (``Placement``), and hands the
connected socket's fd to it over a Unix ``SOCK_SEQPACKET`` socketpair (``SCM_RIGHTS``),
then closes its own copy. The worker adopts the socket into its uvicorn server
(``worker_intake.AdoptingServer``) and the connection is the worker's for its whole
life: keep-alive requests and WebSocket frames never pass through the front, and
WebRTC media is UDP straight to the worker's aiortc. Chosen over ``SO_REUSEPORT``
(the kernel hashes connections without knowing a worker's headroom) and over HTTP
redirects (browsers' WebSocket and many SDKs do not follow them).

Which worker: ``placement.Placement``, from each worker's latest report
(``app.state.node_report()``, sent on change and at least every second).

Lifecycle (``Front.run``): bind the port (a clash fails at once), start the workers,
listen once every worker reported ready (or after ``WORKER_START_TIMEOUT_S`` with the
ready ones; a worker that dies before it is ready fails the start, as a single
process's failed lifespan does). A worker that dies later is logged, routed around and
restarted (backoff ``RESTART_MIN_S`` → ``RESTART_MAX_S``). SIGINT/SIGTERM: stop
accepting, then SIGTERM every worker (each drains as a single server does) and wait
``WORKER_STOP_TIMEOUT_S`` before killing it; a second signal kills them at once.
A worker whose channel reaches end of file (the front died) stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import signal
import socket
import sys
import time

from voxline.config import Config
from voxline.errors import VoxlineError
from voxline.stream.launch.placement import Placement, parse_request_line
from voxline.stream.launch.uvicorn_settings import bind_host
from voxline.stream.launch.worker_intake import MAX_CHANNEL_MESSAGE_BYTES, WorkerSpec, wait_readable

log = logging.getLogger(__name__)

MAX_REQUEST_LINE_BYTES = 8192
"""The most the front peeks at; a longer request line goes to the least loaded worker."""
PEEK_TIMEOUT_S = 5.0
"""A connection that has not sent its request line by then is handed over as it is."""
PEEK_RETRY_S = 0.002
"""Between peeks at a partial request line (readiness stays set while bytes wait)."""
HANDOVER_TIMEOUT_S = 2.0
"""How long a handover waits for room on a worker's channel before trying another."""
MAX_CONNECTIONS_IN_HAND = 256
"""Connections accepted and not yet handed over; past it the front stops accepting (the
kernel's backlog holds the rest)."""
LISTEN_BACKLOG = 2048
WORKER_START_TIMEOUT_S = 180.0
"""The front starts serving with the ready workers when not all are ready by then."""
WORKER_STOP_TIMEOUT_S = 30.0
"""A stopping worker has this long (drain, engines closed) before it is killed."""
RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0
STABLE_RUN_S = 60.0
"""A worker that ran this long before dying restarts after ``RESTART_MIN_S`` again."""


class WorkersError(VoxlineError):
    """The workers could not be started (one died before it was ready, or none got ready)."""


# --- the I/O: worker processes and the front --------------------------------------------


class WorkerProcess:
    """One worker: its process, its channel, its restarts. ``supervise`` owns them all."""

    def __init__(self, spec: WorkerSpec, front: Front) -> None:
        self.spec = spec
        self.index = spec.index
        self.node_id = spec.config.bus.node_id
        self.front = front
        self.process: asyncio.subprocess.Process | None = None
        self.channel: socket.socket | None = None
        self.starts = 0
        self.ever_ready = asyncio.Event()

    async def supervise(self) -> None:
        """Run the worker, restarting it when it dies, until the front stops.

        Cancelled midway (or stopping), the worker gets SIGTERM, then SIGKILL after
        ``WORKER_STOP_TIMEOUT_S`` (SIGKILL at once when the front is forced).
        """
        backoff = RESTART_MIN_S
        while not self.front.stopping.is_set():
            started = time.monotonic()
            try:
                process = await self._start()
            except OSError as exc:
                why = f"worker {self.node_id} could not start: {exc}"
            else:
                await self._run(process)
                why = f"worker {self.node_id} (pid {process.pid}) exited with {process.returncode}"
            if self.front.stopping.is_set():
                break
            log.error("%s", why)
            if not self.front.serving:
                self.front.failed_start(why)
                break
            if time.monotonic() - started > STABLE_RUN_S:
                backoff = RESTART_MIN_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.front.stopping.wait(), backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)

    async def _run(self, process: asyncio.subprocess.Process) -> None:
        """Read the worker's reports until it exits or the front stops (then stop it)."""
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read_reports())
                exited = group.create_task(process.wait())
                stop = group.create_task(self.front.stopping.wait())
                await asyncio.wait([exited, stop], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if not exited.done():
                    await self._stop_process(process)
                reader.cancel()
        finally:
            if process.returncode is None:  # cancelled: still leave nothing behind
                await asyncio.shield(self._stop_process(process))
            self._close_channel()
            self.front.placement.down(self.index)
            self.front.changed.set()

    async def _start(self) -> asyncio.subprocess.Process:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.send(pickle.dumps(self.spec))  # waits in the channel until the worker reads it
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voxline.stream.launch.worker_intake", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.channel, self.process = ours, process
        self.starts += 1
        log.info("worker %s started (pid %d)", self.node_id, process.pid)
        return process

    async def _read_reports(self) -> None:
        """Feed the worker's status messages to placement until end of file."""
        loop = asyncio.get_running_loop()
        assert self.channel is not None
        while True:
            try:
                data = await loop.sock_recv(self.channel, MAX_CHANNEL_MESSAGE_BYTES)
            except OSError:
                return  # the worker is gone: its exit is what the supervisor acts on
            if not data:
                return
            try:
                message = json.loads(data)
                state, report = message["state"], message["report"]
                if not isinstance(report, dict) or state not in ("ready", "stopping"):
                    raise ValueError(f"unexpected status {message!r:.200}")
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("worker %s sent a malformed report: %s", self.node_id, exc)
                continue
            was_ready = self.front.placement.workers[self.index].ready
            self.front.placement.reported(self.index, state, report, time.monotonic())
            if state == "ready" and not was_ready:
                log.info("worker %s ready", self.node_id)
                self.ever_ready.set()
                self.front.changed.set()
            elif state == "stopping" and was_ready:
                log.info("worker %s stopping", self.node_id)

    async def handover(self, conn: socket.socket) -> bool:
        """Send ``conn``'s fd to the worker; False when its channel is gone or stays full."""
        channel = self.channel
        if channel is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANDOVER_TIMEOUT_S
        while True:
            try:
                socket.send_fds(channel, [b"c"], [conn.fileno()])
                return True
            except (BlockingIOError, InterruptedError):
                if loop.time() > deadline:
                    return False
                await asyncio.sleep(PEEK_RETRY_S)
            except OSError:
                return False

    async def _stop_process(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL if self.front.forced else signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), WORKER_STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("worker %s did not stop within %.0f s; killing it", self.node_id, WORKER_STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def worker_specs(config: Config, host_pid: str | None = None) -> list[WorkerSpec]:
    """Each worker's config: ``bus.node_id`` = ``BASE-wI`` (BASE: the config's, else host-pid)."""
    base = config.bus.node_id or host_pid or f"{socket.gethostname()}-{os.getpid()}"
    return [
        WorkerSpec(dataclasses.replace(config, bus=dataclasses.replace(config.bus, node_id=f"{base}-w{i}")), i)
        for i in range(config.server.workers)
    ]


class Front:
    """The listening socket, the workers behind it, and the handover of each connection."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.workers = [WorkerProcess(spec, self) for spec in worker_specs(config)]
        self.placement = Placement([w.node_id for w in self.workers])
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()
        """Set when a worker got ready or went down, or the front is stopping."""
        self.serving = False
        self.forced = False
        self.failure = ""
        self.handed_over = 0
        self.listeners: list[socket.socket] = []
        self._in_hand = asyncio.Semaphore(MAX_CONNECTIONS_IN_HAND)
        self._routes: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Begin the graceful stop (idempotent); a second call forces it (workers killed)."""
        if self.stopping.is_set():
            self.forced = True
            for worker in self.workers:
                if worker.process is not None and worker.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
        self.stopping.set()
        self.changed.set()

    def failed_start(self, why: str) -> None:
        self.failure = self.failure or why
        self.stop()

    async def run(self) -> None:
        """Serve until ``stop``: bind, start the workers, listen once they are ready, hand over.

        On stop the listeners close first and connections not yet handed over are
        closed; then every worker drains. ``WorkersError`` when the workers could not start.
        """

        self.listeners = bind_listeners(bind_host(self.config), self.config.server.port)
        try:
            async with asyncio.TaskGroup() as workers:
                for worker in self.workers:
                    workers.create_task(worker.supervise(), name=f"voxline-worker-{worker.index}")
                await self._until_ready()
                if not self.stopping.is_set():
                    await self._serve()
        finally:
            for listener in self.listeners:
                listener.close()
        if self.failure:
            raise WorkersError(self.failure)

    async def _until_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKER_START_TIMEOUT_S
        while not self.stopping.is_set() and not all(w.ever_ready.is_set() for w in self.workers):
            self.changed.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self.changed.wait()
            except TimeoutError:
                if not any(w.ever_ready.is_set() for w in self.workers):
                    self.failed_start(f"no worker was ready within {WORKER_START_TIMEOUT_S:.0f} s")
                else:
                    log.warning("serving with %d of %d workers ready", self.placement.ready_count(), len(self.workers))
                return

    async def _serve(self) -> None:
        """Accept and hand over until ``stop``."""
        self.serving = True
        try:
            async with asyncio.TaskGroup() as group:
                accepts = []
                for listener in self.listeners:
                    listener.listen(LISTEN_BACKLOG)
                    accepts.append(group.create_task(self._accept(listener), name="voxline-front-accept"))
                ready = [w.node_id for w in self.workers if w.ever_ready.is_set()]
                log.info("serving on port %d with workers %s", self.config.server.port, ", ".join(ready))
                await self.stopping.wait()
                for task in accepts:
                    task.cancel()
        finally:  # connections still being peeked at are closed, never handed over
            routes = list(self._routes)
            for task in routes:
                task.cancel()
            if routes:
                await asyncio.shield(asyncio.wait(routes))
            for listener in self.listeners:
                listener.close()

    async def _accept(self, listener: socket.socket) -> None:
        """Accept connections until cancelled; each is routed by its own task (``_routes``)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._in_hand.acquire()
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError:
                self._in_hand.release()
                log.exception("accept failed")
                await asyncio.sleep(0.1)  # e.g. out of fds: do not spin
                continue
            except BaseException:
                self._in_hand.release()
                raise
            route = asyncio.create_task(self._route(conn), name="voxline-front-route")
            self._routes.add(route)
            route.add_done_callback(self._routes.discard)

    async def _route(self, conn: socket.socket) -> None:
        """Peek at ``conn``'s request line, pick a worker, hand it over; close our copy either way.

        Cancelled midway, the connection is closed (it was never handed over).
        """
        try:
            with conn:
                head = await peek_head(conn)
                if head is None:
                    return  # closed before saying anything
                target = parse_request_line(head)
                tried: set[int] = set()
                while (index := self.placement.choose(target, time.monotonic(), frozenset(tried))) is not None:
                    if await self.workers[index].handover(conn):
                        self.handed_over += 1
                        return
                    tried.add(index)
                # no worker can take it: closing is the clean answer
        except Exception:  # one connection's trouble must not stop the front
            log.exception("routing a connection failed")
        finally:
            self._in_hand.release()


async def peek_head(conn: socket.socket) -> bytes | None:
    """The connection's first bytes, up to its request line's end, without consuming them.

    None when the peer closed first; what arrived by then (maybe nothing, maybe part
    of a line) after ``PEEK_TIMEOUT_S`` or ``MAX_REQUEST_LINE_BYTES``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PEEK_TIMEOUT_S
    data = b""
    while True:  # the first peek comes before any wait: the request usually came with the accept
        try:
            peeked = conn.recv(MAX_REQUEST_LINE_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            peeked = None
        except OSError:
            return None
        if peeked is not None:
            if not peeked:
                return None
            data = peeked
            if b"\r\n" in data or len(data) >= MAX_REQUEST_LINE_BYTES:
                return data
        try:
            async with asyncio.timeout_at(deadline):
                if peeked is None:
                    await wait_readable(conn)
                else:  # part of a line: readiness stays set, so look again shortly
                    await asyncio.sleep(PEEK_RETRY_S)
        except TimeoutError:
            return data


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Non-blocking sockets bound to every address of ``host``:``port``, not yet listening.

    Bound first so a port already in use fails before any model loads; listening starts
    only when workers are ready, so early clients are refused rather than left hanging.
    """
    listeners = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in listeners:
            sock.close()
        raise WorkersError(f"cannot listen on {host}:{port}: {exc}") from exc
    return listeners


def serve_workers(config: Config) -> None:
    """Run the front and ``config.server.workers`` workers until SIGINT/SIGTERM (blocking)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    async def main() -> None:
        front = Front(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, front.stop)
        try:
            await front.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
