"""The remote LLM engine: any OpenAI-compatible chat-completions server, streaming.

``OpenAIChatEngine`` sends ``POST {base_url}/chat/completions`` with ``"stream": true``
to vLLM, llama.cpp's server, llama-cpp-python's server or OpenAI itself. It fits the
same ``ChatEngine`` protocol as the embedded ``LlamaEngine``: ``stream()`` returns an
async iterator of text pieces with ``aclose()``, ``stats`` (``GenerationStats``) and
``text()``.

Two sans-I/O parts do the parsing and are tested without sockets: ``SseDecoder``
(bytes in, server-sent events out) and ``parse_chunk`` (one event's JSON in, its text
piece out). ``ChatCompletionStream`` only moves bytes between them and httpx.

Every wait is bounded:

- a free slot: at most ``max_concurrent`` requests are in flight; later ones wait first
  in, first out, for at most ``timeout_s``, and at most ``max_waiting`` of them wait (one
  more is refused at once, "LLM queue is full");
- connecting: ``connect_timeout_s``;
- the first text piece: ``timeout_s`` from sending the request (this covers the
  server's own queue and the prompt's processing);
- each later chunk: ``chunk_timeout_s`` after the one before.

Every failure (unreachable server, HTTP 4xx/5xx with the server's message, a timeout,
a malformed or truncated stream) is raised from the iteration as ``EngineError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httpx

from voxline.errors import ConfigError, EngineError
from voxline.models.llm import GenerationStats

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 1 << 20  # one server-sent event (a chunk is usually ~300 bytes)
MAX_ERROR_BODY_BYTES = 8192  # read of an HTTP error's body
ERROR_MESSAGE_CHARS = 400  # the server's message as quoted in an EngineError


def _clip(text: str, limit: int = ERROR_MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_message(body: str) -> str:
    """The human part of an error body: OpenAI's ``{"error": {"message"}}`` and its cousins."""
    try:
        obj: Any = json.loads(body)
    except ValueError:
        return _clip(body) or "(empty body)"
    for key in ("error", "detail", "message"):
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
            if isinstance(obj, dict) and isinstance(obj.get("message"), str):
                obj = obj["message"]
            break
    return _clip(obj if isinstance(obj, str) else json.dumps(obj))


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its type (``message`` unless named) and its data."""

    event: str
    data: str


class SseDecoder:
    """Server-sent events from a byte stream (sans-I/O): ``feed`` bytes, get whole events.

    Parses as the HTML standard says: lines end in CRLF, LF or CR; an event's ``data:``
    lines are joined with LF; a blank line ends the event; lines starting with ``:`` are
    comments (keep-alive pings); ``event:`` names the type; other fields are ignored,
    except llama.cpp's non-standard ``error: {...}`` line, which becomes an ``error``
    event. An event or line over ``max_event_bytes``, or one that is not UTF-8, raises
    ``EngineError``.
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._data: list[str] = []
        self._data_bytes = 0
        self._event = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Take the next bytes of the stream; return the events they complete, in order."""
        self._buffer += chunk
        events: list[SseEvent] = []
        while (line := self._next_line()) is not None:
            event = self._take_line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) + self._data_bytes > self.max_event_bytes:
            raise EngineError(f"malformed stream: an event over {self.max_event_bytes} bytes")
        return events

    def _next_line(self) -> bytes | None:
        buffer = self._buffer
        ends = [i for i in (buffer.find(b"\n"), buffer.find(b"\r")) if i >= 0]
        if not ends:
            return None
        end = min(ends)
        if buffer[end] == 0x0D and end + 1 == len(buffer):
            return None  # a CR that may be the first half of CRLF: wait for the next byte
        line = bytes(buffer[:end])
        del buffer[: end + (2 if buffer[end : end + 2] == b"\r\n" else 1)]
        return line

    def _take_line(self, raw: bytes) -> SseEvent | None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EngineError(f"malformed stream: a line is not UTF-8 ({exc})") from exc
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data))
            self._data, self._data_bytes, self._event = [], 0, ""
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
            self._data_bytes += len(raw) + 1
        elif field == "event":
            self._event = value
        elif field == "error":
            return SseEvent("error", value)
        return None


@dataclass(frozen=True, slots=True)
class ChunkDelta:
    """What one ``chat.completion.chunk`` carries: text (maybe empty), why it ended, usage."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None


def parse_chunk(data: str) -> ChunkDelta:
    """One event's data, a ``chat.completion.chunk`` object, to its first choice's text.

    Raises ``EngineError`` for an error object (quoting its message) or anything that
    is not a chunk. A usage-only chunk (no choices) gives empty text and the count.
    """
    try:
        obj: Any = json.loads(data)
    except ValueError as exc:
        raise EngineError(f"malformed stream: {_clip(data, 120)!r} is not JSON") from exc
    if not isinstance(obj, dict):
        raise EngineError(f"malformed stream: {_clip(data, 120)!r} is not a chunk object")
    if "error" in obj:
        raise EngineError(f"LLM server error mid-reply: {_error_message(data)}")
    usage = obj.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    tokens = tokens if isinstance(tokens, int) else None
    choices = obj.get("choices")
    if choices == []:
        return ChunkDelta("", None, tokens)
    choice = choices[0] if isinstance(choices, list) else None
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(delta, dict | None):
        raise EngineError(f"malformed stream: {_clip(data, 120)!r} has no choices[0].delta")
    text = (delta or {}).get("content") or ""
    if not isinstance(text, str):
        raise EngineError(f"malformed stream: content is {type(text).__name__}, not text")
    finish = choice.get("finish_reason")
    return ChunkDelta(text, finish if isinstance(finish, str) else None, tokens)


class ChatCompletionStream:
    """One streamed reply: an async iterator of text pieces; ``aclose`` ends the request.

    The request is sent when iteration starts, from the iterating task (no task of its
    own). ``aclose()`` (idempotent), leaving ``async with``, or cancelling the task
    iterating closes the HTTP response, which drops the connection so the server stops
    generating; pieces not yet read are dropped and ``stats.cancelled`` is set. An
    ``aclose()`` from another task while a read is waiting closes the connection under
    it, and that read ends the iteration.
    """

    def __init__(self, engine: OpenAIChatEngine, body: dict[str, Any]) -> None:
        self._engine = engine
        self._body = body
        self._stats = GenerationStats()
        self._decoder = SseDecoder()
        self._pieces: deque[str] = deque()
        self._error: EngineError | None = None
        self._response: httpx.Response | None = None
        self._chunks: AsyncGenerator[bytes, None] | None = None
        self._holds_slot = False
        self._reading = False
        self._done = False
        self._finish_reason: str | None = None
        self._usage_tokens: int | None = None
        self._started = 0.0
        self._first_deadline = 0.0

    @property
    def stats(self) -> GenerationStats:
        """Figures of this reply, timed from sending the request (complete once it ended)."""
        return self._stats

    @property
    def finish_reason(self) -> str | None:
        """Why the server ended the reply (``stop``, ``length``), None until it said."""
        return self._finish_reason

    async def text(self) -> str:
        """The whole reply (reads the stream to its end)."""
        return "".join([piece async for piece in self])

    def __aiter__(self) -> ChatCompletionStream:
        return self

    async def __anext__(self) -> str:
        while True:
            if self._pieces:
                return self._pieces.popleft()
            if self._error is not None:
                error, self._error = self._error, None
                self._end(cancelled=False)
                await self._release()
                raise error
            if self._done:
                await self._release()
                raise StopAsyncIteration
            self._reading = True
            try:
                await self._advance()
            except asyncio.CancelledError:
                self._end(cancelled=True)
                await asyncio.shield(self._release())
                raise
            except EngineError as exc:
                if not self._stats.cancelled:  # after aclose() a failing read is no news
                    self._error = exc
            finally:
                self._reading = False

    def needed_by(self, deadline: float) -> None:
        """Ignored: the remote server schedules its own requests."""

    async def aclose(self) -> None:
        """Stop the reply and close its HTTP response. Idempotent."""
        self._end(cancelled=True)
        self._pieces.clear()
        if self._reading and self._response is not None:
            await self._response.aclose()  # the waiting read fails, sees _done, and releases
        elif not self._reading:
            await self._release()

    async def __aenter__(self) -> ChatCompletionStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _end(self, *, cancelled: bool) -> None:
        if self._done:
            return
        self._done = True
        self._stats.cancelled = cancelled
        if self._started:
            self._stats.total_ms = (time.perf_counter() - self._started) * 1000
        if self._usage_tokens is not None and not cancelled:
            self._stats.completion_tokens = self._usage_tokens

    async def _release(self) -> None:
        """Close the response and free the slot; safe to call again."""
        response, chunks = self._response, self._chunks
        self._response = self._chunks = None
        try:
            if chunks is not None:
                await chunks.aclose()
            if response is not None:
                await response.aclose()
        except (httpx.HTTPError, RuntimeError):
            pass  # the connection broke or is closing anyway: it is dropped, not pooled
        finally:
            if self._holds_slot:
                self._holds_slot = False
                self._engine._release_slot()

    async def _advance(self) -> None:
        """One step: open the request, or read one network chunk and decode its events."""
        if self._response is None:
            await self._open()
            return
        assert self._chunks is not None
        engine = self._engine
        loop = asyncio.get_running_loop()
        waiting_first = self._stats.first_token_ms is None
        deadline = self._first_deadline if waiting_first else loop.time() + engine.chunk_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(self._chunks)
        except StopAsyncIteration:
            if not self._done:
                if self._finish_reason is None:
                    raise EngineError("LLM server closed the stream mid-reply (no [DONE])") from None
                self._end(cancelled=False)  # a finish reason but no [DONE]: still whole
            return
        except TimeoutError:
            if waiting_first:
                raise EngineError(f"LLM server sent no text within {engine.timeout_s} s") from None
            raise EngineError(f"LLM server stalled: nothing for {engine.chunk_timeout_s} s") from None
        except httpx.HTTPError as exc:
            if self._done:
                return  # aclose() from another task closed the response under the read
            raise EngineError(f"connection to the LLM server broke mid-reply: {exc!r}") from exc
        try:
            for event in self._decoder.feed(chunk):
                if self._take_event(event):
                    break
        except EngineError as exc:
            self._error = exc  # raised once the pieces before it have been read
        if self._done:
            await self._release()

    def _take_event(self, event: SseEvent) -> bool:
        """Queue the event's text; True when the reply is over ([DONE])."""
        if event.event == "error":
            raise EngineError(f"LLM server error mid-reply: {_error_message(event.data)}")
        if event.data.strip() == "[DONE]":
            self._end(cancelled=False)
            return True
        delta = parse_chunk(event.data)
        if delta.completion_tokens is not None:
            self._usage_tokens = delta.completion_tokens
        if delta.finish_reason is not None:
            self._finish_reason = delta.finish_reason
        if delta.text:
            if self._stats.first_token_ms is None:
                self._stats.first_token_ms = (time.perf_counter() - self._started) * 1000
            self._stats.completion_tokens += 1
            self._pieces.append(delta.text)
        return False

    async def _open(self) -> None:
        engine = self._engine
        client = engine._client
        if client is None or engine._closed:
            raise EngineError("LLM engine is closed")
        try:
            async with asyncio.timeout(engine.timeout_s):
                await engine._take_slot()
        except TimeoutError:
            raise EngineError(
                f"all {engine.max_concurrent} LLM request slots stayed busy for {engine.timeout_s} s"
            ) from None
        self._holds_slot = True
        if self._done:  # aclose() came while this waited for a slot
            return
        self._started = time.perf_counter()
        self._first_deadline = asyncio.get_running_loop().time() + engine.timeout_s
        request = client.build_request("POST", engine.url, json=self._body)
        try:
            async with asyncio.timeout_at(self._first_deadline):
                self._response = await client.send(request, stream=True)
        except TimeoutError:
            raise EngineError(f"LLM server at {engine.url} did not answer within {engine.timeout_s} s") from None
        except httpx.ConnectTimeout as exc:
            raise EngineError(
                f"cannot reach the LLM server at {engine.url}: no connection within {engine.connect_timeout_s} s"
            ) from exc
        except httpx.ConnectError as exc:
            raise EngineError(f"cannot reach the LLM server at {engine.url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise EngineError(f"request to the LLM server at {engine.url} failed: {exc!r}") from exc
        response = self._response
        if response.status_code >= 400:
            body = await self._read_error_body(response)
            raise EngineError(
                f"LLM server answered HTTP {response.status_code} {response.reason_phrase} "
                f"for {engine.url}: {_error_message(body)}"
            )
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise EngineError(f"malformed stream: expected text/event-stream, got {content_type!r}")
        self._chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())

    async def _read_error_body(self, response: httpx.Response) -> str:
        body = bytearray()
        try:
            async with asyncio.timeout_at(self._first_deadline):
                async for part in response.aiter_bytes():
                    body += part
                    if len(body) >= MAX_ERROR_BODY_BYTES:
                        break
        except (TimeoutError, httpx.HTTPError):
            pass  # quote what came
        return body[:MAX_ERROR_BODY_BYTES].decode("utf-8", errors="replace")


class OpenAIChatEngine:
    """A remote OpenAI-compatible chat server as a ``ChatEngine``, shared by all sessions.

    ``base_url`` ends before ``/chat/completions`` (``http://127.0.0.1:8080/v1``);
    ``model`` is sent as the request's model (left out when empty: llama.cpp serves
    one); ``extra_body`` holds server-specific fields added to every request (e.g.
    ``{"repeat_penalty": 1.0}``: llama-cpp-python's server applies 1.1 unless told,
    the embedded engine 1.0). ``api_key``, if any, goes in an ``Authorization: Bearer`` header and nowhere
    else (not in ``repr``, logs or errors). Proxies are not read from the environment.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        chunk_timeout_s: float = 10.0,
        max_concurrent: int = 4,
        max_waiting: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"LLM base_url must start with http:// or https://, not {base_url!r}")
        if min(timeout_s, connect_timeout_s, chunk_timeout_s) <= 0:
            raise ConfigError("LLM timeouts must be positive")
        if max_concurrent < 1:
            raise ConfigError(f"LLM max_concurrent must be at least 1, not {max_concurrent}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.chunk_timeout_s = chunk_timeout_s
        self.max_concurrent = max_concurrent
        self.max_waiting = 4 * max_concurrent if max_waiting is None else max_waiting
        self._waiting = 0
        self.extra_body = dict(extra_body or {})
        self._api_key = api_key or None
        self._slots = asyncio.Semaphore(max_concurrent)
        self._in_flight = 0
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._streams: weakref.WeakSet[ChatCompletionStream] = weakref.WeakSet()

    @classmethod
    def from_env(
        cls,
        base_url: str,
        model: str,
        api_key_env: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        chunk_timeout_s: float = 10.0,
        max_concurrent: int = 4,
        extra_body: Mapping[str, Any] | None = None,
    ) -> OpenAIChatEngine:
        """An engine whose key is the value of the variable named ``api_key_env``.

        ``env`` defaults to ``os.environ``. An empty name, or a variable unset or
        empty, means no key (local servers need none).
        """
        variables = os.environ if env is None else env
        api_key = variables.get(api_key_env) if api_key_env else None
        return cls(
            base_url, model, api_key or None, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
            chunk_timeout_s=chunk_timeout_s, max_concurrent=max_concurrent, extra_body=extra_body,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenAIChatEngine({self.base_url!r}, model={self.model!r}, api_key={key})"

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now (at most ``max_concurrent``)."""
        return self._in_flight

    async def start(self) -> None:
        """Open the connection pool (no request is sent); a second call does nothing."""
        if self._closed:
            raise EngineError("LLM engine is closed")
        if self._client is not None:
            return
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(
                connect=self.connect_timeout_s, read=max(self.timeout_s, self.chunk_timeout_s),
                write=self.connect_timeout_s, pool=self.connect_timeout_s,
            ),
            limits=httpx.Limits(max_connections=self.max_concurrent, max_keepalive_connections=self.max_concurrent),
            trust_env=False,
        )
        log.info("remote LLM %s at %s (up to %d requests at once)", self.model or "(server's)", self.url, self.max_concurrent)

    async def close(self) -> None:
        """Stop every open reply, then close the connections. Idempotent."""
        self._closed = True
        for stream in list(self._streams):
            await stream.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def stream(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 128, temperature: float = 0.0
    ) -> ChatCompletionStream:
        """Start a chat reply to ``messages`` (OpenAI-style role/content dicts); stream its text.

        Raises ``EngineError`` if the engine is not started or closed. The request is
        sent when iteration starts, once a slot is free (first in, first out).
        """
        if self._closed:
            raise EngineError("LLM engine is closed")
        if self._client is None:
            raise EngineError("LLM engine is not started; await start() first")
        body: dict[str, Any] = {
            **self.extra_body, "messages": [dict(m) for m in messages], "max_tokens": max_tokens,
            "temperature": temperature, "stream": True,
        }
        if self.model:
            body["model"] = self.model
        stream = ChatCompletionStream(self, body)
        self._streams.add(stream)
        return stream

    async def _take_slot(self) -> None:
        if self._slots.locked() and self._waiting >= self.max_waiting:
            raise EngineError(f"LLM queue is full ({self._waiting} requests waiting for {self.max_concurrent} slots)")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._in_flight += 1

    def _release_slot(self) -> None:
        self._in_flight -= 1
        self._slots.release()
