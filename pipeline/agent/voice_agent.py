"""The voice agent of one session: turn-taking, replies, barge-in, and what was heard.

``VoiceAgent`` sits at the end of the listening graph (resample → VAD → ASR; see
``stages/conversation.py``, which feeds it) and at the head of the speaking side,
which a transport pulls at real-time pace (``pull``). It owns, for its session:

- ``TurnDetector``: when the user's turn is over (silence, read against the words);
- the reply task: LLM tokens → ``ClauseChunker`` → TTS per clause → ``PlayoutBuffer``;
- ``BargeInPolicy``: user speech over the agent pauses its audio at once, then a
  backchannel or wordless noise resumes it where it paused, anything else interrupts
  (reply cancelled, queued audio flushed);
- ``Conversation``: the history, holding of each reply only what was played.

The user's words enter the history when the reply to them starts playing. A reply
is prepared as soon as the turn is *ready* (quiet, finals in) and held unplayed until
the turn is *due* (the silence has lasted what the words and the voice call for, see
``turn_taking.py``; an audio end-of-turn model, when given, hears the last 8 s at the
pause). So the listener waits the longer of the end-of-turn wait and the reply's
preparation, not their sum. A reply that has not started playing when the user
speaks again is discarded and its turn put back, so the next end of turn answers
everything said (a pause taken for the end of the turn costs only the discarded work).

Everything the client should know goes out as events on an ``EventChannel``:
``user_partial``/``user_final``, ``user_turn``, ``agent_text`` (a clause as it
starts playing), ``agent_paused``, ``agent_resumed`` (``reason``: backchannel or
noise), ``interrupted`` (the words ``heard``; ``reason``: words or long_speech),
``reply_discarded``, ``agent_done`` (``gap_ms``: silence inside the reply for want of
audio), ``turn_latency`` (the waterfall of ``turn_latency.py``) and ``error``; and
``speech_start``/``speech_stop`` (``at_s``: media seconds) as the VAD opens and closes
an utterance, for transports whose protocol reports them (the Realtime socket).

A transport may also drive the agent: ``respond`` starts a reply to the history now
(a client's ``response.create``), ``interrupt`` stops the one in flight, cut at what
was heard; ``settings.auto_reply`` off announces each user turn without answering it,
and ``settings.interruptible`` off lets the user talk over a reply without stopping it.

All methods run on the session's event loop; none blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..engines import ChatEngine, SpeechSynthesizer, TurnEndModel
from ..event_channel import EventChannel
from ..frames import AudioFrame, ControlFrame, ControlKind, TranscriptFrame
from ..tasks import wait_for_tasks
from .barge_in import BargeInAction, BargeInPolicy, BargeInSettings, is_echo
from .clauses import ClauseChunker, ClauseRules
from .history import Conversation, History
from .playout import PlayoutBuffer
from .turn_latency import TurnTimeline
from .turn_taking import EndOfTurn, TurnDetector, TurnWaits

log = logging.getLogger(__name__)
FloatAudio = npt.NDArray[np.float32]

_LEADING_SILENCE = 0.01  # amplitude under which a reply's first samples are trimmed
_CLOCK_HISTORY = 400  # audio frames remembered for mapping media time to wall time
_NEXT_CLAUSE_MARGIN_S = 1.0
"""Time a next clause takes, text then speech, under load: its LLM deadline is this early."""
_CLOSE_TIMEOUT_S = 5.0
_ECHO_WINDOW_S = 4.0  # words the agent played this recently may come back as echo (delay + ASR)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What shapes the conversation (see ``voxline.config.AgentConfig`` for the knobs)."""

    system_prompt: str = "You are a friendly voice assistant. Answer in one or two short sentences."
    max_reply_tokens: int = 64
    history_tokens: int = 1024
    waits: TurnWaits = field(default_factory=TurnWaits)
    barge_in: BargeInSettings = field(default_factory=lambda: BargeInSettings(min_speech_ms=0.0))
    noise_resume_ms: float = 500.0
    final_wait_ms: float = 1500.0
    clause_rules: ClauseRules = field(default_factory=lambda: ClauseRules(first_max_words=4, second_max_words=8))
    max_queued_audio_s: float = 60.0
    verdict_after_ms: float = 100.0
    """Quiet (ms, from where the VAD turned quiet) after which the audio model listens."""
    auto_reply: bool = True
    """Answer each user turn; off, a turn is announced (``user_turn`` with no reply) and
    added to the history, and a reply waits for ``respond``."""
    interruptible: bool = True
    """User speech over a reply pauses and may interrupt it (barge-in); off, it does not."""


@dataclass(slots=True, eq=False)
class _Reply:
    """One reply in flight."""

    id: int
    turn: EndOfTurn
    timeline: TurnTimeline
    task: asyncio.Task[None] | None = None
    generated: bool = False
    audio_started: bool = False
    text: str = ""
    underrun_samples: int = 0
    held: bool = True


class MediaClock:
    """Maps media time of the user's stream (s) to wall time, from the audio's capture times."""

    def __init__(self) -> None:
        self._frames: deque[tuple[float, float]] = deque(maxlen=_CLOCK_HISTORY)

    def add(self, frame: AudioFrame) -> None:
        """Remember when ``frame`` (whose last sample is at ``end_s``) arrived."""
        self._frames.append((frame.end_s, frame.capture_time or time.monotonic()))

    def wall(self, media_s: float) -> float:
        """The wall time at which the sample at ``media_s`` arrived (best estimate)."""
        for end_s, at in self._frames:
            if end_s >= media_s:
                return at - (end_s - media_s)
        if self._frames:
            end_s, at = self._frames[-1]
            return at + (media_s - end_s)
        return time.monotonic()


class VoiceAgent:
    """One session's conversation: listens to the graph's frames, speaks through ``pull``."""

    def __init__(
        self,
        llm: ChatEngine,
        tts: SpeechSynthesizer,
        settings: AgentSettings | None = None,
        events: EventChannel | None = None,
        *,
        on_played: Callable[[FloatAudio], None] | None = None,
        turn_model: TurnEndModel | None = None,
        conversation: History | None = None,
    ) -> None:
        self.llm = llm
        self.tts = tts
        self.settings = settings or AgentSettings()
        self.events = events or EventChannel()
        self.on_played = on_played
        self.playout = PlayoutBuffer(tts.sample_rate_hz, max_s=self.settings.max_queued_audio_s)
        self.conversation: History = conversation or Conversation(
            self.settings.system_prompt, self.settings.history_tokens
        )
        self.turns = TurnDetector(self.settings.waits, uses_audio_model=turn_model is not None)
        self.turn_model = turn_model
        self._voice: deque[FloatAudio] = deque()  # the last turn_model.window_s of user audio
        self._voice_samples = 0
        self._verdict: asyncio.Task[None] | None = None
        self._verdict_asked = False
        self.barge_in = BargeInPolicy(self.settings.barge_in)
        self.clock = MediaClock()
        self._reply: _Reply | None = None
        self._reply_count = 0
        self._user_speaking = False
        self._quiet_since_s: float | None = None
        self._heard_words_while_paused = False
        self._last_final_made = 0.0
        self._over_agent_since_s: float | None = None
        self._now_s = 0.0
        self._closed = False

    # -- listening side (called by ConversationStage) -----------------------------

    @property
    def current_reply(self) -> int | None:
        """The id of the reply in flight (prepared, generating or playing), or None."""
        return self._reply.id if self._reply is not None else None

    @property
    def speaking(self) -> bool:
        """True while a reply's audio has started and not finished or been interrupted."""
        return self._reply is not None and self._reply.audio_started

    @property
    def idle(self) -> bool:
        """True with no reply in flight, nothing queued to play and no user turn pending."""
        return (
            self._reply is None and self.playout.queued_s == 0 and not self._user_speaking
            and not self.turns.pending_text
        )

    async def on_audio(self, frame: AudioFrame) -> None:
        """Time passes in the user's stream: barge-in timing and end-of-turn polling."""
        self.clock.add(frame)
        self._now_s = now_s = frame.end_s
        if self.turn_model is not None:
            self._remember_voice(frame)
            self._maybe_ask_verdict(now_s)
        if self._user_speaking:
            await self._act(self.barge_in.user_audio(now_s), reason="long_speech")
        elif self.barge_in.paused and self._quiet_since_s is not None:
            quiet_ms = (now_s - self._quiet_since_s) * 1000
            if not self._heard_words_while_paused and quiet_ms >= self.settings.noise_resume_ms:
                await self._act(self.barge_in.user_speech_end(), reason="noise")
            elif self._heard_words_while_paused and quiet_ms >= self.settings.final_wait_ms:
                await self._act(self.barge_in.give_up(), reason="backchannel")
        if self._reply is None:
            ended = self.turns.poll(now_s, prepare=self.settings.auto_reply)
            if ended is not None and self.settings.auto_reply:
                self._start_reply(ended)
            elif ended is not None:
                self._announce_turn(ended)
        reply = self._reply
        if reply is not None and reply.held and self.turns.due(reply.turn, now_s):
            self._take_turn(reply)

    async def on_control(self, frame: ControlFrame) -> None:
        """VAD events: the user started, paused, resumed or stopped speaking."""
        kind = frame.kind
        if kind is ControlKind.SPEECH_START:
            self.events.publish({"type": "speech_start", "at_s": frame.media_time_s})
        elif kind is ControlKind.SPEECH_STOP:
            self.events.publish({"type": "speech_stop", "at_s": frame.media_time_s})
        if kind in (ControlKind.SPEECH_START, ControlKind.SPEECH_RESUME):
            self._user_speaking = True
            self._quiet_since_s = None
            self._verdict_asked = False
            await self._cancel_verdict()
            if kind is ControlKind.SPEECH_START:
                self.turns.speech_start(frame.media_time_s)
            else:
                self.turns.speech_resume(frame.media_time_s)
            if self.speaking:
                if self._over_agent_since_s is None:
                    self._over_agent_since_s = frame.media_time_s
            else:
                self._over_agent_since_s = None
            reply = self._reply
            if reply is not None and not reply.audio_started and (reply.held or self.settings.interruptible):
                await self._discard_reply(reply)
            self.barge_in.user_speech_start(self._now_s)
            await self._act(self.barge_in.user_audio(self._now_s), reason="long_speech")
        elif kind in (ControlKind.SPEECH_PAUSE, ControlKind.SPEECH_STOP):
            self._user_speaking = False
            self.barge_in.user_quiet()
            if self._quiet_since_s is None:
                self._quiet_since_s = frame.media_time_s
            self.turns.speech_quiet(frame.media_time_s)

    async def on_transcript(self, frame: TranscriptFrame) -> None:
        """A partial or final transcript of the user."""
        text = frame.text
        self.events.publish({
            "type": "user_final" if frame.is_final else "user_partial",
            "utterance": frame.utterance, "text": text,
            "stable": text if frame.is_final else " ".join(w.text for w in frame.words[: frame.committed]),
            "start_s": frame.start_s, "end_s": frame.end_s,
        })
        if frame.is_final:
            if text.strip():
                self._last_final_made = frame.made_time or time.monotonic()
            self.turns.final(text, frame.audio_end_s)
            over = self._over_agent_since_s
            if over is not None and frame.end_s >= over and self.barge_in.is_backchannel(text):
                # Said over the agent: a backchannel is never a turn, whenever its final lands.
                self.turns.discard_last(text)
        if not (self.barge_in.paused or (frame.is_final and self.speaking)):
            return
        # The agent's voice back through the user's speaker, past the echo canceller.
        echo = is_echo(text, self.playout.recent_words(_ECHO_WINDOW_S))
        if echo and frame.is_final:
            self.turns.discard_last(text)
        if self.barge_in.paused:
            if text.strip() and not echo:
                self._heard_words_while_paused = True
            action = self.barge_in.user_transcript(text, final=frame.is_final, echo=echo)
            if action is BargeInAction.RESUME and frame.is_final and not echo:
                self.turns.discard_last(text)
            resumed = "echo" if echo else "backchannel"
            await self._act(action, reason=resumed if action is BargeInAction.RESUME else "words")
        elif not echo:  # words over the agent too short to have paused it, or after a noise resume
            if self.barge_in.is_backchannel(text):
                self.turns.discard_last(text)
            else:
                await self._act(BargeInAction.INTERRUPT, reason="words")

    async def close(self) -> None:
        """Cancel the reply in flight and close the event channel. Idempotent."""
        self._closed = True
        reply, self._reply = self._reply, None
        self.playout.flush()
        self.events.close()
        await self._cancel_verdict()
        if reply is not None:
            await self._cancel(reply)

    # -- the audio end-of-turn model ---------------------------------------------------

    def _remember_voice(self, frame: AudioFrame) -> None:
        assert self.turn_model is not None
        self._voice.append(frame.samples)
        self._voice_samples += len(frame.samples)
        keep = round(self.turn_model.window_s * frame.sample_rate_hz)
        while self._voice and self._voice_samples - len(self._voice[0]) >= keep:
            self._voice_samples -= len(self._voice.popleft())

    def _maybe_ask_verdict(self, now_s: float) -> None:
        quiet = self._quiet_since_s
        if self._verdict_asked or self._user_speaking or quiet is None:
            return
        if (now_s - quiet) * 1000 < self.settings.verdict_after_ms:
            return
        self._verdict_asked = True
        audio = np.concatenate(list(self._voice)) if self._voice else np.zeros(0, np.float32)
        self._verdict = asyncio.create_task(self._ask_verdict(audio), name="voxline-turn-verdict")

    async def _ask_verdict(self, audio: FloatAudio) -> None:
        assert self.turn_model is not None
        try:
            probability = await self.turn_model.probability(audio)
        except Exception as exc:  # a model failure falls back to the text reading's waits
            log.warning("end-of-turn model failed: %s", exc)
            return
        self.turns.audio_verdict(probability)
        self.events.publish({"type": "turn_verdict", "probability": round(probability, 3)})

    async def _cancel_verdict(self) -> None:
        task, self._verdict = self._verdict, None
        if task is not None and not task.done():
            task.cancel()
            await wait_for_tasks({task}, _CLOSE_TIMEOUT_S, "voice agent (end-of-turn verdict)")

    # -- barge-in -------------------------------------------------------------------

    async def _act(self, action: BargeInAction | None, *, reason: str = "", forced: bool = False) -> None:
        if action is None:
            return
        if not (forced or self.settings.interruptible) and action is not BargeInAction.RESUME:
            return
        reply = self._reply
        if action is BargeInAction.PAUSE:
            self.playout.pause()
            self.events.publish({"type": "agent_paused", "reply": reply.id if reply else None, "at": time.monotonic()})
        elif action is BargeInAction.RESUME:
            self._heard_words_while_paused = False
            self.playout.resume()
            self.events.publish({"type": "agent_resumed", "reply": reply.id if reply else None, "reason": reason})
        elif action is BargeInAction.INTERRUPT:
            self._heard_words_while_paused = False
            # Detach first: the transport may pull while the reply task stops.
            self._reply = None
            heard = self._heard_after_flush(reply.id) if reply is not None else ""
            if reply is not None:
                self.conversation.add_agent(heard)
            self.barge_in.agent_speaking(False)
            self.events.publish({
                "type": "interrupted", "reply": reply.id if reply else None, "heard": heard, "reason": reason,
            })
            if reply is not None:
                await self._cancel(reply)

    async def interrupt(self, reason: str = "cancelled") -> bool:
        """Stop the reply in flight now, its history cut at what was heard; False if none.

        Publishes ``interrupted`` (with ``reason``) like a barge-in does.
        """
        if self._reply is None:
            return False
        await self._act(BargeInAction.INTERRUPT, reason=reason, forced=True)
        return True

    def respond(self, instructions: str | None = None) -> int | None:
        """Start a reply to the history as it stands, due at once; its id, or None if one is in flight.

        ``instructions`` replace the system prompt for this reply only. The reply's
        latency marks start now (there is no user speech to measure from).
        """
        if self._reply is not None or self._closed:
            return None
        now = time.monotonic()
        self._reply_count += 1
        timeline = TurnTimeline(self._reply_count, "")
        for mark in ("speech_end", "asr_final"):
            timeline.mark(mark, now)
        reply = _Reply(self._reply_count, EndOfTurn("", self._now_s, True), timeline, held=False)
        timeline.mark("endpoint", now)
        messages = self.conversation.messages()
        if instructions is not None:
            messages[0] = {"role": "system", "content": instructions}
        reply.task = asyncio.create_task(self._run_reply(reply, messages), name=f"voxline-reply-{reply.id}")
        self._reply = reply
        return reply.id

    def _announce_turn(self, ended: EndOfTurn) -> None:
        """A due turn with ``auto_reply`` off: into the history, and to the client, unanswered."""
        self.conversation.add_user(ended.text)
        self.events.publish({
            "type": "user_turn", "reply": None, "text": ended.text, "complete": ended.complete,
            "speech_end_s": ended.speech_end_s,
        })

    def _heard_after_flush(self, reply_id: int) -> str:
        for heard in self.playout.flush():
            if heard.turn == reply_id:
                return heard.text
        return ""

    # -- replies --------------------------------------------------------------------

    def _start_reply(self, ended: EndOfTurn) -> None:
        if self._closed:
            return
        self._reply_count += 1
        timeline = TurnTimeline(self._reply_count, ended.text)
        timeline.mark("speech_end", self.clock.wall(ended.speech_end_s))
        timeline.mark("asr_final", self._last_final_made or time.monotonic())
        self._last_final_made = 0.0
        reply = _Reply(self._reply_count, ended, timeline)
        messages = self.conversation.messages_with_user(ended.text)
        reply.task = asyncio.create_task(self._run_reply(reply, messages), name=f"voxline-reply-{reply.id}")
        self._reply = reply
        if self.turns.due(ended, self._now_s):
            self._take_turn(reply)

    def _take_turn(self, reply: _Reply) -> None:
        """The turn is due: the prepared reply may play, and the client hears of the turn."""
        reply.held = False
        reply.timeline.mark("endpoint", time.monotonic())
        ended = reply.turn
        self.events.publish({
            "type": "user_turn", "reply": reply.id, "text": ended.text, "complete": ended.complete,
            "speech_end_s": ended.speech_end_s,
        })

    async def _discard_reply(self, reply: _Reply) -> None:
        """The user went on speaking before the reply played: drop it, keep their words."""
        self._reply = None
        self.playout.flush()
        if reply.turn.text:  # a reply to ``respond`` answered no turn of its own
            self.turns.retract(reply.turn)
        if not reply.held:  # a reply still held was never announced
            self.events.publish({"type": "reply_discarded", "reply": reply.id})
        await self._cancel(reply)

    async def _cancel(self, reply: _Reply) -> None:
        """Cancel the reply task and wait for it (bounded); the caller's own cancel propagates."""
        task = reply.task
        if task is not None and not task.done():
            task.cancel()
            await wait_for_tasks({task}, _CLOSE_TIMEOUT_S, "voice agent (reply)")

    async def _run_reply(self, reply: _Reply, messages: list[dict[str, str]]) -> None:
        chunker = ClauseChunker(self.settings.clause_rules)
        try:
            stream = self.llm.stream(messages, max_tokens=self.settings.max_reply_tokens)
            try:
                async for piece in stream:
                    reply.timeline.mark("llm_first_token", time.monotonic())
                    reply.text += piece
                    for clause in chunker.push(piece):
                        await self._speak(reply, clause)
                        # The next clause is needed (text, then speech) before this runs out.
                        stream.needed_by(time.monotonic() + self.playout.queued_s - _NEXT_CLAUSE_MARGIN_S)
            finally:
                await stream.aclose()
            for clause in chunker.flush():
                await self._speak(reply, clause)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine failure ends this reply, not the session
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # an error while stopping a cancelled reply is no failure to report
            log.warning("reply %d failed: %s", reply.id, exc)
            self.events.publish({"type": "error", "code": "reply_failed", "message": str(exc), "reply": reply.id})
        finally:
            reply.generated = True

    async def _speak(self, reply: _Reply, clause: str) -> None:
        parts: list[FloatAudio] = []
        # Needed once what is already queued has played: a first clause is due now.
        stream = self.tts.stream(clause, deadline=time.monotonic() + self.playout.queued_s)
        try:
            async for chunk in stream:
                reply.timeline.mark("tts_first_audio", time.monotonic())
                parts.append(chunk)
        finally:
            await stream.aclose()
        if not parts:
            return
        audio = np.concatenate(parts)
        if not reply.audio_started and self.playout.queued_s == 0:
            loud = np.flatnonzero(np.abs(audio) > _LEADING_SILENCE)
            audio = audio[max(0, int(loud[0]) - 80) :] if len(loud) else audio
        if not self.playout.enqueue(clause, audio, reply.id):
            self.events.publish({"type": "error", "code": "reply_too_long", "message": "reply audio over the queue limit"})

    # -- speaking side (called by the transport, at real-time pace) ---------------------

    def pull(self, n_samples: int) -> FloatAudio:
        """The next ``n_samples`` of agent audio at ``playout.sample_rate_hz`` (silence when idle)."""
        reply = self._reply
        if reply is not None and reply.held:  # prepared, not yet due: the user may go on
            frame = self.playout.silence(n_samples)  # still on the playout clock the ledger counts
            if self.on_played is not None:
                self.on_played(frame)
            return frame
        had_audio = self.playout.playing
        frame = self.playout.next_frame(n_samples)
        for reply_id, text in self.playout.take_started():
            self.events.publish({"type": "agent_text", "reply": reply_id, "text": text})
        if self.on_played is not None:
            self.on_played(frame)
        if reply is None:
            return frame
        if had_audio and not reply.audio_started:
            reply.audio_started = True
            reply.timeline.mark("audio_out", time.monotonic())
            self.conversation.add_user(reply.turn.text)
            self.barge_in.agent_speaking(True)
            self.events.publish(reply.timeline.as_event())
        if self.playout.queued_s == 0 and not self.playout.paused:
            if reply.generated:
                self._finish(reply)
            elif reply.audio_started and not had_audio:
                reply.underrun_samples += n_samples  # a gap: started, not done, nothing to play
        return frame

    def _finish(self, reply: _Reply) -> None:
        heard = self.playout.forget(reply.id)
        self._reply = None
        if reply.audio_started:
            self.conversation.add_agent(heard.text)
            self.barge_in.agent_speaking(False)
        else:  # the reply had nothing to say
            self.conversation.add_user(reply.turn.text)
        self.events.publish({
            "type": "agent_done", "reply": reply.id, "text": heard.text,
            "gap_ms": round(reply.underrun_samples * 1000 / self.playout.sample_rate_hz, 1),
        })
