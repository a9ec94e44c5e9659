"""Conversation history: only what was heard, trimmed to the token budget, prompt kept."""

from __future__ import annotations

import asyncio

import pytest

from voxline.pipeline.agent.history import Conversation, estimate_tokens
from voxline.pipeline.agent.turn_latency import TurnTimeline
from voxline.pipeline.event_channel import EventChannel


def test_history_keeps_system_prompt_and_order() -> None:
    conversation = Conversation("Be brief.")
    conversation.add_user("Hi.")
    conversation.add_agent("Hello! How can I help?")
    conversation.add_user("What time is it?")
    assert conversation.messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What time is it?"},
    ]


def test_unheard_reply_leaves_nothing_and_user_turns_merge() -> None:
    conversation = Conversation("Be brief.")
    conversation.add_user("Tell me about")
    conversation.add_agent("   ")
    conversation.add_user("the moon.")
    assert conversation.turns == [{"role": "user", "content": "Tell me about the moon."}]


def test_trimmed_to_budget_dropping_oldest_whole_exchanges() -> None:
    conversation = Conversation("System.", budget_tokens=60)
    for i in range(20):
        conversation.add_user(f"Question number {i} about something long enough.")
        conversation.add_agent(f"Answer number {i}, also with some words in it.")
    assert conversation.tokens() <= 60
    turns = conversation.turns
    assert turns[0]["role"] == "user"
    assert turns[-1]["content"].startswith("Answer number 19")
    assert conversation.messages()[0] == {"role": "system", "content": "System."}


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


async def test_event_channel_drops_oldest_and_never_blocks() -> None:
    channel = EventChannel(maxsize=3)
    for i in range(5):
        channel.publish({"i": i})
    assert channel.dropped == 2
    channel.close()
    assert [e["i"] async for e in channel] == [2, 3, 4]
    assert await channel.get() is None


async def test_event_channel_reader_wakes_on_publish() -> None:
    channel = EventChannel()
    reader = asyncio.create_task(channel.get())
    await asyncio.sleep(0)
    channel.publish({"type": "x"})
    assert await asyncio.wait_for(reader, 1) == {"type": "x"}


def test_turn_timeline_waterfall_and_breakdown() -> None:
    timeline = TurnTimeline(1)
    for name, at in [("speech_end", 10.0), ("asr_final", 10.2), ("endpoint", 10.2), ("llm_first_token", 10.3),
                     ("tts_first_audio", 10.4), ("audio_out", 10.45)]:
        timeline.mark(name, at)
    timeline.mark("audio_out", 99.0)  # the first mark counts
    assert timeline.complete
    assert timeline.v2v_ms() == pytest.approx(450)
    assert timeline.waterfall_ms()["llm_first_token"] == pytest.approx(300)
    breakdown = timeline.breakdown_ms()
    assert sum(breakdown.values()) == pytest.approx(450)
    assert breakdown["tts_first_audio"] == pytest.approx(100)
    with pytest.raises(ValueError):
        timeline.mark("nonsense", 1.0)
