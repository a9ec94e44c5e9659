"""The remote LLM engine against a real OpenAI-compatible server (llama-cpp-python's) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from conftest import free_port

from voxline.errors import ConfigError, EngineError
from voxline.models.llm import smollm2_path
from voxline.models.remote_llm import OpenAIChatEngine, SseDecoder, SseEvent, parse_chunk

SYSTEM = {"role": "system", "content": "You are a helpful voice assistant. Answer in one short sentence."}
SKY = [SYSTEM, {"role": "user", "content": "What color is the sky on a clear day?"}]
STORY = [SYSTEM, {"role": "user", "content": "Tell me a long story about a dragon and a knight."}]
HELLO = [SYSTEM, {"role": "user", "content": "Say hello."}]

IN_PROCESS_REPLY = """
import asyncio, json, sys
from voxline.models.llm import LlamaEngine
async def main():
    engine = LlamaEngine()
    await engine.start()
    try:
        print(json.dumps(await engine.stream(json.loads(sys.argv[1]), max_tokens=int(sys.argv[2])).text()))
    finally:
        await engine.close()
asyncio.run(main())
"""
SERVER_START_S = 60


@dataclass(frozen=True, slots=True)
class LlamaServer:
    base_url: str
    port: int
    log: Path

    def disconnects(self) -> int:
        """How many times the server has seen a client hang up mid-reply."""
        return self.log.read_text(errors="replace").count("Disconnected from client")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """``python -m llama_cpp.server`` with SmolLM2, one thread, on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    args = ["--model", smollm2_path(), "--n_threads", "1", "--n_threads_batch", "1",
            "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-u", "-m", "llama_cpp.server", *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within {SERVER_START_S} s")
            time.sleep(0.1)
        yield LlamaServer(f"http://127.0.0.1:{port}/v1", port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest_asyncio.fixture
async def engine(server: LlamaServer) -> AsyncIterator[OpenAIChatEngine]:
    eng = OpenAIChatEngine(server.base_url, "smollm2", timeout_s=20)
    await eng.start()
    yield eng
    await eng.close()


def established_connections_to(port: int) -> int:
    """Open client-side TCP connections to ``port`` on this machine (from /proc/net/tcp)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[2].endswith(f":{port:04X}") and row.split()[3] == "01")


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# -- against the real server ------------------------------------------------------------


async def test_a_streamed_reply_is_word_for_word_what_the_embedded_engine_says(server: LlamaServer) -> None:
    embedded = await asyncio.create_subprocess_exec(
        sys.executable, "-c", IN_PROCESS_REPLY, json.dumps(SKY), "40",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(embedded.communicate(), 120)
    assert embedded.returncode == 0, err.decode()[-2000:]
    # the server's default repeat penalty is 1.1, the embedded engine's 1.0
    engine = OpenAIChatEngine(server.base_url, "smollm2", extra_body={"repeat_penalty": 1.0})
    await engine.start()
    stream = engine.stream(SKY, max_tokens=40)
    pieces = [piece async for piece in stream]
    text = "".join(pieces)
    assert len(pieces) >= 3 and "blue" in text.lower()
    assert text == json.loads(out)  # greedy decoding: the same words
    stats = stream.stats
    assert stats.first_token_ms is not None and 0 < stats.first_token_ms < 5000
    assert stats.completion_tokens == len(pieces) and stats.total_ms >= stats.first_token_ms
    assert stats.tokens_per_s > 5 and not stats.cancelled
    assert stream.finish_reason in ("stop", "length") and engine.in_flight == 0
    await engine.close()


async def test_closing_a_reply_midway_hangs_up_at_once_and_the_server_serves_the_next(
    engine: OpenAIChatEngine, server: LlamaServer
) -> None:
    hangups = server.disconnects()
    story = engine.stream(STORY, max_tokens=400)
    pieces = [await anext(story) for _ in range(3)]
    started = time.perf_counter()
    await story.aclose()
    await story.aclose()
    assert time.perf_counter() - started < 0.5
    assert len(pieces) == 3 and [p async for p in story] == []
    assert story.stats.cancelled and story.stats.completion_tokens < 20 and engine.in_flight == 0
    assert await wait_until(lambda: server.disconnects() > hangups, 3), "the server never saw the hang-up"
    hello = engine.stream(HELLO, max_tokens=12)
    assert (await hello.text()).strip()
    assert hello.stats.first_token_ms is not None and hello.stats.first_token_ms < 3000


async def test_cancelling_the_reading_task_closes_the_connection_and_leaves_no_task(
    engine: OpenAIChatEngine, server: LlamaServer
) -> None:
    hangups = server.disconnects()
    before = asyncio.all_tasks()
    stream = engine.stream(STORY, max_tokens=400)
    pieces: list[str] = []

    async def listen() -> None:
        async for piece in stream:
            pieces.append(piece)

    task = asyncio.create_task(listen())
    assert await wait_until(lambda: len(pieces) >= 2, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
    assert asyncio.all_tasks() == before
    assert stream.stats.cancelled and engine.in_flight == 0
    assert established_connections_to(server.port) == 0
    assert await wait_until(lambda: server.disconnects() > hangups, 3)
    assert (await engine.stream(HELLO, max_tokens=8).text()).strip()


async def test_one_slot_makes_replies_wait_their_turn_so_none_is_cut_short(server: LlamaServer) -> None:
    # llama-cpp-python's server cuts a streaming reply short when another request comes
    # in: only a client that keeps to its slots gets whole replies.
    async def ask_three(max_concurrent: int) -> tuple[list[str | None], list[int], int]:
        eng = OpenAIChatEngine(server.base_url, "", max_concurrent=max_concurrent, timeout_s=20)
        await eng.start()
        peak, order = 0, []

        async def ask(name: int) -> str | None:
            stream = eng.stream(HELLO, max_tokens=10)
            await stream.text()
            order.append(name)
            return stream.finish_reason

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, eng.in_flight)
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        try:
            reasons = await asyncio.gather(*(ask(i) for i in range(3)))
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await eng.close()
        return list(reasons), order, peak

    reasons, order, peak = await ask_three(1)
    assert None not in reasons and order == [0, 1, 2] and peak == 1
    reasons, _, peak = await ask_three(3)
    assert None in reasons and peak > 1  # the contrast: overlapping requests were cut


async def test_closing_from_another_task_ends_the_readers_loop_quietly(
    engine: OpenAIChatEngine, server: LlamaServer
) -> None:
    hangups = server.disconnects()
    stream = engine.stream(STORY, max_tokens=400)
    pieces: list[str] = []

    async def listen() -> None:
        async for piece in stream:
            pieces.append(piece)

    reader = asyncio.create_task(listen())
    assert await wait_until(lambda: len(pieces) >= 2, 10)
    await stream.aclose()
    await asyncio.wait_for(reader, 1)  # ends without an error
    assert stream.stats.cancelled and len(pieces) < 30 and engine.in_flight == 0
    assert await wait_until(lambda: server.disconnects() > hangups, 3)


async def test_closing_the_engine_stops_replies_being_read(server: LlamaServer) -> None:
    eng = OpenAIChatEngine(server.base_url, "")
    await eng.start()
    stream = eng.stream(STORY, max_tokens=400)
    first = asyncio.Event()

    async def listen() -> None:
        async for _ in stream:
            first.set()

    reader = asyncio.create_task(listen())
    await asyncio.wait_for(first.wait(), 10)
    await eng.close()
    await asyncio.wait_for(reader, 1)
    assert stream.stats.cancelled and eng.in_flight == 0


async def test_a_wrong_path_is_an_engine_error_with_the_status_and_message(server: LlamaServer) -> None:
    eng = OpenAIChatEngine(server.base_url + "/nope", "x")
    await eng.start()
    try:
        with pytest.raises(EngineError, match=r"HTTP 404 Not Found .*/nope/chat/completions: Not Found"):
            await eng.stream(HELLO).text()
        assert eng.in_flight == 0
    finally:
        await eng.close()


async def test_a_rejected_request_quotes_the_servers_message_truncated(engine: OpenAIChatEngine) -> None:
    with pytest.raises(EngineError, match=r"HTTP 500 .*validation error") as caught:
        await engine.stream([{"role": "wizard", "content": "hi"}]).text()
    assert len(str(caught.value)) < 600  # the server's message runs to ~2 kB
    assert (await engine.stream(HELLO, max_tokens=8).text()).strip()


# -- failures a real llama server cannot be made to show ---------------------------------


async def test_an_unreachable_server_is_an_engine_error_at_once() -> None:
    eng = OpenAIChatEngine(f"http://127.0.0.1:{free_port()}/v1", "x")
    await eng.start()
    try:
        started = time.perf_counter()
        with pytest.raises(EngineError, match="cannot reach the LLM server"):
            await eng.stream(HELLO).text()
        assert time.perf_counter() - started < 2 and eng.in_flight == 0
    finally:
        await eng.close()


@pytest_asyncio.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes, float], Awaitable[tuple[str, list[bytes]]]]]:
    """A loopback HTTP server that answers each request with the given raw bytes.

    After answering it keeps the connection open for ``hold_s`` (or until the test ends).
    """
    servers: list[asyncio.Server] = []
    handlers: list[asyncio.Task[None]] = []
    requests: list[bytes] = []
    ending = asyncio.Event()

    async def serve(response: bytes, hold_s: float) -> tuple[str, list[bytes]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.append(asyncio.current_task())  # type: ignore[arg-type]
            try:
                requests.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(response)
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ending.wait(), hold_s)
            except ConnectionError:
                pass  # the client hung up first
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", requests

    yield serve
    ending.set()
    await asyncio.gather(*handlers, return_exceptions=True)
    for server in servers:
        server.close()
        await server.wait_closed()


def sse_response(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + body


CHUNK = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]}\n\n'


@pytest.mark.parametrize(
    ("body", "hold_s", "error"),
    [
        (CHUNK + b"data: {not json}\n\n", 5, "malformed stream: '{not json}' is not JSON"),
        (CHUNK + b'data: {"choices": "none"}\n\n', 5, "malformed stream: .* no choices"),
        (CHUNK + b'data: {"error": {"message": "out of memory"}}\n\n', 5, "error mid-reply: out of memory"),
        (CHUNK + b'error: {"code": 500, "message": "slot failed"}\n\n', 5, "error mid-reply: slot failed"),
        (CHUNK, 0, r"closed the stream mid-reply \(no \[DONE\]\)"),
        (CHUNK, 5, "stalled: nothing for 0.3 s"),
        (b": ping\n\n", 5, "sent no text within 0.6 s"),
    ],
)
async def test_a_broken_stream_is_an_engine_error_after_the_good_text(
    raw_server: Callable[[bytes, float], Awaitable[tuple[str, list[bytes]]]], body: bytes, hold_s: float, error: str
) -> None:
    url, _ = await raw_server(sse_response(body), hold_s)
    eng = OpenAIChatEngine(url, "x", timeout_s=0.6, chunk_timeout_s=0.3)
    await eng.start()
    try:
        stream = eng.stream(HELLO)
        pieces: list[str] = []
        started = time.perf_counter()
        with pytest.raises(EngineError, match=error):
            async for piece in stream:
                pieces.append(piece)
        assert time.perf_counter() - started < 2 and eng.in_flight == 0
        assert pieces == (["Hi"] if body.startswith(CHUNK) else [])
    finally:
        await eng.close()


async def test_a_wait_for_a_slot_is_bounded_and_a_cancelled_waiter_gives_its_turn_up(
    raw_server: Callable[[bytes, float], Awaitable[tuple[str, list[bytes]]]],
) -> None:
    url, requests = await raw_server(sse_response(CHUNK), 5)  # one piece, then silence
    eng = OpenAIChatEngine(url, "x", max_concurrent=1, timeout_s=0.4, chunk_timeout_s=3)
    await eng.start()
    try:
        holder = eng.stream(HELLO)
        assert await anext(holder) == "Hi" and eng.in_flight == 1
        waiter = asyncio.create_task(eng.stream(HELLO).text())
        await asyncio.sleep(0.1)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        started = time.perf_counter()
        with pytest.raises(EngineError, match=r"all 1 LLM request slots stayed busy for 0\.4 s"):
            await eng.stream(HELLO).text()
        assert 0.35 < time.perf_counter() - started < 1 and len(requests) == 1
        await holder.aclose()
        assert eng.in_flight == 0
        assert await anext(eng.stream(HELLO)) == "Hi"  # the slot came back
    finally:
        await eng.close()


async def test_past_max_waiting_a_request_is_refused_at_once_and_the_waiters_keep_their_turn(
    raw_server: Callable[[bytes, float], Awaitable[tuple[str, list[bytes]]]],
) -> None:
    url, _ = await raw_server(sse_response(CHUNK), 5)  # one piece, then silence
    eng = OpenAIChatEngine(url, "x", max_concurrent=1, max_waiting=2, timeout_s=3, chunk_timeout_s=3)
    await eng.start()
    try:
        holder = eng.stream(HELLO)
        assert await anext(holder) == "Hi"
        waiters = [asyncio.create_task(anext(eng.stream(HELLO))) for _ in range(2)]
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        with pytest.raises(EngineError, match=r"LLM queue is full \(2 requests waiting for 1 slots\)"):
            await eng.stream(HELLO).text()
        assert time.perf_counter() - started < 0.1 and not any(w.done() for w in waiters)
        await holder.aclose()
        assert await waiters[0] == "Hi"  # the first waiter got the slot back
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        await eng.close()


async def test_a_reply_that_is_not_an_event_stream_is_an_engine_error(
    raw_server: Callable[[bytes, float], Awaitable[tuple[str, list[bytes]]]],
) -> None:
    body = b'{"choices": []}'
    url, _ = await raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body), 0
    )
    eng = OpenAIChatEngine(url, "x")
    await eng.start()
    try:
        with pytest.raises(EngineError, match="expected text/event-stream, got 'application/json'"):
            await eng.stream(HELLO).text()
    finally:
        await eng.close()


async def test_the_key_comes_from_the_named_variable_and_goes_only_in_the_header(
    raw_server: Callable[[bytes, float], Awaitable[tuple[str, list[bytes]]]],
) -> None:
    url, requests = await raw_server(sse_response(CHUNK + b"data: [DONE]\n\n"), 0)
    eng = OpenAIChatEngine.from_env(url, "gpt-x", "VOXLINE_TEST_KEY", env={"VOXLINE_TEST_KEY": "sk-secret-1"})
    assert "sk-secret" not in repr(eng)
    await eng.start()
    try:
        assert await eng.stream(HELLO).text() == "Hi"
    finally:
        await eng.close()
    head = requests[0].decode().lower()
    assert head.startswith("post /v1/chat/completions ") and "authorization: bearer sk-secret-1" in head
    assert OpenAIChatEngine.from_env(url, "m", "VOXLINE_TEST_KEY", env={})._api_key is None


async def test_an_engine_refuses_work_before_start_and_after_close_and_closes_twice() -> None:
    eng = OpenAIChatEngine("http://127.0.0.1:9/v1", "x")
    with pytest.raises(EngineError, match="not started"):
        eng.stream(HELLO)
    await eng.start()
    await eng.start()
    await eng.close()
    await eng.close()
    with pytest.raises(EngineError, match="closed"):
        eng.stream(HELLO)
    with pytest.raises(EngineError, match="closed"):
        await eng.start()


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="http://"):
        OpenAIChatEngine("127.0.0.1:8080", "x")
    with pytest.raises(ConfigError, match="max_concurrent"):
        OpenAIChatEngine("http://127.0.0.1:8080/v1", "x", max_concurrent=0)
    with pytest.raises(ConfigError, match="timeouts"):
        OpenAIChatEngine("http://127.0.0.1:8080/v1", "x", chunk_timeout_s=0)


# -- the sans-I/O parts -----------------------------------------------------------------


def test_events_split_anywhere_across_reads_decode_the_same() -> None:
    stream = (
        ": ping\r\n\r\nevent: note\r\ndata: a\r\ndata: b\r\n\r\n"
        'data: {"x": "h\u00e9llo \u2603"}\r\rdata: [DONE]\n\n'
    ).encode()
    expected = [SseEvent("note", "a\nb"), SseEvent("message", '{"x": "h\u00e9llo \u2603"}'), SseEvent("message", "[DONE]")]
    whole = SseDecoder().feed(stream)
    assert whole == expected
    for size in (1, 2, 3, 7):
        decoder = SseDecoder()
        events = [e for i in range(0, len(stream), size) for e in decoder.feed(stream[i : i + size])]
        assert events == expected


def test_an_oversized_or_non_utf8_event_is_refused() -> None:
    with pytest.raises(EngineError, match="over 64 bytes"):
        SseDecoder(max_event_bytes=64).feed(b"data: " + b"x" * 100)
    with pytest.raises(EngineError, match="not UTF-8"):
        SseDecoder().feed(b"data: \xff\n\n")


def test_chunks_give_their_text_finish_and_usage() -> None:
    assert parse_chunk('{"choices": [{"delta": {"role": "assistant"}}]}').text == ""
    done = parse_chunk('{"choices": [{"delta": {}, "finish_reason": "stop"}]}')
    assert done.text == "" and done.finish_reason == "stop"
    assert parse_chunk('{"choices": [], "usage": {"completion_tokens": 7}}').completion_tokens == 7
    with pytest.raises(EngineError, match="error mid-reply: boom"):
        parse_chunk('{"error": "boom"}')
    with pytest.raises(EngineError, match="content is int"):
        parse_chunk('{"choices": [{"delta": {"content": 3}}]}')


async def test_the_agent_answers_a_spoken_question_through_the_remote_server(server: LlamaServer, caption_engines) -> None:  # type: ignore[no-untyped-def]
    """Config ``llm.backend = remote``: a whole spoken turn, the reply generated by the server."""
    import numpy as np

    from tests.speech_fixtures import silence, speech
    from voxline.clients.agent_runner import PacedAgentLoop, TurnTakingUser
    from voxline.config import load_config
    from voxline.models.tts import PiperEngine
    from voxline.pipeline.recipes.agent import AgentEngines, build_agent_session, load_chat_engine

    config = load_config(env={}, overrides={"llm": {"backend": "remote", "base_url": server.base_url}, "agent": {"max_reply_tokens": 24}})
    llm = load_chat_engine(config)
    assert isinstance(llm, OpenAIChatEngine)
    tts = PiperEngine()
    await llm.start()
    await tts.start()
    try:
        engines = AgentEngines(captions=caption_engines, llm=llm, tts=tts, config=config)
        session = build_agent_session(engines)
        user = TurnTakingUser([np.concatenate([silence(0.4), speech("How many legs does a spider have?")])])
        loop = PacedAgentLoop(session, user)
        await session.graph.start()
        try:
            await loop.run(lambda _: user.done, max_s=40)
        finally:
            await session.graph.cancel()
    finally:
        await tts.close()
        await llm.close()
    turns = [e for e in loop.events if e["type"] == "user_turn"]
    done = [e for e in loop.events if e["type"] == "agent_done"]
    assert turns and "spider" in turns[0]["text"].lower()
    assert done and done[0]["text"] and np.abs(loop.reply_audio()).max() > 0.05
