"""/v1/captions end to end: real models, a real server, real WebSocket clients on loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
import soxr
import websockets
from conftest import get, running_server
from speech_fixtures import COFFEE, FOX, TRAIN, normalize, silence, speech, word_errors

from voxline.clients.caption_client import pcm16

CHUNK_S = 0.1


def stream_bytes(audio: np.ndarray, rate: int, encoding: str = "pcm_s16le") -> list[bytes]:
    step = int(rate * CHUNK_S)
    chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
    if encoding == "f32le":
        return [c.astype("<f4").tobytes() for c in chunks]
    return [pcm16(c) for c in chunks]


async def caption(url: str, audio: np.ndarray, rate: int = 16000, *, pace_s: float = 0.0, end: bool = True, **config: Any) -> tuple[list[dict[str, Any]], int | None]:
    """Stream ``audio``; return every event and the close code."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(url + "/v1/captions") as ws:
        await ws.send(json.dumps({"type": "config", "sample_rate": rate, "encoding": "pcm_s16le", "language": "en", **config}))

        async def send() -> None:
            try:
                for chunk in stream_bytes(audio, rate, config.get("encoding", "pcm_s16le")):
                    await ws.send(chunk)
                    await asyncio.sleep(pace_s)
                if end:
                    await ws.send(json.dumps({"type": "end"}))
                else:
                    await ws.close()
            except websockets.ConnectionClosed:
                pass  # the server ended the session (an error event says why)

        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                events.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass
        await sender
    return events, ws.close_code


def final_text(events: list[dict[str, Any]]) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "final")


async def test_a_client_gets_the_spoken_words_as_partials_and_finals_then_a_normal_close(server_url: str) -> None:
    audio = np.concatenate([silence(0.5), speech(FOX), silence(1.0), speech(COFFEE), silence(0.5)])
    events, code = await caption(server_url, audio, pace_s=0.02)
    assert code == 1000
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 2
    assert word_errors(FOX + " " + COFFEE, final_text(events)) <= 1
    assert any(e["type"] == "partial" for e in events)
    assert finals[0]["words"] and finals[0]["words"][0]["start"] < finals[0]["words"][-1]["end"] <= 10.0


async def test_the_last_words_survive_a_stream_that_ends_mid_speech(server_url: str) -> None:
    audio = speech(FOX)
    audio = audio[: int(np.flatnonzero(np.abs(audio) > 0.01)[-1]) + 1]  # no trailing silence at all
    events, code = await caption(server_url, audio)
    assert code == 1000
    assert normalize(final_text(events))[-2:] == ["lazy", "dog"]


async def test_audio_at_44100_hz_is_resampled_and_recognised(server_url: str) -> None:
    audio = soxr.resample(np.concatenate([speech(FOX), silence(0.5)]), 16000, 44100).astype(np.float32)
    events, code = await caption(server_url, audio, rate=44100)
    assert code == 1000 and word_errors(FOX, final_text(events)) <= 1


async def test_committed_words_of_partials_never_change_in_later_events(server_url: str) -> None:
    audio = np.concatenate([speech(COFFEE), speech(TRAIN), silence(0.5)])
    events, _ = await caption(server_url, audio, pace_s=0.05)
    by_utterance: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if e["type"] in ("partial", "final"):
            by_utterance.setdefault(e["utterance"], []).append(e)
    checked = 0
    for seq in by_utterance.values():
        for i, earlier in enumerate(seq):
            committed = [w["word"] for w in earlier["words"][: earlier["committed"]]]
            for later in seq[i + 1 :]:
                assert [w["word"] for w in later["words"][: len(committed)]] == committed
                checked += 1
    assert checked > 0


async def test_srt_subtitles_come_after_the_last_final_when_asked_for(server_url: str) -> None:
    events, code = await caption(server_url, np.concatenate([speech(FOX), silence(0.5)]), subtitles="srt")
    assert code == 1000
    assert events[-1]["type"] == "subtitles" and events[-1]["text"].startswith("1\n00:00:0")
    assert "fox" in events[-1]["text"].lower()


BAD_INPUTS = {
    "audio before config": ([b"\x00\x01" * 100], "config_required", 4001),
    "unknown encoding": ([json.dumps({"type": "config", "encoding": "opus"})], "bad_config", 4002),
    "rate out of range": ([json.dumps({"type": "config", "sample_rate": 200000})], "bad_config", 4002),
    "odd byte count": ([json.dumps({"type": "config"}), b"\x00\x01\x02"], "bad_audio", 4003),
    "oversized message": ([json.dumps({"type": "config"}), b"\x00" * 100_000], "message_too_big", 4009),
    "text where audio belongs": ([json.dumps({"type": "config"}), "hello there"], "unexpected_message", 4004),
}


async def bad_client(url: str, messages: list[bytes | str]) -> tuple[dict[str, Any], int | None]:
    async with websockets.connect(url + "/v1/captions") as ws:
        for message in messages:
            await ws.send(message)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply["type"] == "session":  # an admitted session's first message names it
            assert reply["id"]
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    return reply, ws.close_code


async def abrupt_client(url: str) -> None:
    ws = await websockets.connect(url + "/v1/captions")
    await ws.send(json.dumps({"type": "config"}))
    for chunk in stream_bytes(speech(COFFEE)[:16000], 16000):
        await ws.send(chunk)
    ws.transport.abort()  # no close frame: the peer just vanishes


async def test_bad_clients_get_their_own_error_while_a_healthy_session_carries_on(server_url: str) -> None:
    healthy_audio = np.concatenate([speech(FOX), silence(0.8), speech(TRAIN), silence(0.5)])
    healthy = asyncio.create_task(caption(server_url, healthy_audio, pace_s=0.03))
    await asyncio.sleep(0.3)
    for name, (messages, code, close_code) in BAD_INPUTS.items():
        reply, got_close = await bad_client(server_url, messages)
        assert (reply["type"], reply["code"], got_close) == ("error", code, close_code), name
        assert reply["message"], name
    await abrupt_client(server_url)
    events, close_code = await healthy
    assert close_code == 1000
    assert word_errors(FOX + " " + TRAIN, final_text(events)) <= 1
    health = get(server_url, "/healthz").json()
    assert health["status"] == "ok"
    # where the node's memory went: the recogniser's model took tens of MB as it loaded
    assert health["resident_mb"] > health["engine_load_mb"]["asr"] > 10


async def test_an_error_after_speech_still_delivers_the_final_for_the_accepted_words(server_url: str) -> None:
    async with websockets.connect(server_url + "/v1/captions") as ws:
        await ws.send(json.dumps({"type": "config"}))
        for chunk in stream_bytes(np.concatenate([speech(FOX), silence(0.1)]), 16000):
            await ws.send(chunk)
        await ws.send(b"\x00")  # odd byte count
        events = []
        with pytest.raises(websockets.ConnectionClosedError):
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert events[-1]["code"] == "bad_audio" and ws.close_code == 4003
    assert word_errors(FOX, final_text(events)) <= 1


async def test_past_the_session_limit_a_new_client_is_refused_and_the_running_one_is_not(caption_engines) -> None:  # type: ignore[no-untyped-def]
    with running_server(caption_engines, max_sessions=1) as url:
        first = asyncio.create_task(caption(url, np.concatenate([speech(COFFEE), silence(0.5)]), pace_s=0.02))
        await asyncio.sleep(0.3)
        reply, code = await bad_client(url, [])
        assert (reply["code"], code) == ("server_busy", 1013)
        events, close_code = await first
        assert close_code == 1000 and word_errors(COFFEE, final_text(events)) <= 1


async def test_health_and_prometheus_metrics_show_stage_and_edge_counters(server_url: str) -> None:
    await caption(server_url, np.concatenate([speech(FOX), silence(0.4)]))
    health = get(server_url, "/healthz").json()
    assert health["status"] == "ok" and health["sessions"] == 0
    text = get(server_url, "/metrics").text
    for needle in ('voxline_stage_frames_total{stage="asr"}', 'voxline_edge_frames_total{edge="vad->asr"}', 'voxline_sessions_total{kind="captions",outcome="completed"}', "process_cpu_seconds_total"):
        assert needle in text, needle
    assert "session=" not in text and "session_id" not in text  # no per-session labels


class PoisonedRecognizer:
    """The real engine, except that audio at full scale makes it raise (to crash one session)."""

    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        self.engine = engine

    async def transcribe(self, audio: np.ndarray, **kwargs: Any) -> Any:
        if float(np.max(np.abs(audio))) >= 0.999:
            raise RuntimeError("poisoned audio")
        return await self.engine.transcribe(audio, **kwargs)


async def test_a_stage_that_fails_ends_only_its_session_with_internal_error(caption_engines) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    engines = dataclasses.replace(caption_engines, recognizer=PoisonedRecognizer(caption_engines.recognizer))
    with running_server(engines) as url:
        healthy = asyncio.create_task(caption(url, np.concatenate([speech(FOX), silence(0.6)]), pace_s=0.02))
        poison = np.sign(speech(COFFEE)).astype(np.float32)  # full-scale: the VAD still hears speech
        events, code = await caption(url, np.concatenate([poison, silence(0.6)]), pace_s=0.01)
        assert code == 4500 and events[-1]["code"] == "internal_error"
        ok_events, ok_code = await healthy
        assert ok_code == 1000 and word_errors(FOX, final_text(ok_events)) <= 1
        health = get(url, "/healthz").json()
        assert (health["sessions"], health["graphs"]) == (0, 0)  # nothing of either session is left


async def test_silence_and_noise_produce_no_captions_at_all(server_url: str) -> None:
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(16000 * 3) * 0.05).astype(np.float32)
    events, code = await caption(server_url, np.concatenate([silence(2.0), noise, silence(1.0)]))
    assert code == 1000
    assert [e for e in events if e["type"] in ("partial", "final") and e["text"].strip()] == []


async def test_the_first_word_survives_speech_that_starts_with_the_stream(server_url: str) -> None:
    audio = speech(COFFEE)
    audio = audio[int(np.flatnonzero(np.abs(audio) > 0.01)[0]) :]  # not one sample of lead-in
    events, _ = await caption(server_url, np.concatenate([audio, silence(0.5)]))
    assert normalize(final_text(events))[:3] == ["i", "would", "like"]


async def test_a_client_that_goes_quiet_is_told_idle_timeout(server_url: str) -> None:
    async with websockets.connect(server_url + "/v1/captions") as ws:
        await ws.send(json.dumps({"type": "config"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "session"
        reply = json.loads(await asyncio.wait_for(ws.recv(), 15))  # the test server waits 5 s
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert reply["code"] == "idle_timeout" and ws.close_code == 4008
