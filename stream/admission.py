"""The node's admission for every kind of session, with the engines and metrics they share.

One ``SessionAdmission`` per process. Every session, whatever its kind (caption socket,
call, Realtime socket), asks ``admit()`` before building a graph and ``release()`` when
done; past ``max_sessions``, or while the node's own CPU load (``CpuLoad``, averaged
over ``cpu_window_s``) is above ``max_cpu_load``, new sessions are refused with a clear
error (``refusal``) instead of every session degrading.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from dataclasses import dataclass

import psutil

from voxline.config import Config
from voxline.pipeline.metrics import RuntimeMetrics
from voxline.pipeline.recipes.captioner import CaptionEngines


@dataclass(slots=True)
class SessionCounters:
    """Sessions by outcome since the process started."""

    started: int = 0
    refused: int = 0
    completed: int = 0
    client_errors: int = 0
    failed: int = 0
    disconnected: int = 0
    finals_sent: int = 0
    partials_sent: int = 0


class CpuLoad:
    """The node's own CPU load: its processes' CPU time as a fraction of the cores it may use.

    The node is the process tree under ``root_pid`` (this process; under ``--workers`` the
    front, so every worker sees the whole node's load). Load from other processes on the
    machine (a load generator, another tenant) is not counted: a node refuses for what it
    itself is doing, and in a container its share of the cores is what it has.
    ``run`` samples it every ``SAMPLE_S`` (a task the service owns); ``value`` is the mean
    of the samples in the window (0.0 before the first).
    """

    SAMPLE_S = 0.5

    def __init__(self, window_s: float, root_pid: int | None = None) -> None:
        self.samples: collections.deque[float] = collections.deque(maxlen=max(1, round(window_s / self.SAMPLE_S)))
        self.root_pid = root_pid or os.getpid()
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self._seen: dict[int, float] = {}

    @property
    def value(self) -> float:
        """The windowed mean load, 0..1."""
        return sum(self.samples) / len(self.samples) if self.samples else 0.0

    def cpu_seconds_since_last(self) -> float:
        """CPU seconds the node's processes used since the previous call (new ones count from now)."""
        used, seen = 0.0, {}
        try:
            root = psutil.Process(self.root_pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            processes = []
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue  # ended between the listing and the read
            total = times.user + times.system
            used += total - self._seen.get(process.pid, total)
            seen[process.pid] = total
        self._seen = seen
        return used

    async def run(self) -> None:
        """Sample until cancelled."""
        await asyncio.to_thread(self.cpu_seconds_since_last)
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.SAMPLE_S)
            used = await asyncio.to_thread(self.cpu_seconds_since_last)
            now = time.monotonic()
            self.samples.append(min(1.0, used / max(1e-3, (now - last) * self.cores)))
            last = now


class SessionAdmission:
    """The node's admission for every kind of session, and the caption engines they share.

    Caption sockets, calls (WebRTC, phone) and Realtime sockets all take a place here
    (``admit``/``release``); the engines and runtime metrics live beside the limits
    because every session that is admitted uses them.
    """

    def __init__(self, config: Config, engines: CaptionEngines | None = None, cpu_root_pid: int | None = None) -> None:
        self.config = config
        self.engines = engines
        self._owns_engines = engines is None
        self.metrics = RuntimeMetrics()
        self.counters = SessionCounters()
        self.active_sessions = 0
        self.started_at = time.monotonic()
        self.cpu = CpuLoad(config.server.cpu_window_s, cpu_root_pid)
        self.refusal = ""
        self._cpu_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the engines if none were given; start sampling the CPU load."""
        if self.engines is None:
            self.engines = await CaptionEngines.load(self.config.asr, self.config.vad)
        if self._cpu_task is None and self.config.server.max_cpu_load < 1.0:
            self._cpu_task = asyncio.create_task(self.cpu.run(), name="voxline-cpu-load")

    async def close(self) -> None:
        """Release engines this service loaded; stop the sampler. Idempotent."""
        task, self._cpu_task = self._cpu_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.engines is not None and self._owns_engines:
            await self.engines.close()

    def headroom(self) -> str:
        """Why a new session would be refused now (empty when it would be taken)."""
        server = self.config.server
        if self.active_sessions >= server.max_sessions:
            return f"the server is at its limit of {server.max_sessions} sessions; retry later"
        load = self.cpu.value
        if server.max_cpu_load < 1.0 and load > server.max_cpu_load:
            return f"the server's CPU is at {load:.0%} (limit {server.max_cpu_load:.0%}); retry later"
        return ""

    def admit(self) -> bool:
        """Reserve a session slot; False (``refusal`` says why) when there is no headroom."""
        self.refusal = self.headroom()
        if self.refusal:
            self.counters.refused += 1
            return False
        self.active_sessions += 1
        self.counters.started += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by ``admit``."""
        self.active_sessions -= 1
