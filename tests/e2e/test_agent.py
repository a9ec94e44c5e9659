"""The voice agent end to end with real models, at real-time pace, in-process.

Whisper tiny.en, Silero VAD, SmolLM2 on llama.cpp, Piper and WebRTC's echo canceller,
all from their pip packages; the user's speech is synthesized by Piper. Each test
holds a real conversation and checks what a user would notice: their words in the
transcript, the agent's answer in audio (recognised back by Whisper), the agent
stopping when interrupted and going on after "uh-huh" or a cough, the history holding
only what was heard, no self-interruption through an echoing speaker, no task left.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from tests.e2e.agent_talk import converse
from tests.speech_fixtures import normalize, silence, speech, word_errors
from voxline.clients.agent_runner import PacedAgentLoop, TurnTakingUser
from voxline.clients.echo_device import EchoDevice
from voxline.pipeline.recipes.agent import (
    AgentEngines,
    build_agent_session,
)
from voxline.testing.scripted_users import SpeakOverAgent

pytestmark = pytest.mark.slow

QUESTION = "How many legs does a spider have?"
STORY = "Tell me a long story about a brave knight and a dragon."


def _question(text: str) -> np.ndarray:
    return np.concatenate([silence(0.4), speech(text)])


def _of(loop: PacedAgentLoop, kind: str) -> list[dict[str, Any]]:
    return [e for e in loop.events if e["type"] == kind]


async def _transcribe(engines: AgentEngines, audio: np.ndarray, rate: int) -> str:
    import soxr

    audio_16k = soxr.resample(audio, rate, 16000).astype(np.float32)
    words: list[str] = []
    for start in range(0, len(audio_16k), 16000 * 20):
        chunk = audio_16k[start : start + 16000 * 20]
        result = await engines.captions.recognizer.transcribe(chunk, final=True, deadline=0.0)
        words += [w.text for w in result.words]
    return " ".join(words)


async def test_a_spoken_question_gets_a_spoken_answer(agent_engines: AgentEngines) -> None:
    user = TurnTakingUser([_question(QUESTION)])
    loop, session = await converse(agent_engines, user)

    turn = _of(loop, "user_turn")
    assert len(turn) == 1 and "spider" in turn[0]["text"].lower()
    done = _of(loop, "agent_done")
    assert len(done) == 1 and done[0]["text"]
    latency = _of(loop, "turn_latency")[0]
    assert set(latency["waterfall_ms"]) == {"speech_end", "asr_final", "endpoint", "llm_first_token", "tts_first_audio", "audio_out"}
    assert 0 < latency["v2v_ms"] < 3000
    # The audio says what the agent's text says.
    reply = loop.reply_audio()
    assert np.abs(reply).max() > 0.05
    heard_back = await _transcribe(agent_engines, reply, session.output_rate_hz)
    assert word_errors(done[0]["text"], heard_back) / max(1, len(normalize(done[0]["text"]))) < 0.35
    # The history holds the question and the answer as played.
    messages = session.agent.conversation.messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2]["content"] == done[0]["text"]


async def test_a_real_interruption_stops_the_agent_and_the_history_keeps_only_what_was_heard(
    agent_engines: AgentEngines,
) -> None:
    # 1.5 s in: with no echo path (a headset) AEC3 mutes the mic for the first ~1.1 s of
    # a session's first reply, until the echo-path detector passes it through.
    user = SpeakOverAgent(_question(STORY), [speech("Stop, tell me about the weather instead.")], delay_s=1.5)
    loop, session = await converse(agent_engines, user)

    interrupted = _of(loop, "interrupted")
    assert len(interrupted) == 1 and interrupted[0]["reply"] == user.reply_ids[0]
    heard = interrupted[0]["heard"]
    # The first reply never finished; what was heard is a word-aligned start of it.
    assert not [e for e in _of(loop, "agent_done") if e["reply"] == user.reply_ids[0]]
    spoken = " ".join(e["text"] for e in _of(loop, "agent_text") if e["reply"] == user.reply_ids[0])
    assert spoken.startswith(heard) and len(heard) < len(spoken)
    # The agent's audio stopped within a few frames of the pause.
    onset = user.onsets[0]
    silent_from = next(at for at, frame in zip(loop.played_at, loop.played, strict=True) if at >= onset and not frame.any())
    assert silent_from - onset < 0.5
    history = session.agent.conversation.messages()
    assistant = [m["content"] for m in history if m["role"] == "assistant"]
    assert assistant[0] == heard
    users = [m["content"].lower() for m in history if m["role"] == "user"]
    assert any("weather" in u for u in users)  # the interruption became the next turn


@pytest.mark.parametrize(
    "sound", ["backchannel", "noise"],
)
async def test_a_backchannel_or_a_noise_pauses_then_the_agent_goes_on(agent_engines: AgentEngines, sound: str) -> None:
    if sound == "backchannel":
        clip = speech("Uh-huh.")
    else:  # a cough-like burst of noise
        rng = np.random.default_rng(3)
        n = 5600
        clip = (0.3 * rng.standard_normal(n) * np.exp(-np.linspace(0, 6, n))).astype(np.float32)
    user = SpeakOverAgent(_question(STORY), [clip])
    loop, session = await converse(agent_engines, user)

    reply = user.reply_ids[0]
    of_reply = [e for e in loop.events if e.get("reply") == reply]
    assert not [e for e in of_reply if e["type"] == "interrupted"]
    done = [e for e in of_reply if e["type"] == "agent_done"]
    assert done and done[0]["text"]
    if any(e["type"] == "agent_paused" for e in of_reply):
        assert any(e["type"] == "agent_resumed" for e in of_reply)
    # Nothing was repeated or skipped: what was heard is the whole reply, once.
    spoken = " ".join(e["text"] for e in of_reply if e["type"] == "agent_text")
    assert done[0]["text"] == spoken
    users = [m["content"].lower() for m in session.agent.conversation.messages() if m["role"] == "user"]
    assert len(users) == 1 and "uh" not in users[0].split()


async def test_with_an_echoing_speaker_the_agent_never_interrupts_itself(agent_engines: AgentEngines) -> None:
    questions = ["What is the boiling point of water?", "Tell me something about the moon."]
    user = TurnTakingUser([_question(q) for q in questions])
    loop, _ = await converse(agent_engines, user, echo=EchoDevice(delay_ms=150, gain=0.5, seed=4), max_s=90)

    story = [(e["type"], e.get("reply"), e.get("text", "")[:60]) for e in loop.events if e["type"] != "user_partial"]
    assert not _of(loop, "interrupted"), story
    assert len([e for e in _of(loop, "agent_done") if e["text"]]) == len(questions), story
    # None of the agent's words came back as the user's.
    finals = [e["text"] for e in _of(loop, "user_final") if e["text"]]
    assert len(finals) == len(questions)


async def test_a_real_barge_in_over_the_echo_still_stops_the_agent(agent_engines: AgentEngines) -> None:
    user = SpeakOverAgent(_question(STORY), [speech("Stop, tell me about the weather instead.")])
    loop, _ = await converse(agent_engines, user, echo=EchoDevice(delay_ms=120, gain=0.5, seed=5))
    assert [e["reply"] for e in _of(loop, "interrupted")] == [user.reply_ids[0]]


async def test_cancelling_a_session_mid_reply_leaves_no_task(agent_engines: AgentEngines) -> None:
    session = build_agent_session(agent_engines)
    user = TurnTakingUser([_question(STORY)])
    loop = PacedAgentLoop(session, user)
    await session.graph.start()
    await loop.run(lambda lp: bool(_of(lp, "agent_text")), max_s=30)
    await session.graph.cancel()
    await asyncio.sleep(0.05)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    session.events.drain_nowait()
    assert await asyncio.wait_for(session.events.get(), 1) is None  # closed with the session


def test_voxline_demo_writes_the_reply_and_the_waterfall(tmp_path: Path) -> None:
    wav, png = tmp_path / "reply.wav", tmp_path / "waterfall.png"
    done = subprocess.run(
        [sys.executable, "-m", "voxline.cli", "demo", "--question", QUESTION, "--out", str(wav), "--plot", str(png)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "you:" in done.stdout and "agent:" in done.stdout and "voice-to-voice" in done.stdout
    audio, rate = soundfile.read(wav, dtype="float32")
    assert rate == 22050 and np.abs(audio).max() > 0.05
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
