"""The official ``openai`` SDK's realtime client against a real ``voxline serve`` on loopback.

Every event the server sends is checked against the SDK's own pydantic models (GA or
beta); the words are checked by ear: the reply's audio deltas go through the
captioning ASR.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import websockets

from tests.conftest import running_server
from tests.speech_fixtures import normalize, silence, speech
from voxline.models.asr import WhisperEngine
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.resampler import StreamResampler
from voxline.testing.realtime_talk import RATE_HZ, RealtimeTalk, decode_pcm

pytestmark = pytest.mark.timeout(120)
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def realtime_server(caption_engines: CaptionEngines, agent_engines: AgentEngines) -> Iterator[str]:
    """A voxline server with the agent (its http:// URL)."""
    with running_server(caption_engines, agent_engines, max_calls=3) as ws_url:
        yield ws_url.replace("ws://", "http://")


async def heard(recognizer: WhisperEngine, deltas: list[dict[str, Any]]) -> str:
    """What the captioning ASR hears in a response's audio deltas."""
    audio = np.concatenate([decode_pcm(d["delta"]) for d in deltas])
    audio16 = StreamResampler(RATE_HZ, 16000).process(audio)[: 30 * 16000]
    hypothesis = await recognizer.transcribe(np.ascontiguousarray(audio16), final=True, deadline=time.monotonic())
    return " ".join(w.text for w in hypothesis.words)


def audio_ms(deltas: list[dict[str, Any]]) -> float:
    return sum(len(base64.b64decode(d["delta"])) / 2 for d in deltas) * 1000 / RATE_HZ


async def test_a_spoken_turn_is_transcribed_and_answered_in_speech(
    realtime_server: str, caption_engines: CaptionEngines
) -> None:
    async with RealtimeTalk.connect(realtime_server) as talk:
        created = await talk.next("session.created")
        assert created["session"]["type"] == "realtime"
        await talk.send({"type": "session.update", "session": {
            "type": "realtime", "instructions": "You are a geography tutor. Answer in one short sentence.",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
                      "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}},
        }})
        updated = await talk.next("session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
        talk.say(speech(QUESTION))
        started = await talk.next("input_audio_buffer.speech_started")
        stopped = await talk.next("input_audio_buffer.speech_stopped")
        assert stopped["item_id"] == started["item_id"] and stopped["audio_end_ms"] > started["audio_start_ms"]
        completed = await talk.next("conversation.item.input_audio_transcription.completed")
        assert normalize(completed["transcript"]) == normalize(QUESTION)
        done = await talk.next("response.done")
        assert done["response"]["status"] == "completed"
        deltas = talk.of("response.output_audio.delta")
        assert audio_ms(deltas) > 500
        transcript = done["response"]["output"][0]["content"][0]["transcript"]
        assert transcript and "".join(d["delta"] for d in talk.of("response.output_audio_transcript.delta")) == transcript
        said = normalize(await heard(caption_engines.recognizer, deltas))
        assert "paris" in said, said
        overlap = set(said) & set(normalize(transcript))
        assert len(overlap) >= len(set(normalize(transcript))) // 2, (said, transcript)
        first_audio = deltas[0]["_at"] - stopped["_at"]
        assert first_audio < 3.0
        assert not talk.violations, talk.violations
    async with __import__("httpx").AsyncClient(timeout=5) as http:
        metrics = (await http.get(f"{realtime_server}/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith('voxline_turn_latency_seconds_count{span="v2v",transport="realtime"}'))
    assert float(line.split()[-1]) >= 1


async def test_response_cancel_stops_the_audio_at_once(realtime_server: str) -> None:
    async with RealtimeTalk.connect(realtime_server) as talk:
        await talk.next("session.created")
        await talk.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Tell me a long story about a dragon and a knight."}],
        }})
        await talk.send({"type": "response.create", "event_id": "ev_make"})
        await talk.next("response.output_audio.delta")
        await asyncio.sleep(0.3)
        cancel_at = time.monotonic()
        await talk.send({"type": "response.cancel", "event_id": "ev_cancel"})
        done = await talk.next("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        await asyncio.sleep(0.5)
        late = [d for d in talk.of("response.output_audio.delta") if d["_at"] > cancel_at]
        assert audio_ms(late) <= 100, f"{audio_ms(late)} ms of audio after the cancel"
        assert not [d for d in talk.of("response.output_audio.delta") if d["_at"] > done["_at"]]
        heard_words = done["response"]["output"][0]["content"][0]["transcript"]
        item_id = done["response"]["output"][0]["id"]
        await talk.send({"type": "conversation.item.retrieve", "item_id": item_id})
        kept = await talk.next("conversation.item.retrieved")
        assert kept["item"]["content"][0]["transcript"] == heard_words
        # the session goes on: a new response is taken
        await talk.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        assert (await talk.next("response.done"))["response"]["status"] == "completed"
        assert not talk.violations, talk.violations


async def test_truncate_after_a_client_side_interruption_keeps_only_what_was_played(realtime_server: str) -> None:
    async with RealtimeTalk.connect(realtime_server) as talk:
        await talk.next("session.created")
        await talk.ask("Describe the city of Rome in three sentences.")
        first = await talk.next("response.output_audio.delta")
        await asyncio.sleep(1.2)
        # The client's own VAD heard its user: it stops playback at 600 ms and says so.
        await talk.send({"type": "response.cancel"})
        await talk.send({"type": "conversation.item.truncate", "item_id": first["item_id"], "content_index": 0,
                         "audio_end_ms": 600, "event_id": "ev_cut"})
        truncated = await talk.next("conversation.item.truncated")
        assert truncated["item_id"] == first["item_id"] and truncated["audio_end_ms"] == 600
        done = next(e for e in talk.events if e["type"] == "response.done")
        full = done["response"]["output"][0]["content"][0]["transcript"]
        await talk.send({"type": "conversation.item.retrieve", "item_id": first["item_id"]})
        kept = (await talk.next("conversation.item.retrieved"))["item"]["content"][0]["transcript"]
        assert len(kept.split()) < max(2, len(full.split())), (kept, full)
        assert full.startswith(kept)
        # 600 ms is about two words of Piper's speech, never the whole reply
        assert len(kept.split()) <= 3
        await talk.send({"type": "conversation.item.truncate", "item_id": first["item_id"], "content_index": 0,
                         "audio_end_ms": 600000, "event_id": "ev_too_far"})
        error = await talk.next("error")
        assert error["error"]["event_id"] == "ev_too_far"
        assert not talk.violations, talk.violations


async def test_talking_over_the_agent_interrupts_it_and_the_item_holds_what_was_heard(realtime_server: str) -> None:
    async with RealtimeTalk.connect(realtime_server) as talk:
        await talk.next("session.created")
        await talk.ask("Tell me a long story about a dragon and a knight.")
        await talk.next("response.output_audio.delta")
        await asyncio.sleep(1.0)
        talk.say(speech("Stop, tell me about the weather in Paris instead."))
        done = await talk.next("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        truncated = await talk.next("conversation.item.truncated")
        kept = done["response"]["output"][0]["content"][0]["transcript"]
        sent_ms = audio_ms([d for d in talk.of("response.output_audio.delta") if d["_at"] <= done["_at"]])
        assert abs(truncated["audio_end_ms"] - sent_ms) < 100
        assert kept, "words were heard before the interruption"
        await talk.next("conversation.item.input_audio_transcription.completed")
        assert (await talk.next("response.done"))["response"]["status"] == "completed"
        assert not talk.violations, talk.violations


async def test_a_transcription_session_transcribes_every_utterance_and_never_answers(realtime_server: str) -> None:
    sentences = ["The quick brown fox jumps over the lazy dog.", "We will meet at the train station at half past nine."]
    async with RealtimeTalk.connect(realtime_server, intent="transcription") as talk:
        created = await talk.next("session.created")
        assert created["session"]["type"] == "transcription"
        await talk.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1", "language": "en"},
        }}}})
        await talk.next("session.updated")
        talk.say(np.concatenate([speech(sentences[0]), silence(1.2), speech(sentences[1])]))
        completions = [await talk.next("conversation.item.input_audio_transcription.completed") for _ in sentences]
        for completion, sentence in zip(completions, sentences, strict=True):
            assert normalize(completion["transcript"]) == normalize(sentence)
            deltas = [e["delta"] for e in talk.of("conversation.item.input_audio_transcription.delta")
                      if e["item_id"] == completion["item_id"]]
            assert "".join(deltas) == completion["transcript"]
        assert len({c["item_id"] for c in completions}) == 2
        await talk.send({"type": "response.create", "event_id": "ev_answer"})
        error = await talk.next("error")
        assert error["error"]["event_id"] == "ev_answer"
        await asyncio.sleep(1.0)
        assert not [e for e in talk.events if e["type"].startswith("response.")]
        assert not talk.violations, talk.violations


async def test_a_beta_client_gets_the_beta_names_and_shapes(realtime_server: str) -> None:
    async with RealtimeTalk.connect(realtime_server, beta=True) as talk:
        created = await talk.next("session.created")
        assert "input_audio_format" in created["session"] and created["session"]["input_audio_format"] == "pcm16"
        await talk.send({"type": "session.update", "session": {
            "modalities": ["text", "audio"], "voice": "alloy", "input_audio_format": "pcm16",
            "output_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
        }})
        updated = await talk.next("session.updated")
        assert updated["session"]["turn_detection"]["type"] == "server_vad"
        talk.say(speech(QUESTION))
        created_item = await talk.next("conversation.item.created")
        assert created_item["item"]["role"] == "user"
        await talk.next("response.audio.delta")
        await talk.next("response.audio_transcript.delta")
        done = await talk.next("response.done")
        assert done["response"]["status"] == "completed"
        assert done["response"]["output"][0]["content"][0]["type"] == "audio"
        assert not talk.of("response.output_audio.delta") and not talk.of("conversation.item.added")
        assert not talk.violations, talk.violations
    async with RealtimeTalk.connect(realtime_server, beta=True, intent="transcription") as talk:
        await talk.next("session.created")
        await talk.send({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "gpt-4o-transcribe"},
            "turn_detection": {"type": "server_vad"},
        }})
        assert (await talk.next("transcription_session.updated"))["session"]["input_audio_format"] == "pcm16"
        talk.say(speech("Open the window, it is getting warm in here."))
        completed = await talk.next("conversation.item.input_audio_transcription.completed")
        assert "window" in normalize(completed["transcript"])
        assert not talk.violations, talk.violations


async def test_text_in_and_text_out(realtime_server: str) -> None:
    async with RealtimeTalk.connect(realtime_server, mic=False) as talk:
        await talk.next("session.created")
        await talk.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
        await talk.next("session.updated")
        await talk.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is the capital of France?"}],
        }})
        added = await talk.next("conversation.item.added")
        assert added["item"]["content"][0]["text"] == "What is the capital of France?"
        await talk.send({"type": "response.create"})
        done = await talk.next("response.done")
        text = done["response"]["output"][0]["content"][0]["text"]
        assert "".join(e["delta"] for e in talk.of("response.output_text.delta")) == text
        assert "paris" in normalize(text)
        assert not talk.of("response.output_audio.delta")
        await talk.send({"type": "conversation.item.delete", "item_id": added["item"]["id"]})
        assert (await talk.next("conversation.item.deleted"))["item_id"] == added["item"]["id"]
        assert not talk.violations, talk.violations


async def test_push_to_talk_commits_and_answers_on_request(realtime_server: str) -> None:
    async with RealtimeTalk.connect(realtime_server) as talk:
        await talk.next("session.created")
        await talk.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        assert (await talk.next("session.updated"))["session"]["audio"]["input"]["turn_detection"] is None
        said_by = talk.say(speech(QUESTION))
        await asyncio.sleep(max(0.0, said_by - time.monotonic()) + 0.1)
        talk.streaming = False  # the button is released
        await talk.send({"type": "input_audio_buffer.commit"})
        committed = await talk.next("input_audio_buffer.committed")
        completed = await talk.next("conversation.item.input_audio_transcription.completed")
        assert completed["item_id"] == committed["item_id"]
        assert normalize(completed["transcript"]) == normalize(QUESTION)
        assert not talk.of("input_audio_buffer.speech_started") and not talk.of("response.created")
        await talk.send({"type": "response.create"})
        done = await talk.next("response.done")
        assert done["response"]["status"] == "completed" and talk.of("response.output_audio.delta")
        assert not talk.violations, talk.violations


BAD_EVENTS: list[tuple[str, Any, str]] = [
    ("malformed JSON", "{not json", "invalid_json"),
    ("unknown event", {"type": "session.destroy", "event_id": "ev_1"}, "unknown_event"),
    ("bad base64", {"type": "input_audio_buffer.append", "audio": "%%%not-base64", "event_id": "ev_2"}, "invalid_audio"),
    ("odd PCM bytes", {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0\0\0").decode(),
                       "event_id": "ev_3"}, "invalid_audio"),
    ("wrong rate", {"type": "session.update", "event_id": "ev_4",
                    "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}},
     "invalid_value"),
    ("audio over the size limit", {"type": "input_audio_buffer.append", "event_id": "ev_5",
                                   "audio": base64.b64encode(bytes(2 * 24000 * 16)).decode()}, "invalid_audio"),
    ("unknown item", {"type": "conversation.item.delete", "item_id": "item_nope", "event_id": "ev_6"}, "item_not_found"),
    ("cancel with nothing running", {"type": "response.cancel", "event_id": "ev_7"}, "response_cancel_not_active"),
    ("a function call item", {"type": "conversation.item.create", "event_id": "ev_8",
                              "item": {"type": "function_call", "name": "f"}}, "unsupported_item"),
    ("binary frame", b"\x00\x01", "invalid_event"),
    ("modalities of the wrong type", {"type": "response.create", "event_id": "ev_9",
                                      "response": {"output_modalities": [5]}}, "invalid_value"),
    ("a response outside the conversation", {"type": "response.create", "event_id": "ev_10",
                                             "response": {"conversation": "none"}}, "unsupported_value"),
    ("clearing audio when none plays", {"type": "output_audio_buffer.clear", "event_id": "ev_11"}, "invalid_request"),
]


async def test_each_bad_input_gets_an_error_and_a_concurrent_session_carries_on(realtime_server: str) -> None:
    import json

    async def healthy_turn() -> str:
        async with RealtimeTalk.connect(realtime_server, mic=False) as talk:
            await talk.next("session.created")
            await talk.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
            await talk.ask("What is the capital of France?")
            done = await talk.next("response.done", within_s=60)
            assert not talk.violations, talk.violations
            return str(done["response"]["output"][0]["content"][0]["text"])

    healthy = asyncio.create_task(healthy_turn())
    url = realtime_server.replace("http://", "ws://") + "/v1/realtime?model=voxline"
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer sk-any"}, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        for name, event, code in BAD_EVENTS:
            await ws.send(event if isinstance(event, str | bytes) else json.dumps(event))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["type"] == "error", name
            assert reply["error"]["code"] == code, (name, reply)
            sent_id = event.get("event_id") if isinstance(event, dict) else None
            assert reply["error"]["event_id"] == sent_id, name
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.updated", "the session carried on"
    assert "paris" in normalize(await healthy)


async def test_a_wrong_key_is_refused_when_a_secret_is_set(
    caption_engines: CaptionEngines, agent_engines: AgentEngines
) -> None:
    import json

    from voxline.stream.auth import mint_token

    secret = "s3cret-of-at-least-thirty-two-bytes!"
    with running_server(caption_engines, agent_engines, max_calls=1, secret=secret) as ws_url:
        url = ws_url + "/v1/realtime?model=voxline"
        for key, code, close in (("wrong", "invalid_token", 4401),
                                 (mint_token(secret, ["watch:*"], 60), "forbidden", 4403)):
            async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
                error = json.loads(await ws.recv())
                assert error["type"] == "error" and error["error"]["code"] == code
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == close
        agent_key = mint_token(secret, ["agent"], 60)
        async with RealtimeTalk.connect(ws_url.replace("ws://", "http://"), key=agent_key, mic=False) as talk:
            assert (await talk.next("session.created"))["session"]["type"] == "realtime"


async def test_g711_in_and_out_a_mulaw_question_gets_an_alaw_answer(
    realtime_server: str, caption_engines: CaptionEngines
) -> None:
    import json

    from voxline.stream.g711 import alaw_decode, ulaw_encode

    question = StreamResampler(16000, 8000).process(speech(QUESTION))
    mulaw = ulaw_encode((np.clip(question, -1, 1) * 32767).astype(np.int16))
    quiet = ulaw_encode(np.zeros(160, np.int16))
    url = realtime_server.replace("http://", "ws://") + "/v1/realtime?model=voxline"
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer sk-any"}, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
            "output": {"format": {"type": "audio/pcma"}},
        }}}))
        updated = json.loads(await ws.recv())
        assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcma"}

        async def microphone() -> None:
            chunks = [mulaw[i : i + 160] for i in range(0, len(mulaw), 160)]
            start = time.monotonic()
            for n in range(10**6):
                chunk = chunks[n] if n < len(chunks) else quiet
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))

        mic = asyncio.create_task(microphone())
        reply = bytearray()
        transcript = ""
        try:
            async with asyncio.timeout(60):
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "conversation.item.input_audio_transcription.completed":
                        transcript = event["transcript"]
                    elif event["type"] == "response.output_audio.delta":
                        reply.extend(base64.b64decode(event["delta"]))
                    elif event["type"] == "response.done":
                        said = event["response"]["output"][0]["content"][0]["transcript"]
                        break
        finally:
            mic.cancel()
    assert normalize(transcript) == normalize(QUESTION)
    audio = alaw_decode(bytes(reply)).astype(np.float32) / 32768.0
    assert len(audio) > 8000 // 2, "half a second or more of 8 kHz A-law speech"
    audio16 = StreamResampler(8000, 16000).process(audio)[: 30 * 16000]
    hypothesis = await caption_engines.recognizer.transcribe(
        np.ascontiguousarray(audio16, np.float32), final=True, deadline=time.monotonic()
    )
    heard_words = set(normalize(" ".join(w.text for w in hypothesis.words)))
    # telephone audio: 8 kHz, 8 bits; the reply's words still come through
    assert len(heard_words & set(normalize(said))) >= len(set(normalize(said))) // 2, (heard_words, said)


def readme_raw_client() -> str:
    """The README's raw-socket client, as printed."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "async def transcribe" in b)


async def test_the_readme_raw_socket_client_transcribes_as_printed(realtime_server: str) -> None:
    from voxline.testing.realtime_talk import pcm24

    block = readme_raw_client()
    port = realtime_server.rsplit(":", 1)[1]
    namespace: dict[str, Any] = {}
    exec(block.replace("127.0.0.1:8000", f"127.0.0.1:{port}"), namespace)  # the README's code, as printed
    transcript = await namespace["transcribe"](pcm24(np.concatenate([speech(QUESTION), silence(1.5)])))
    assert normalize(transcript) == normalize(QUESTION)


async def test_with_create_response_off_a_turn_is_committed_and_waits_for_response_create(realtime_server: str) -> None:
    async with RealtimeTalk.connect(realtime_server) as talk:
        await talk.next("session.created")
        await talk.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "semantic_vad", "eagerness": "high", "create_response": False}}}}})
        assert (await talk.next("session.updated"))["session"]["audio"]["input"]["turn_detection"]["eagerness"] == "high"
        talk.say(speech(QUESTION))
        await talk.next("input_audio_buffer.speech_stopped")
        completed = await talk.next("conversation.item.input_audio_transcription.completed")
        assert normalize(completed["transcript"]) == normalize(QUESTION)
        await asyncio.sleep(1.5)
        assert not talk.of("response.created"), "no answer until asked"
        await talk.send({"type": "response.create"})
        done = await talk.next("response.done")
        assert done["response"]["status"] == "completed" and talk.of("response.output_audio.delta")
        assert not talk.violations, talk.violations
