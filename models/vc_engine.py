"""The voice-conversion engine: one converter shared by every session, batched on one worker.

A session opens a ``ConverterSession`` and awaits ``convert(samples)`` for each frame
it receives. Requests go into the engine's ``WorkerPool`` (bounded: past
``max_pending`` a request is refused with ``EngineError``, the caller's back-pressure);
the worker takes every request pending at once and hands them to the converter in
one ``process`` call, so N sessions cost one batch of tensor operations, not N, on the
CPU or a GPU alike. What the worker measured (batch sizes, compute per batch) is kept
for the benchmark.

Any ``StreamingConverter`` fits: the built-in ``PsolaConverter`` or a user's neural
model (``models.neural_vc``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from voxline.errors import EngineError

from .voice_converter import VoiceParams
from .worker_pool import FirstInFirstOut, WorkerPool, reject, resolve

__all__ = ["BatchTiming", "ConverterSession", "StreamingConverter", "VoiceConverterEngine"]

FloatAudio = npt.NDArray[np.float32]
_MAX_PENDING = 1024
_MAX_BATCH = 256
_TIMING_HISTORY = 4096


class StreamingConverter(Protocol):
    """What the engine needs of a converter: causal, stateful, one call for many sessions.

    ``process`` takes the next chunk of each state given (each state at most once) and
    returns as many samples per state, the converted input ``latency_samples`` late.
    """

    sample_rate_hz: int
    latency_samples: int

    def new_state(self, params: VoiceParams | None = None) -> Any:
        """A fresh per-session state."""
        ...

    def process(self, states: Sequence[Any], chunks: Sequence[FloatAudio]) -> list[FloatAudio]:
        """Convert one chunk per state; same lengths out."""
        ...


@dataclass(slots=True)
class BatchTiming:
    """One batch the worker ran: how many sessions, how many samples, how long (ms)."""

    sessions: int
    samples: int
    compute_ms: float


@dataclass(slots=True, eq=False)
class _Request:
    session: ConverterSession
    samples: FloatAudio
    future: asyncio.Future[FloatAudio]
    abandoned: bool = False


@dataclass(slots=True, eq=False)
class ConverterSession:
    """One caller's stream through the engine; ``params`` may be changed at any time."""

    engine: VoiceConverterEngine
    state: Any
    in_flight: bool = False

    @property
    def sample_rate_hz(self) -> int:
        """The rate ``convert`` takes and returns (the engine's)."""
        return self.engine.sample_rate_hz

    @property
    def params(self) -> VoiceParams:
        """The voice now applied."""
        return self.state.params

    @params.setter
    def params(self, value: VoiceParams) -> None:
        self.state.params = value  # read by the worker at its next grain: an attribute swap is atomic

    async def convert(self, samples: FloatAudio) -> FloatAudio:
        """The next converted samples, as many as given (``latency_samples`` behind them).

        One request at a time per session (await each before the next). If cancelled,
        the request leaves the queue, or its result is dropped if it already ran.

        Raises:
            EngineError: the engine is not started or closed, its queue is full, a
                request of this session is still running, or the converter failed.
        """
        if self.in_flight:
            raise EngineError("a conversion of this session is still running; await it first")
        engine = self.engine
        if not engine.started:
            raise EngineError("VC engine is not started; await start() first")
        chunk = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        request = _Request(self, chunk, asyncio.get_running_loop().create_future())
        self.in_flight = True
        try:
            engine.pool.submit(request)
            return await request.future
        except asyncio.CancelledError:
            request.abandoned = True
            engine.pool.cancel(request)
            raise
        finally:
            self.in_flight = False


class VoiceConverterEngine:
    """A ``StreamingConverter`` shared by all sessions of a process, on one batching worker.

    Life cycle: ``await start()``, any number of ``open(params)`` sessions and their
    ``convert`` calls, then ``await close()`` (idempotent; pending requests fail with
    ``EngineError``).
    """

    def __init__(self, converter: StreamingConverter, *, max_pending: int = _MAX_PENDING) -> None:
        self.converter = converter
        self.pool: WorkerPool[_Request] = WorkerPool("vc", FirstInFirstOut(_MAX_BATCH), max_pending=max_pending)
        self._timings: collections.deque[BatchTiming] = collections.deque(maxlen=_TIMING_HISTORY)

    @property
    def sample_rate_hz(self) -> int:
        """The rate sessions send and receive (Hz)."""
        return self.converter.sample_rate_hz

    @property
    def latency_samples(self) -> int:
        """The converter's fixed delay (samples at ``sample_rate_hz``)."""
        return self.converter.latency_samples

    @property
    def latency_ms(self) -> float:
        """The converter's fixed delay (ms)."""
        return 1000.0 * self.latency_samples / self.sample_rate_hz

    @property
    def started(self) -> bool:
        """True while the worker runs."""
        return self.pool.started and not self.pool.closing

    @property
    def batch_timings(self) -> list[BatchTiming]:
        """The most recent batches, oldest first."""
        return list(self._timings)

    async def start(self) -> None:
        """Start the worker; a second call does nothing. On CPU, torch gets one thread (process-wide).

        Raises:
            EngineError: the engine was closed.
        """
        if self.pool.closing:
            raise EngineError("VC engine is closed")
        if torch.get_num_threads() > 1 and str(getattr(self.converter, "device", "cpu")) == "cpu":
            # One worker, one core: a frame's tensors are small, and torch's default of
            # every core would spin the cores the recogniser and the LLM need.
            torch.set_num_threads(1)
        self.pool.start([self._work])

    async def close(self) -> None:
        """Fail pending requests, stop the worker and join it. Idempotent."""
        await self.pool.close(dropped=lambda r: reject(r.future, EngineError("VC engine closed")))

    def open(self, params: VoiceParams | None = None) -> ConverterSession:
        """A new session stream with ``params`` (default: the neutral voice)."""
        return ConverterSession(self, self.converter.new_state(params))

    def _work(self) -> None:
        while (batch := self.pool.take()) is not None:
            live = [r for r in batch if not r.abandoned]
            if not live:
                continue
            with self.pool.working():
                started = time.perf_counter()
                try:
                    outputs = self.converter.process([r.session.state for r in live], [r.samples for r in live])
                except Exception as exc:  # torch, onnxruntime and user models raise assorted types
                    error = EngineError(f"voice conversion of {len(live)} sessions failed: {exc}")
                    error.__cause__ = exc
                    for request in live:
                        reject(request.future, error)
                    continue
                elapsed_ms = (time.perf_counter() - started) * 1000
            self._timings.append(BatchTiming(len(live), sum(len(r.samples) for r in live), elapsed_ms))
            for request, output in zip(live, outputs, strict=True):
                resolve(request.future, output)
