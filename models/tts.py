"""Streaming speech synthesis: Piper (voice en_US-joe-medium) shared by all sessions.

One ``PiperEngine`` serves every session of a process. ``stream(text)`` queues a
request and returns a ``SynthesisStream``: an async iterator of mono float32 chunks
at ``sample_rate_hz`` (22050 Hz for the packaged voice), one per sentence of the text
(a sentence over ``MAX_PIECE_WORDS`` words is cut first: ``tts_pieces``, which bounds
each voice's memory), as Piper makes them. Worker threads run Piper; chunks reach the caller's loop through
a bounded queue (``max_chunks_ahead``), and a worker that is that far ahead of its
reader waits (back-pressure). A reader that stops (``aclose``, or cancellation of the
task iterating) stops synthesis before the next sentence.

Requests from different sessions are served earliest deadline first: ``deadline`` is
when the caller's listener will run out of audio (``time.monotonic()``; default: now).
A reply's first clause, with nothing queued ahead of it, beats a later clause of
another reply that still has seconds of audio to play.

Output is deterministic: Piper's generator and phoneme-width noise are off, as in
``voxline.testing.speech_synth``. The workers share one voice (one onnxruntime session, whose
``run`` is thread-safe, with ``cpu_threads`` intra-op threads per run and no memory
arena); Piper's espeak phonemizer is serialised by Piper.

Needs the ``tts`` extra (``pip install 'voxline[tts]'``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.errors import EngineError
from voxline.models.registry import ModelNotFoundError, piper_voice_path
from voxline.models.tts_pieces import WARM_UP_PIECE, bounded_pieces
from voxline.models.worker_pool import (
    EarliestDeadlineFirst,
    EngineStream,
    ResultChannel,
    WorkerPool,
)

__all__ = ["PiperEngine", "SynthesisStats", "SynthesisStream"]

MAX_TEXT_CHARS = 4000
"""Longest text one request may carry (characters)."""
_MAX_PENDING = 256  # requests waiting for a worker
_MAX_CHUNKS_AHEAD = 4  # chunks a worker may queue ahead of its reader
_CLOSE_TIMEOUT_S = 10.0

FloatAudio = npt.NDArray[np.float32]


@dataclass(slots=True)
class SynthesisStats:
    """How one request went; written by the worker, complete once the stream has ended.

    ``queued_ms``: from ``stream()`` until a worker took the request. ``first_chunk_ms``:
    from ``stream()`` until the first chunk was ready (None if none was). ``total_ms``:
    from ``stream()`` until synthesis ended. ``synth_ms``: time spent in Piper.
    ``audio_s``: seconds of audio made. ``cancelled``: the reader stopped early.
    """

    queued_ms: float = 0.0
    first_chunk_ms: float | None = None
    total_ms: float = 0.0
    synth_ms: float = 0.0
    audio_s: float = 0.0
    chunks: int = 0
    cancelled: bool = False

    @property
    def real_time_factor(self) -> float:
        """Synthesis time per second of audio (below 1: faster than real time)."""
        return self.synth_ms / 1000 / self.audio_s if self.audio_s else 0.0


@dataclass(slots=True, eq=False)
class _Request:
    text: str
    channel: ResultChannel[FloatAudio]
    submitted: float  # time.perf_counter()
    deadline: float  # time.monotonic() by which the listener needs the audio
    stats: SynthesisStats = field(default_factory=SynthesisStats)


class SynthesisStream(EngineStream[FloatAudio]):
    """Async iterator of one request's audio chunks (float32 mono, ``sample_rate_hz``).

    Iterating ends after the last chunk. ``aclose()`` (idempotent), or cancelling the
    task waiting in ``__anext__``, stops the request: a request still queued never
    runs; one being synthesized finishes the sentence Piper is on (that chunk is
    discarded) and makes no more, so its worker is free within one sentence's
    synthesis time. Chunks already queued are dropped. A task cancelled while it
    holds a chunk (not waiting in ``__anext__``) does not reach the stream: read inside
    ``async with engine.stream(text) as chunks:``, which closes it on the way out.
    As a safety net, a stream that is garbage-collected, or whose reader takes no
    chunk for 60 s, is closed too.

    Raises (from iteration): ``EngineError`` if Piper failed or the engine was closed
    before the request finished.
    """

    def __init__(self, request: _Request, pool: WorkerPool[_Request]) -> None:
        super().__init__(request.channel, functools.partial(pool.cancel, request))
        self._request = request

    @property
    def stats(self) -> SynthesisStats:
        """Figures of this request (complete once the stream has ended)."""
        return self._request.stats


class PiperEngine:
    """Piper text-to-speech shared by all sessions of a process.

    Life cycle: ``await start()`` (loads the voice off the loop, starts the worker
    threads), any number of concurrent ``stream(text)``, then ``await close()``
    (idempotent). ``voice_path`` is a Piper ``.onnx`` voice with its ``.onnx.json``
    beside it (default: the packaged en_US-joe-medium). ``workers`` requests are
    synthesized at once; others wait first in, first out (at most 256).
    ``length_scale`` stretches phoneme durations (above 1: slower speech).
    ``cpu_threads`` is each worker's onnxruntime thread budget: one keeps a 2-core
    machine's recogniser and LLM responsive, and Piper is still ~25x real time.
    ``memory_arena`` gives the voice onnxruntime's CPU arena back (``bench/tts_memory.py``
    compares): it keeps for good what the longest input needed.
    """

    def __init__(
        self,
        voice_path: str | None = None,
        *,
        workers: int = 1,
        length_scale: float = 1.0,
        cpu_threads: int = 1,
        memory_arena: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if length_scale <= 0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        self.voice_path = voice_path
        self.workers = workers
        self.length_scale = length_scale
        self.cpu_threads = cpu_threads
        self.memory_arena = memory_arena
        self._pool: WorkerPool[_Request] = WorkerPool(
            "tts", EarliestDeadlineFirst(), max_pending=_MAX_PENDING
        )
        self._sample_rate_hz: int | None = None

    @property
    def busy_workers(self) -> int:
        """Workers synthesizing (or waiting for a reader to take a chunk) right now."""
        return self._pool.busy_workers

    @property
    def sample_rate_hz(self) -> int:
        """Rate of the audio chunks (Hz), from the voice config; known once started."""
        if self._sample_rate_hz is None:
            raise EngineError("TTS engine is not started; await start() first")
        return self._sample_rate_hz

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load the voice(s) off the loop and start the workers; a second call does nothing.

        Raises:
            ModelNotFoundError: piper-tts or the voice is not installed.
            EngineError: the engine was closed, or the voice could not be loaded.

        If cancelled midway, loading finishes in its thread and no worker is started.
        """
        if self._pool.closing:
            raise EngineError("TTS engine is closed")
        if self._pool.started:
            return
        voice = await asyncio.to_thread(self._load_warm)
        if self._pool.started or self._pool.closing:
            return
        self._sample_rate_hz = int(voice.config.sample_rate)
        self._pool.start([functools.partial(self._work, voice) for _ in range(self.workers)])

    def _load_warm(self) -> Any:
        voice = self._load()
        try:
            for _ in voice.synthesize(WARM_UP_PIECE, syn_config=self._synthesis_config()):
                pass  # onnxruntime's first run sets up its kernels: not in a session's first reply
        except Exception as exc:  # onnxruntime's untyped errors
            raise EngineError(f"the Piper voice failed its first synthesis: {exc}") from exc
        return voice

    def _load(self) -> Any:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as exc:
            raise ModelNotFoundError(
                "piper-tts is not installed; install it with: pip install 'voxline[tts]'"
            ) from exc
        path = self.voice_path or piper_voice_path()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.cpu_threads
        options.inter_op_num_threads = 1
        # No CPU arena: an arena keeps, for good, what the longest input ever needed (about
        # 430 MB a voice after one long piece); plain allocations are freed after each run
        # and the allocator trim hands them back, at the same real-time factor.
        options.enable_cpu_mem_arena = self.memory_arena
        try:
            with open(f"{path}.json", encoding="utf-8") as config_file:
                config = PiperConfig.from_dict(json.load(config_file))
            # PiperVoice.load takes no session options; build the voice it would build.
            session = onnxruntime.InferenceSession(
                path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # OSError, JSON and onnxruntime's untyped errors
            raise EngineError(f"cannot load Piper voice {path}: {exc}") from exc
        return PiperVoice(session=session, config=config)

    async def close(self, *, drain: bool = False, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Stop the workers and wait for their threads to end (idempotent).

        With ``drain=False`` queued requests end at once with ``EngineError`` and
        requests being synthesized stop before their next sentence (their streams then
        raise ``EngineError``); with ``drain=True`` every accepted request is finished
        first (a reader must still take its chunks). Later ``stream`` calls raise
        ``EngineError``. If cancelled while waiting, the workers still stop on their own.

        Raises:
            EngineError: a worker did not end within ``timeout_s`` seconds.
        """
        await self._pool.close(
            drain=drain,
            timeout_s=timeout_s,
            dropped=lambda r: r.channel.finish(EngineError("TTS engine closed before the request ran")),
        )

    # -- requests -----------------------------------------------------------------

    def stream(self, text: str, *, deadline: float | None = None) -> SynthesisStream:
        """Queue ``text`` for synthesis and return the stream of its audio chunks.

        ``deadline`` (``time.monotonic()``, default now) orders waiting requests:
        earliest first. Whitespace-only text gives a stream that ends at once without
        using a worker.

        Raises:
            ValueError: ``text`` is longer than ``MAX_TEXT_CHARS``.
            EngineError: the engine is not started, closed, or 256 requests are waiting.
        """
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"TTS text is {len(text)} characters; max {MAX_TEXT_CHARS}")
        if self._pool.closing:
            raise EngineError("TTS engine is closed")
        if not self._pool.started:
            raise EngineError("TTS engine is not started; await start() first")
        request = _Request(
            " ".join(text.split()), ResultChannel(_MAX_CHUNKS_AHEAD), time.perf_counter(),
            deadline=time.monotonic() if deadline is None else deadline,
        )
        if request.text:
            self._pool.submit(request)
        else:
            request.channel.finish()
        return SynthesisStream(request, self._pool)

    async def synthesize_all(self, text: str) -> FloatAudio:
        """Speak ``text`` and return all its audio at ``sample_rate_hz`` (float32 mono).

        Empty text gives an empty array. If cancelled midway, synthesis stops before
        the next sentence. Raises as ``stream`` and its iteration do.
        """
        async with self.stream(text) as chunks:
            parts = [chunk async for chunk in chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    # -- worker -------------------------------------------------------------------

    def _synthesis_config(self) -> Any:
        from piper import SynthesisConfig

        return SynthesisConfig(length_scale=self.length_scale, noise_scale=0.0, noise_w_scale=0.0)

    def _work(self, voice: Any) -> None:
        config = self._synthesis_config()
        while (batch := self._pool.take()) is not None:
            for request in batch:
                if request.channel.cancelled.is_set():
                    continue
                with self._pool.working():
                    try:
                        self._synthesize(voice, config, request)
                    except Exception as exc:  # Piper and onnxruntime raise assorted types
                        error = EngineError(f"TTS synthesis failed: {exc}")
                        error.__cause__ = exc
                        request.channel.finish(error)

    def _stopped(self, request: _Request) -> bool:
        return request.channel.cancelled.is_set() or self._pool.stopping.is_set()

    def _synthesize(self, voice: Any, config: Any, request: _Request) -> None:
        stats = request.stats
        started = time.perf_counter()
        stats.queued_ms = (started - request.submitted) * 1000
        chunks = (chunk for piece in bounded_pieces(request.text) for chunk in voice.synthesize(piece, syn_config=config))
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            stats.synth_ms += (time.perf_counter() - t0) * 1000
            if chunk is None or self._stopped(request):
                break
            audio = np.asarray(chunk.audio_float_array, dtype=np.float32)
            ready_ms = (time.perf_counter() - request.submitted) * 1000
            if not request.channel.send(audio, stop=self._pool.stopping):
                break
            if stats.first_chunk_ms is None:
                stats.first_chunk_ms = ready_ms
            stats.chunks += 1
            stats.audio_s += len(audio) / voice.config.sample_rate
        stats.total_ms = (time.perf_counter() - request.submitted) * 1000
        if request.channel.cancelled.is_set():
            stats.cancelled = True
            request.channel.finish()
        elif self._stopped(request):
            request.channel.finish(EngineError("TTS engine closed during synthesis"))
        else:
            request.channel.finish()
