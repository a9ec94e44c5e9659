"""VoiceAgent driven directly: turns, replies, barge-in and what was heard.

The chat engine and the synthesizer are test doubles: this is a unit test of the code
around them. The fake voice speaks every word as (characters + 1) × 10 ms of audio
whose samples are all distinct and non-zero, so silence is told apart, a repeated or
skipped sample shows, and the playout buffer's estimate of where words end is exact.
Media time advances 20 ms a step: one frame of the user's audio in, one frame pulled
for the speaker.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from voxline.errors import EngineError
from voxline.pipeline.agent.playout import FADE_S
from voxline.pipeline.agent.turn_latency import MARKS
from voxline.pipeline.agent.turn_taking import TurnWaits
from voxline.pipeline.agent.voice_agent import AgentSettings, VoiceAgent
from voxline.pipeline.frames import AudioFrame, ControlFrame, ControlKind, TranscriptFrame, Word

RATE = 16000
FRAME = 320  # 20 ms
FADE = round(FADE_S * RATE)  # the playout's fade at a pause, resume or flush
SAMPLES_PER_CHAR = 160  # the fake voice: 10 ms per character of a word, plus one for the gap
SYSTEM = "Be brief."
HOLD = object()  # in a scripted reply: the model thinks until FakeChat.go is set
FAIL = object()  # in a scripted reply: the model fails here
INCOMPLETE_WAIT_MS = 300.0
NOISE_RESUME_MS = 200.0


def system() -> dict[str, str]:
    return {"role": "system", "content": SYSTEM}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def heard_in_audio(call: Call) -> str:
    """The words whose every sample reached the speaker, read off the audio itself.

    Independent of the agent's own estimate (``estimate_word_ends``): it walks the
    fake voice's words in the order they were made, each with the exact samples made
    for it, and keeps those whose last sample is within what was played. The played
    audio must be a prefix of what was made (touched only by fades).
    """
    voiced, made = call.voiced(), call.tts.all_audio
    gain = voiced / made[: len(voiced)]
    assert np.all((gain > 0) & (gain <= 1 + 1e-6)), "the speaker got audio the voice never made, or out of order"
    words, end = [], 0
    for word, audio in zip(call.tts.words, call.tts.made, strict=True):
        end += len(audio)
        if end > len(voiced):
            break
        words.append(word)
    return " ".join(words)


class FakeReplyStream:
    """One scripted reply: text pieces, HOLD and FAIL; records whether it was closed."""

    def __init__(self, chat: FakeChat, script: Sequence[object]) -> None:
        self._chat = chat
        self._script = deque(script)
        self.closed = False
        self.stats = SimpleNamespace(first_token_ms=None, completion_tokens=0)

    @property
    def read_to_end(self) -> bool:
        return not self._script

    def needed_by(self, deadline: float) -> None:
        self.deadline = deadline

    def __aiter__(self) -> FakeReplyStream:
        return self

    async def __anext__(self) -> str:
        await asyncio.sleep(0)  # a token takes a turn of the loop
        while self._script and not self.closed:
            item = self._script.popleft()
            if item is HOLD:
                await self._chat.go.wait()
            elif item is FAIL:
                raise EngineError("the model crashed")
            else:
                self.stats.completion_tokens += 1
                return str(item)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        stopping_early = not self.closed and bool(self._script)
        self.closed = True
        if stopping_early and self._chat.aclose_s:
            await asyncio.sleep(self._chat.aclose_s)  # e.g. a remote engine closing its HTTP response


class FakeChat:
    """A chat engine that answers each call with the next scripted reply ("Okay." after).

    ``aclose_s``: how long stopping a reply midway takes.
    """

    def __init__(self, *replies: Sequence[object], aclose_s: float = 0.0) -> None:
        self._replies = deque(replies)
        self.aclose_s = aclose_s
        self.asked: list[list[dict[str, str]]] = []
        self.streams: list[FakeReplyStream] = []
        self.go = asyncio.Event()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def stream(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 128, temperature: float = 0.0
    ) -> FakeReplyStream:
        self.asked.append([dict(m) for m in messages])
        stream = FakeReplyStream(self, self._replies.popleft() if self._replies else ["Okay."])
        self.streams.append(stream)
        return stream


class FakeSpeech:
    """One text's synthesis: a chunk per word, as the fake voice says it."""

    def __init__(self, tts: FakeTTS, text: str) -> None:
        self._tts = tts
        self._words = deque(text.split())

    def __aiter__(self) -> FakeSpeech:
        return self

    async def __anext__(self) -> np.ndarray:
        await asyncio.sleep(0)
        if not self._words:
            raise StopAsyncIteration
        return self._tts.say(self._words.popleft())

    async def aclose(self) -> None:
        self._words.clear()


class FakeTTS:
    """A synthesizer whose every sample ever made is distinct and non-zero; keeps them all."""

    sample_rate_hz = RATE

    def __init__(self) -> None:
        self.made: list[np.ndarray] = []
        self.words: list[str] = []  # the word each chunk of ``made`` says
        self._samples = 0

    def stream(self, text: str, *, deadline: float | None = None) -> FakeSpeech:
        return FakeSpeech(self, text)

    def say(self, word: str) -> np.ndarray:
        n = (len(word) + 1) * SAMPLES_PER_CHAR
        audio = (0.2 + (self._samples + np.arange(n)) * 1e-6).astype(np.float32)
        self._samples += n
        self.made.append(audio)
        self.words.append(word)
        return audio

    @property
    def all_audio(self) -> np.ndarray:
        return np.concatenate(self.made)


class Call:
    """The user's side of one session: their audio, VAD and transcripts in, the speaker out."""

    def __init__(self, chat: FakeChat, turn_model: Any = None, **settings: Any) -> None:
        self.chat = chat
        self.tts = FakeTTS()
        settings.setdefault("waits", TurnWaits(complete_wait_ms=0, incomplete_wait_ms=INCOMPLETE_WAIT_MS))
        settings.setdefault("noise_resume_ms", NOISE_RESUME_MS)
        self.agent = VoiceAgent(chat, self.tts, AgentSettings(system_prompt=SYSTEM, **settings), turn_model=turn_model)
        self.out: list[np.ndarray] = []  # one pulled frame per step
        self.events: list[dict[str, Any]] = []
        self._pts = 0
        self._utterance = 0

    @property
    def now_s(self) -> float:
        return self._pts / RATE

    def _collect(self) -> None:
        self.events.extend(self.agent.events.drain_nowait())

    async def step(self, n: int = 1) -> None:
        for _ in range(n):
            frame = AudioFrame(
                samples=np.zeros(FRAME, np.float32), sample_rate_hz=RATE,
                pts_samples=self._pts, capture_time=time.monotonic(),
            )
            self._pts += FRAME
            await self.agent.on_audio(frame)
            self.out.append(self.agent.pull(FRAME))
            for _ in range(5):
                await asyncio.sleep(0)  # the reply task's turn
            self._collect()

    async def until(self, kind: str, count: int = 1, max_steps: int = 400) -> dict[str, Any]:
        """Step until the ``count``-th event of ``kind`` is out; return it."""
        for _ in range(max_steps):
            if len(self.of(kind)) >= count:
                return self.of(kind)[count - 1]
            await self.step()
        raise AssertionError(f"no {kind} #{count} in {max_steps} steps; events: {self.types()}")

    async def _control(self, kind: ControlKind) -> None:
        await self.agent.on_control(ControlFrame(kind=kind, media_time_s=self.now_s))
        self._collect()

    async def speech_start(self) -> None:
        await self._control(ControlKind.SPEECH_START)

    async def speech_stop(self) -> float:
        await self._control(ControlKind.SPEECH_STOP)
        return self.now_s

    async def transcript(self, text: str, *, final: bool) -> None:
        start = max(0.0, self.now_s - 0.1 * len(text.split()))
        words = tuple(Word(w, start + 0.1 * i, start + 0.1 * i + 0.08) for i, w in enumerate(text.split()))
        await self.agent.on_transcript(TranscriptFrame(
            utterance=self._utterance, is_final=final, words=words,
            committed=len(words) if final else 0, audio_end_s=self.now_s, made_time=time.monotonic(),
        ))
        self._utterance += final
        self._collect()

    async def says(self, text: str, speak_steps: int = 10) -> float:
        """A whole utterance: speech start, ``speak_steps`` of speech, stop, final; returns the stop time."""
        await self.speech_start()
        await self.step(speak_steps)
        stopped_s = await self.speech_stop()
        await self.transcript(text, final=True)
        return stopped_s

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def voiced(self) -> np.ndarray:
        """Every non-silent sample that went to the speaker, in order."""
        played = np.concatenate(self.out) if self.out else np.zeros(0, np.float32)
        return played[played != 0]

    def played_once_faded(self) -> bool:
        """Every synthesized sample reached the speaker once, in order, touched only by fades."""
        voiced, audio = self.voiced(), self.tts.all_audio
        if len(voiced) != len(audio):
            return False
        gain = voiced / audio
        return bool(np.all((gain > 0) & (gain <= 1 + 1e-6)) and np.sum(gain < 1 - 1e-6) <= 2 * FADE)


async def test_a_complete_turn_is_answered_aloud_and_kept_in_the_history() -> None:
    call = Call(FakeChat(["It is ", "ten past ", "five. ", "Anything ", "else?"]))
    await call.step(3)
    await call.speech_start()
    await call.step(5)
    await call.transcript("What time", final=False)
    await call.step(5)
    await call.speech_stop()
    await call.transcript("What time is it?", final=True)
    turn = await call.until("user_turn")
    done = await call.until("agent_done")

    assert turn["text"] == "What time is it?" and turn["complete"]
    assert call.chat.asked == [[system(), user("What time is it?")]]
    assert np.array_equal(call.voiced(), call.tts.all_audio)
    assert [e["text"] for e in call.of("agent_text")] == ["It is ten past five.", "Anything else?"]
    latency = call.of("turn_latency")
    assert len(latency) == 1 and latency[0]["v2v_ms"] is not None
    waterfall = latency[0]["waterfall_ms"]
    assert list(waterfall) == list(MARKS) and list(waterfall.values()) == sorted(waterfall.values())
    order = call.types()
    assert order.index("user_final") < order.index("user_turn") < order.index("agent_text") < order.index("agent_done")
    assert done["text"] == "It is ten past five. Anything else?"
    assert call.agent.conversation.messages() == [
        system(), user("What time is it?"), assistant("It is ten past five. Anything else?"),
    ]
    assert call.chat.streams[0].closed
    assert call.agent.idle and not call.agent.speaking


async def test_words_over_the_agent_interrupt_it_and_only_the_heard_words_stay() -> None:
    clause = "The time right now is ten past five in the afternoon."
    call = Call(FakeChat(["The time right now ", "is ten past five ", "in the afternoon. ", HOLD, "Anything else?"]))
    await call.says("What time is it?")
    await call.until("agent_text")
    await call.step(8)
    await call.speech_start()
    assert call.types()[-1] == "agent_paused"
    paused_at = len(call.out)
    await call.step(3)
    await call.transcript("Wait what about", final=False)

    interrupted = call.of("interrupted")
    assert len(interrupted) == 1
    heard = interrupted[0]["heard"]
    assert heard == heard_in_audio(call)
    assert heard and clause.startswith(heard) and len(heard) < len(clause)
    assert call.types()[-3:] == ["agent_paused", "user_partial", "interrupted"]
    assert call.chat.streams[0].closed and not call.chat.streams[0].read_to_end
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert call.agent.conversation.messages() == [system(), user("What time is it?"), assistant(heard)]

    await call.step(5)
    await call.speech_stop()
    await call.transcript("Wait, what about tomorrow?", final=True)
    turn = await call.until("user_turn", count=2)
    assert not np.concatenate(call.out[paused_at:])[FADE:].any()  # silence from the pause (and its fade) on
    assert turn["text"] == "Wait, what about tomorrow?"
    assert call.chat.asked[1] == [
        system(), user("What time is it?"), assistant(heard), user("Wait, what about tomorrow?"),
    ]
    assert "agent_done" not in call.types()


@pytest.mark.parametrize("steps", range(1, 36, 2))
async def test_wherever_the_agent_is_cut_the_history_keeps_exactly_the_words_played_to_their_end(steps: int) -> None:
    clause = "A tremendously long-winded explanation is on its way, I am afraid, so do bear with me."
    call = Call(FakeChat([clause + " ", HOLD]))
    await call.says("Why?")
    await call.until("agent_text")
    await call.step(steps)
    await call.speech_start()
    await call.step(3)
    await call.transcript("Wait what about", final=False)
    heard = call.of("interrupted")[0]["heard"]
    assert heard == heard_in_audio(call)
    assert call.agent.conversation.messages()[-1:] == ([assistant(heard)] if heard else [user("Why?")])


async def test_talking_over_the_agent_past_the_backchannel_limit_interrupts_without_words() -> None:
    clause = "The time right now is ten past five in the afternoon."
    call = Call(FakeChat([clause + " ", HOLD]))
    await call.says("What time is it?")
    await call.until("agent_text")
    await call.step(6)
    await call.speech_start()
    interrupted = await call.until("interrupted", max_steps=80)  # max_backchannel_ms 1500 = 75 steps
    assert interrupted["heard"] == heard_in_audio(call) != ""
    assert call.agent.conversation.messages()[-1] == assistant(interrupted["heard"])


async def test_a_backchannel_pauses_the_agent_which_then_goes_on_from_the_same_sample() -> None:
    call = Call(FakeChat(["It is ten past five ", "in the afternoon. ", "Anything else?"]))
    await call.says("What time is it?")
    await call.until("agent_text")
    await call.step(6)
    await call.speech_start()
    paused_at = len(call.out)
    await call.step(5)
    await call.transcript("Uh-huh", final=False)
    await call.step(5)
    await call.speech_stop()
    await call.step(2)
    await call.transcript("Uh-huh.", final=True)
    resumed_at = len(call.out)
    done = await call.until("agent_done")
    await call.step(30)  # well past the wait for an incomplete turn

    order = call.types()
    assert order.index("agent_paused") < order.index("agent_resumed")
    assert call.of("agent_resumed")[0]["reason"] == "backchannel"
    assert not np.concatenate(call.out[paused_at:resumed_at])[FADE:].any()
    assert call.played_once_faded()  # nothing repeated, nothing skipped
    assert [e["text"] for e in call.of("agent_text")] == ["It is ten past five in the afternoon.", "Anything else?"]
    assert done["text"] == "It is ten past five in the afternoon. Anything else?"
    assert len(call.of("user_turn")) == 1 and len(call.chat.asked) == 1
    assert "interrupted" not in order
    assert call.agent.conversation.messages() == [
        system(), user("What time is it?"), assistant("It is ten past five in the afternoon. Anything else?"),
    ]


async def test_its_own_voice_coming_back_loud_resumes_the_agent_instead_of_cutting_it_off() -> None:
    """A caller on a loudspeaker without echo cancellation: the recogniser hears the agent."""
    call = Call(FakeChat(["It is ten past five ", "in the afternoon. ", "Anything else?"]))
    await call.says("What time is it?")
    await call.until("agent_text")
    await call.step(20)  # "It is ten past five" is playing
    await call.speech_start()
    await call.step(5)
    await call.transcript("It is ten", final=False)
    await call.step(80)  # echo goes on past the backchannel limit: still no interruption
    await call.speech_stop()
    await call.step(2)
    await call.transcript("It is ten past.", final=True)
    done = await call.until("agent_done")
    await call.step(30)

    assert call.of("agent_resumed")[0]["reason"] == "echo"
    assert "interrupted" not in call.types()
    assert call.played_once_faded()  # the whole reply, nothing repeated or skipped
    assert done["text"] == "It is ten past five in the afternoon. Anything else?"
    assert len(call.of("user_turn")) == 1 and len(call.chat.asked) == 1  # the echo was no turn
    assert call.agent.conversation.messages()[-1] == assistant(done["text"])


async def test_noise_over_the_agent_resumes_it_after_noise_resume_ms() -> None:
    call = Call(FakeChat(["It is ten past five ", "in the afternoon. ", "Anything else?"]))
    await call.says("What time is it?")
    await call.until("agent_text")
    await call.step(6)
    await call.speech_start()
    await call.step(4)
    quiet_from_s = await call.speech_stop()
    resumed = await call.until("agent_resumed")
    waited_ms = (call.now_s - quiet_from_s) * 1000
    done = await call.until("agent_done")

    assert resumed["reason"] == "noise"
    assert NOISE_RESUME_MS - 1e-6 <= waited_ms <= NOISE_RESUME_MS + 20 + 1e-6
    assert call.played_once_faded()
    assert done["text"] == "It is ten past five in the afternoon. Anything else?"
    assert call.agent.conversation.messages()[-1] == assistant(done["text"])
    assert len(call.of("user_turn")) == 1 and "interrupted" not in call.types()


async def test_talking_on_before_the_reply_plays_discards_it_and_answers_everything_said() -> None:
    call = Call(FakeChat([HOLD, "Sure. "], ["Booked for two at eight."]))
    await call.says("Book a table.")
    await call.until("user_turn")
    await call.step(3)
    await call.speech_start()

    assert call.types()[-1] == "reply_discarded"
    assert call.chat.streams[0].closed and len(call.voiced()) == 0
    await call.step(10)
    await call.speech_stop()
    await call.transcript("For two at eight.", final=True)
    turn = await call.until("user_turn", count=2)
    done = await call.until("agent_done")

    assert turn["text"] == "Book a table. For two at eight."
    assert call.chat.asked[1] == [system(), user("Book a table. For two at eight.")]
    assert done["text"] == "Booked for two at eight."
    assert "agent_paused" not in call.types() and "interrupted" not in call.types()
    assert call.agent.conversation.messages() == [
        system(), user("Book a table. For two at eight."), assistant("Booked for two at eight."),
    ]


@pytest.mark.parametrize(
    ("said", "complete", "wait_ms"),
    [("What time is it?", True, 0.0), ("I want to book a table for", False, INCOMPLETE_WAIT_MS)],
)
async def test_the_turn_ends_at_once_on_complete_words_and_after_a_wait_on_hanging_ones(
    said: str, complete: bool, wait_ms: float
) -> None:
    call = Call(FakeChat())
    stopped_s = await call.says(said)
    turn = await call.until("user_turn")
    waited_ms = (call.now_s - stopped_s) * 1000
    assert turn["text"] == said and turn["complete"] is complete
    assert wait_ms - 1e-6 <= waited_ms <= wait_ms + 20 + 1e-6  # the first 20 ms frame past the wait


@pytest.mark.parametrize(
    ("script", "heard"),
    [(["Let me ", "see. ", FAIL], "Let me see."), ([FAIL], "")],
    ids=["after-a-clause", "before-any-word"],
)
async def test_an_engine_error_midway_is_reported_and_the_next_turn_is_answered(
    script: list[object], heard: str
) -> None:
    call = Call(FakeChat(script, ["It is sunny."]))
    await call.says("What's the weather?")
    error = await call.until("error")
    first = await call.until("agent_done")
    assert error["code"] == "reply_failed" and "crashed" in error["message"] and error["reply"] == 1
    assert first["text"] == heard

    await call.says("And tomorrow?")
    second = await call.until("agent_done", count=2)
    assert second["text"] == "It is sunny."
    asked = call.chat.asked[1]
    assert asked[0] == system()
    if heard:
        assert [m["content"] for m in asked if m["role"] == "user"] == ["What's the weather?", "And tomorrow?"]
    else:  # nothing was said back: the two user turns are one message, never two in a row
        assert asked[-1] == user("What's the weather? And tomorrow?")
    assert [m["content"] for m in asked if m["role"] == "assistant"] == ([heard] if heard else [])
    assert call.agent.conversation.messages()[-1] == assistant("It is sunny.")


@pytest.mark.parametrize("when", ["thinking", "speaking"])
async def test_closing_mid_reply_leaves_no_task_and_ends_the_events(when: str) -> None:
    script = [HOLD, "Hi."] if when == "thinking" else ["It is ten past five ", "in the afternoon. ", HOLD, "Bye."]
    call = Call(FakeChat(script))
    await call.says("What time is it?")
    await call.until("user_turn" if when == "thinking" else "agent_text")
    await call.step(3)

    await call.agent.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert call.chat.streams[0].closed
    call.events.extend(call.agent.events.drain_nowait())
    assert await asyncio.wait_for(call.agent.events.get(), 1.0) is None
    assert not call.agent.pull(FRAME)[FADE:].any() and not call.agent.pull(FRAME).any()
    await call.agent.close()  # idempotent

    await call.says("Hello?")
    await call.step(20)
    assert len(call.chat.asked) == 1 and asyncio.all_tasks() == {asyncio.current_task()}
    assert "agent_done" not in call.types()


async def test_cancelling_a_close_that_waits_for_the_reply_still_cancels_the_caller() -> None:
    call = Call(FakeChat([HOLD, "Hi."], aclose_s=0.05))
    await call.says("What time is it?")
    await call.until("user_turn")
    await call.step(2)

    closing = asyncio.create_task(call.agent.close())
    await asyncio.sleep(0.01)  # close is waiting for the reply task, which is closing its stream
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing


async def test_a_reply_discarded_while_its_engine_stops_is_not_played_meanwhile() -> None:
    call = Call(FakeChat(["Sure, one moment. ", HOLD, "Done."], ["Booked for two at eight."], aclose_s=0.02))
    await call.says("Book a table.")
    await call.until("user_turn")
    for _ in range(20):  # the reply task's turns, with no pull in between
        await asyncio.sleep(0)
    assert call.agent.playout.queued_s > 0 and len(call.voiced()) == 0  # synthesized, not yet played

    talking_on = asyncio.create_task(call.speech_start())  # the graph's task: discards the reply
    await asyncio.sleep(0.005)  # ...which waits for the engine to stop, while the transport pulls
    during_discard = call.agent.pull(FRAME)
    await talking_on
    await call.step(10)
    await call.speech_stop()
    await call.transcript("For two at eight.", final=True)
    await call.until("user_turn", count=2)
    done = await call.until("agent_done")

    assert not during_discard.any()
    assert [e["type"] for e in call.events if e.get("reply") == 1] == ["user_turn", "reply_discarded"]
    assert call.chat.asked[1] == [system(), user("Book a table. For two at eight.")]
    assert "agent_paused" not in call.types() and "interrupted" not in call.types()
    assert done["text"] == "Booked for two at eight."
    assert call.agent.conversation.messages() == [
        system(), user("Book a table. For two at eight."), assistant("Booked for two at eight."),
    ]


async def test_every_clause_is_shown_as_it_is_said_even_a_repeated_one() -> None:
    call = Call(FakeChat(["Yes. ", "Yes. ", "Of course."]))
    await call.says("Can you hear me?")
    done = await call.until("agent_done")
    assert done["text"] == "Yes. Yes. Of course."
    assert [e["text"] for e in call.of("agent_text")] == ["Yes.", "Yes.", "Of course."]


async def test_a_long_conversation_keeps_the_system_prompt_and_stays_within_the_history_budget() -> None:
    budget = 60
    turns = 8
    call = Call(FakeChat(*[[f"Answer number {n}."] for n in range(turns)]), history_tokens=budget)
    for n in range(turns):
        await call.says(f"Question number {n}, please?")
        done = await call.until("agent_done", count=n + 1)
        assert done["text"] == f"Answer number {n}."
        conversation = call.agent.conversation
        messages = conversation.messages()
        assert messages[0] == system() and messages[1]["role"] == "user"
        assert messages[-2:] == [user(f"Question number {n}, please?"), assistant(f"Answer number {n}.")]
        assert conversation.tokens() <= budget

    last = call.chat.asked[-1]
    assert last[0] == system() and last[-1] == user(f"Question number {turns - 1}, please?")
    assert all("number 0" not in m["content"] for m in last)


async def test_a_reply_that_runs_dry_midway_reports_its_gap_and_a_flowing_one_none() -> None:
    flowing = Call(FakeChat(["It is ten past five. ", "Anything else?"]))
    await flowing.says("What time is it?")
    assert (await flowing.until("agent_done"))["gap_ms"] == 0.0

    stalled = Call(FakeChat(["It is ten past five. ", HOLD, "Anything else?"]))
    await stalled.says("What time is it?")
    await stalled.until("agent_text")
    await stalled.step(60)  # the first clause has played out; the model is still thinking
    stalled.chat.go.set()
    done = await stalled.until("agent_done")
    assert done["gap_ms"] >= 200.0


class FixedTurnModel:
    """An end-of-turn model that answers ``probability`` and records what it heard."""

    window_s = 8.0

    def __init__(self, probability: float) -> None:
        self.answer = probability
        self.heard: list[int] = []

    async def probability(self, audio: np.ndarray) -> float:
        self.heard.append(len(audio))
        return self.answer


async def test_a_reply_is_prepared_during_the_wait_and_dropped_unheard_when_the_user_goes_on() -> None:
    call = Call(FakeChat(["First answer."], ["Second answer."]), waits=TurnWaits(complete_wait_ms=400))
    await call.says("Ever tried.")
    await call.step(10)  # 200 ms: a pause between sentences
    assert call.chat.asked, "the reply is prepared while the turn is not yet due"
    assert call.voiced().size == 0 and not call.of("user_turn")
    await call.says("Ever failed.")  # the user goes on: the held reply is dropped, unheard
    turn = await call.until("user_turn")
    assert turn["text"] == "Ever tried. Ever failed."
    await call.until("agent_done")
    assert call.of("agent_done")[0]["text"] == "Second answer."
    assert not call.of("reply_discarded")  # never announced, so never withdrawn


async def test_the_audio_model_shortens_the_wait_when_the_voice_finished_and_lengthens_it_when_not() -> None:
    waits = TurnWaits(complete_wait_ms=300, unsure_wait_ms=700, incomplete_wait_ms=1200)
    for probability, expected_ms in ((0.9, 300), (0.1, 700)):
        model = FixedTurnModel(probability)
        call = Call(FakeChat(), waits=waits, turn_model=model)
        stopped_s = await call.says("Ever tried.")
        await call.until("user_turn")
        waited_ms = (call.now_s - stopped_s) * 1000
        assert model.heard, "the model heard the user's voice at the pause"
        assert expected_ms - 1e-6 <= waited_ms <= expected_ms + 20 + 1e-6
