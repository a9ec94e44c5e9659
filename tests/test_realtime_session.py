"""A transcription session gives each utterance's words to that utterance's item, however the finals fall.

The session is fed the caption graph's events directly (speech start and stop from the
VAD, finals from the recogniser, with their media times); what a client would see is
the ``...transcription.completed`` events it sends.
"""

from __future__ import annotations

from typing import Any

from voxline.stream.realtime.protocol import ServerEvents, SessionSettings
from voxline.stream.realtime.session import RealtimeSession


def transcriber() -> tuple[RealtimeSession, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    return RealtimeSession(SessionSettings(kind="transcription"), ServerEvents(), send, caption_engines=None), sent


def completions(sent: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["item_id"], e["transcript"]) for e in sent
            if e["type"] == "conversation.item.input_audio_transcription.completed"]


def committed(sent: list[dict[str, Any]]) -> list[str]:
    return [e["item_id"] for e in sent if e["type"] == "input_audio_buffer.committed"]


async def speak(session: RealtimeSession, kind: str, **fields: Any) -> None:
    await session._on_input_event({"type": kind, **fields})


def final(text: str, start_s: float, end_s: float) -> dict[str, Any]:
    return {"text": text, "stable": text, "start_s": start_s, "end_s": end_s}


async def test_finals_after_each_stop_complete_their_own_items() -> None:
    session, sent = transcriber()
    await speak(session, "speech_start", at_s=0.0)
    await speak(session, "speech_stop", at_s=1.2)
    await speak(session, "speech_start", at_s=2.0)
    await speak(session, "user_final", **final("Hello there.", 0.1, 1.0))
    await speak(session, "speech_stop", at_s=3.0)
    await speak(session, "user_final", **final("How are you?", 2.1, 2.9))
    items = committed(sent)
    assert completions(sent) == [(items[0], "Hello there."), (items[1], "How are you?")]


async def test_finals_that_come_before_the_stop_stay_with_their_utterance() -> None:
    session, sent = transcriber()
    for start, text in ((0.0, "Hello there."), (2.0, "How are you?")):
        await speak(session, "speech_start", at_s=start)
        await speak(session, "user_final", **final(text, start + 0.1, start + 0.9))
        await speak(session, "speech_stop", at_s=start + 1.0)
    items = committed(sent)
    assert completions(sent) == [(items[0], "Hello there."), (items[1], "How are you?")]
    assert not session._final_pending(), "nothing left waiting: a commit would not stall"


async def test_an_utterance_without_words_completes_empty_and_the_next_keeps_its_words() -> None:
    session, sent = transcriber()
    await speak(session, "speech_start", at_s=0.0)
    await speak(session, "speech_stop", at_s=0.3)  # a cough: the recogniser sends no final
    await speak(session, "speech_start", at_s=1.0)
    await speak(session, "speech_stop", at_s=2.0)
    await speak(session, "user_final", **final("Real words.", 1.1, 1.9))
    items = committed(sent)
    assert completions(sent) == [(items[0], ""), (items[1], "Real words.")]
