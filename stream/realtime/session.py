"""One OpenAI-Realtime session: client events in, the agent or the transcriber at work, server events out.

A ``RealtimeSession`` is either kind the protocol defines:

- **realtime**: the voice agent of the WebRTC calls (``recipes.agent``: VAD, streaming
  ASR, end of turn, LLM, TTS, barge-in), with this session's items as its history
  (``RealtimeConversation``). Its speech is pulled at real-time pace, as a WebRTC track
  would, and each 20 ms goes out as a ``response.output_audio.delta``; so what was
  sent is what the client has had time to play, and an interruption (server VAD
  barge-in, ``response.cancel``, ``output_audio_buffer.clear``) cuts the item at what was
  heard, like a call's history. Text replies (``output_modalities: ["text"]``) stream
  the LLM's tokens as ``response.output_text.delta``.
- **transcription**: the caption graph (VAD, streaming ASR); every utterance becomes a
  user item with transcription deltas and a completion, and nothing answers.

The end of a turn: ``semantic_vad`` (the default) is voxline's end of turn (the words'
completeness, the audio model's verdict, waits scaled by ``eagerness``); ``server_vad``
waits ``silence_duration_ms`` of silence whatever was said; ``null`` is push to talk:
the client's ``input_audio_buffer.commit`` ends the turn (the session pushes a second of
silence through the recogniser to finish the last word, then commits what it heard).
The end of turn is heard in the audio, so a client keeps streaming, silence included,
as a microphone does.

``handle`` takes one decoded client event and raises ``RealtimeProtocolError`` for one
it cannot take (the socket turns that into an ``error`` event with the offending
``event_id``; the session carries on). ``close`` cancels and awaits everything the
session started. All methods run on the event loop; none blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.pipeline.agent.playback_ledger import PlaybackLedger
from voxline.pipeline.agent.turn_taking import TurnWaits
from voxline.pipeline.frames import (
    AudioFrame,
    ControlFrame,
    ControlKind,
    ErrorFrame,
    TranscriptFrame,
)
from voxline.pipeline.tasks import wait_for_tasks
from voxline.resampler import StreamResampler
from voxline.stream.realtime.audio import RealtimeAudioError
from voxline.stream.realtime.conversation import Item, RealtimeConversation
from voxline.stream.realtime.protocol import (
    RealtimeProtocolError,
    ServerEvents,
    SessionSettings,
    new_id,
)
from voxline.stream.sessions.log import caption_from_agent_event
from voxline.stream.turn_metrics import TurnLatencyHistograms

log = logging.getLogger(__name__)
FloatAudio = npt.NDArray[np.float32]
Send = Callable[[dict[str, Any]], Awaitable[None]]

FRAME_S = 0.02
MAX_FRAME_S = 0.5
COMMIT_PADDING_S = 1.0
"""Silence pushed after a manual commit: the VAD's hangover plus the recogniser's late tail."""
COMMIT_TIMEOUT_S = 5.0
FINAL_TIMEOUT_S = 2.0
"""An utterance whose final has not come this long after its end had no words (a cough)."""
EARLY_FINAL_S = 0.5
"""A final whose words end this close before the VAD's stop is that utterance's (it came early)."""
MAX_CATCH_UP_FRAMES = 5
_CLOSE_TIMEOUT_S = 5.0
EAGERNESS_SCALE = {"high": 0.5, "medium": 1.0, "auto": 1.0, "low": 2.0}
"""``semantic_vad`` eagerness as a factor on voxline's end-of-turn waits."""
CLIENT_EVENTS = (
    "session.update", "transcription_session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
    "input_audio_buffer.clear", "conversation.item.create", "conversation.item.retrieve",
    "conversation.item.truncate", "conversation.item.delete", "response.create", "response.cancel",
    "output_audio_buffer.clear",
)


@dataclass(slots=True)
class _InputItem:
    """The user item being spoken (or waiting for its last final)."""

    id: str
    start_ms: float
    finals: list[str] = field(default_factory=list)
    stable: str = ""
    emitted: str = ""
    stop_s: float = 0.0
    committed_at: float = 0.0
    final_end_s: float = -1.0

    def heard(self) -> str:
        return " ".join(t for t in [*self.finals, self.stable] if t).strip()


@dataclass(slots=True, eq=False)
class _Response:
    """One response in flight."""

    id: str
    item: Item
    audio: bool
    reply: int | None = None
    task: asyncio.Task[None] | None = None
    transcript: str = ""
    audio_started: bool = False
    status: str = "completed"
    reason: str | None = None
    resampler: StreamResampler | None = None
    user_item_id: str | None = None
    """The committed user turn an automatic reply answers (its words go back if the reply is discarded)."""


class RealtimeSession:
    """One Realtime connection's session (see module doc); ``send`` delivers server events."""

    def __init__(
        self,
        settings: SessionSettings,
        events: ServerEvents,
        send: Send,
        *,
        caption_engines: Any,
        agent_engines: Any = None,
        latency: TurnLatencyHistograms | None = None,
        track_graph: Callable[[Any], None] | None = None,
        retire_graph: Callable[[Any], None] | None = None,
        hold_agent: Callable[[bool], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        on_caption: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_caption = on_caption
        self.out = events
        self.send = send
        self.caption_engines = caption_engines
        self.agent_engines = agent_engines
        self.latency = latency
        self._track = track_graph
        self._retire = retire_graph
        self._hold_agent = hold_agent
        self._on_failure = on_failure
        self.id = new_id("sess")
        default_prompt = agent_engines.config.agent.system_prompt if agent_engines is not None else ""
        self._default_prompt = default_prompt
        self.conversation = RealtimeConversation(settings.instructions or default_prompt)
        self._agent_session: Any = None
        self._caption: Any = None
        self._pump: asyncio.Task[None] | None = None
        self._pts = 0
        self._input_rate = 0
        self._open: _InputItem | None = None
        self._awaiting: deque[_InputItem] = deque()  # committed items still waiting for their final
        self._speaking = False
        self._final_due_since: float | None = None  # an utterance ended; its final has not come
        self._input_changed = asyncio.Event()
        self._response: _Response | None = None
        self._text_tasks: set[asyncio.Task[None]] = set()
        self._requested_replies: set[int] = set()  # replies to response.create: no voice-to-voice turn
        self._closed = False

    @property
    def started(self) -> bool:
        """True once audio, items or a response made the session build its graph."""
        return self._agent_session is not None or self._caption is not None

    # -- client events ------------------------------------------------------------------

    async def handle(self, event: dict[str, Any]) -> None:
        """Take one client event. Raises ``RealtimeProtocolError`` for one this session cannot take."""
        kind = event["type"]
        handler = getattr(self, "_on_" + kind.replace(".", "_"), None) if kind in CLIENT_EVENTS else None
        if handler is None:
            raise RealtimeProtocolError(
                "unknown_event", f"voxline does not take {kind!r}; it takes {', '.join(CLIENT_EVENTS)}", "type"
            )
        await handler(event)

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        if self.out.beta:
            settings = self.settings.update_beta(event.get("session"))
        else:
            settings = self.settings.update_ga(event.get("session"))
        await self._apply(settings)

    async def _on_transcription_session_update(self, event: dict[str, Any]) -> None:
        await self._apply(self.settings.update_beta(event.get("session"), transcription=True))

    async def _apply(self, settings: SessionSettings) -> None:
        if self.started and settings.kind != self.settings.kind:
            raise RealtimeProtocolError(
                "invalid_value", "'session.type' cannot change once the session has audio or items", "session.type"
            )
        if self._pts and settings.input_format != self.settings.input_format:
            raise RealtimeProtocolError(
                "invalid_value", "the input audio format cannot change once audio was sent", "session.audio.input.format"
            )
        if settings.kind == "realtime" and self.agent_engines is None:
            raise RealtimeProtocolError(
                "session_unavailable", "this server takes transcription sessions only (voice calls are off)", "session.type"
            )
        if settings.kind != self.settings.kind and self._hold_agent is not None:
            self._hold_agent(settings.kind == "realtime")  # an agent session holds a call's place
        self.settings = settings
        self.conversation.system_prompt = settings.instructions or self._default_prompt
        self._configure_agent()
        await self.send(self.out.session("session.updated", settings, self.id))

    async def _on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            samples = self.settings.input_format.decode(event.get("audio"))
        except RealtimeAudioError as exc:
            raise RealtimeProtocolError("invalid_audio", str(exc), "audio") from None
        await self._ensure_started()
        rate = self.settings.input_format.rate_hz
        self._input_rate = rate
        audio_in = self._audio_in()
        step = int(MAX_FRAME_S * rate)
        now = time.monotonic()
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step]
            frame = AudioFrame(samples=chunk, sample_rate_hz=rate, pts_samples=self._pts, capture_time=now)
            self._pts += len(chunk)
            if not audio_in.put_nowait(frame):
                await audio_in.put(frame)

    async def _on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        if not self.started or (self._open is None and not self._speaking and not self._final_pending()):
            raise RealtimeProtocolError("input_audio_buffer_commit_empty", "the input audio buffer holds no speech")
        spoken = self._open
        padding = np.zeros(int(COMMIT_PADDING_S * self._input_rate), np.float32)
        audio_in = self._audio_in()
        await audio_in.put(AudioFrame(padding, self._input_rate, self._pts, time.monotonic()))
        self._pts += len(padding)
        deadline = time.monotonic() + COMMIT_TIMEOUT_S
        while (self._speaking or self._final_pending()) and time.monotonic() < deadline:
            self._input_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._input_changed.wait(), deadline - time.monotonic())
        item = self._open
        if spoken is not None and item is not spoken and self.conversation.get(spoken.id) is not None:
            return  # the end of turn came while the padding went through: already committed
        if item is None or not item.heard():
            self._open = None
            raise RealtimeProtocolError("input_audio_buffer_commit_empty", "no speech was heard in the input audio buffer")
        agent = self._agent()
        if agent is not None:
            agent.turns.clear()
        await self._commit_user(item, item.heard(), audio_end_ms=self._pts * 1000 / self._input_rate, vad=False)
        await self._maybe_respond()

    async def _on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self._open = None
        agent = self._agent()
        if agent is not None:
            agent.turns.clear()
        await self._emit("input_audio_buffer.cleared")

    async def _on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item_event = event.get("item")
        if not isinstance(item_event, dict):
            raise RealtimeProtocolError("invalid_value", "'item' must be an object", "item")
        if item_event.get("type", "message") != "message":
            raise RealtimeProtocolError(
                "unsupported_item", f"voxline takes message items only, not {item_event.get('type')!r}", "item.type"
            )
        role = item_event.get("role")
        if role not in ("user", "assistant", "system"):
            raise RealtimeProtocolError("invalid_value", "'item.role' must be user, assistant or system", "item.role")
        content = item_event.get("content")
        if not isinstance(content, list) or not content or not all(isinstance(c, dict) for c in content):
            raise RealtimeProtocolError("invalid_value", "'item.content' must be a list of content objects", "item.content")
        texts, audio = [], None
        for part in content:
            if part.get("type") in ("input_text", "text", "output_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "input_audio" and role == "user":
                audio = part.get("audio")
            else:
                raise RealtimeProtocolError(
                    "unsupported_content", f"voxline takes text and (for users) input_audio content, not {part.get('type')!r}",
                    "item.content",
                )
        previous = event.get("previous_item_id")
        if previous is not None and not isinstance(previous, str):
            raise RealtimeProtocolError("invalid_value", "'previous_item_id' must be an item id", "previous_item_id")
        if previous not in (None, "root") and self.conversation.get(previous) is None:
            raise RealtimeProtocolError("item_not_found", f"no item {previous!r} to add after", "previous_item_id")
        given = item_event.get("id")
        item_id = given if isinstance(given, str) and given else new_id("item")
        if self.conversation.get(item_id) is not None:
            raise RealtimeProtocolError("duplicate_item_id", f"an item {item_id!r} already exists", "item.id")
        transcript = " ".join(texts)
        if audio is not None:
            transcript = await self._transcribe_item(audio)
        await self._ensure_started()
        item = Item(item_id, role, transcript, audio=audio is not None)
        await self._add_item(item, previous)

    async def _add_item(self, item: Item, previous: str | None = None) -> None:
        if previous == "root":
            self.conversation.items.insert(0, item)
            previous_id = None
        else:
            previous_id = self.conversation.add(item, previous)
        shape = self._item_shape(item)
        await self._emit("conversation.item.added", item=shape, previous_item_id=previous_id)
        await self._emit("conversation.item.done", item=shape, previous_item_id=previous_id)

    def _item_shape(self, item: Item) -> dict[str, Any]:
        if item.role == "user":
            return self.out.user_item(item.id, text=item.text, transcript=item.text, audio=item.audio)
        if item.role == "system":
            return self.out.system_item(item.id, item.text)
        return self.out.assistant_item(item.id, audio=item.audio, text=item.text, status=item.status)

    async def _transcribe_item(self, audio_b64: Any) -> str:
        try:
            samples = self.settings.input_format.decode(audio_b64)
        except RealtimeAudioError as exc:
            raise RealtimeProtocolError("invalid_audio", str(exc), "item.content") from None
        audio16 = StreamResampler(self.settings.input_format.rate_hz, 16000).process(samples)
        if len(audio16) > 30 * 16000:
            raise RealtimeProtocolError("invalid_audio", "an input_audio item may hold at most 30 s", "item.content")
        hypothesis = await self.caption_engines.recognizer.transcribe(
            np.ascontiguousarray(audio16, np.float32), final=True, deadline=time.monotonic() + 1.0
        )
        return " ".join(w.text for w in hypothesis.words).strip()

    async def _on_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        item = self.conversation.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise RealtimeProtocolError("item_not_found", f"no item {event.get('item_id')!r}", "item_id")
        await self._emit("conversation.item.retrieved", item=self._item_shape(item))

    async def _on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or not self.conversation.delete(item_id):
            raise RealtimeProtocolError("item_not_found", f"no item {item_id!r} to delete", "item_id")
        await self._emit("conversation.item.deleted", item_id=item_id)

    async def _on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
        item = self.conversation.get(item_id) if isinstance(item_id, str) else None
        if item is None or item.role != "assistant" or not item.audio:
            raise RealtimeProtocolError("item_not_found", f"no assistant audio item {item_id!r} to truncate", "item_id")
        if isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
            raise RealtimeProtocolError("invalid_value", "'audio_end_ms' must be a whole number of ms", "audio_end_ms")
        if event.get("content_index", 0) != 0:
            raise RealtimeProtocolError("invalid_value", "an assistant item here has one content part (0)", "content_index")
        if end_ms > item.audio_ms + 1:
            raise RealtimeProtocolError(
                "invalid_value", f"audio_end_ms {end_ms} is past the item's {item.audio_ms:.0f} ms of audio",
                "audio_end_ms",
            )
        words = self._words_of(item)
        if words is not None:  # the client stopped at end_ms: the rest of the item went unheard
            ledger, _ = words
            per_ms = ledger.rate_hz / 1000
            ledger.unheard(item.audio_start + round(end_ms * per_ms), item.audio_start + round(item.audio_ms * per_ms))
        response = self._response
        if response is not None and response.item is item:
            await self._cancel_response(response, "client_cancelled")  # it stopped playing
        if words is not None:
            ledger, reply = words
            item.text = " ".join(ledger.heard(reply))
        item.audio_ms = float(end_ms)
        item.status = "incomplete"
        await self._emit("conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=end_ms)

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self.settings.kind == "transcription":
            raise RealtimeProtocolError("invalid_request", "a transcription session does not answer", "type")
        if self._response is not None:
            raise RealtimeProtocolError(
                "conversation_already_has_active_response", f"response {self._response.id} is still in progress"
            )
        options = event.get("response") or {}
        if not isinstance(options, dict):
            raise RealtimeProtocolError("invalid_value", "'response' must be an object", "response")
        instructions = options.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise RealtimeProtocolError("invalid_value", "'response.instructions' must be text", "response.instructions")
        for unsupported in ("conversation", "input", "tools"):
            if options.get(unsupported) not in (None, "auto", []):
                raise RealtimeProtocolError(
                    "unsupported_value", f"voxline answers in the session's conversation; 'response.{unsupported}' is not supported",
                    f"response.{unsupported}",
                )
        modalities = options.get("output_modalities", options.get("modalities"))
        if modalities is not None and (
            not isinstance(modalities, list) or not modalities or not all(m in ("audio", "text") for m in modalities)
        ):
            raise RealtimeProtocolError(
                "invalid_value", "'response.output_modalities' must be [\"audio\"] or [\"text\"]", "response.output_modalities"
            )
        audio = self.settings.speaks if modalities is None else "audio" in modalities
        await self._ensure_started()
        await self._start_response(audio=audio, instructions=instructions)

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        response = self._response
        wanted = event.get("response_id")
        if response is None or (wanted is not None and wanted != response.id):
            raise RealtimeProtocolError("response_cancel_not_active", "there is no response in progress to cancel")
        await self._cancel_response(response, "client_cancelled")

    async def _on_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        response = self._response
        if response is not None and response.audio:
            await self._cancel_response(response, "client_cancelled")
            await self._emit("output_audio_buffer.cleared", response_id=response.id)
        else:
            raise RealtimeProtocolError("invalid_request", "no audio response is playing: there is nothing to clear")

    # -- the graph ---------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self.started or self._closed:
            return
        turn = self.settings.turn_detection
        threshold = turn.threshold if turn is not None and turn.type == "server_vad" else None
        if self.settings.kind == "realtime":
            if self.agent_engines is None:
                raise RealtimeProtocolError(
                    "session_unavailable",
                    "this server takes transcription sessions only (voice calls are off): send session.update "
                    "with type 'transcription'", "session.type",
                )
            from voxline.pipeline.recipes.agent import build_agent_session

            session = build_agent_session(
                self.agent_engines, echo_cancel=False, conversation=self.conversation, vad_threshold=threshold,
                name="realtime",
            )
            self._agent_session = session
            self._configure_agent()
            graph = session.graph
            self._pump = asyncio.create_task(self._guarded(self._run_agent()), name="voxline-realtime-agent")
        else:
            from voxline.pipeline.recipes.captioner import build_caption_graph

            self._caption = build_caption_graph(self.caption_engines, vad_threshold=threshold, name="realtime-captions")
            graph = self._caption.graph
            self._pump = asyncio.create_task(self._guarded(self._run_transcriber()), name="voxline-realtime-transcriber")
        if self._track is not None:
            self._track(graph)
        await graph.start()

    def _audio_in(self) -> Any:
        return self._agent_session.audio_in if self._agent_session is not None else self._caption.audio_in

    def _agent(self) -> Any:
        return self._agent_session.agent if self._agent_session is not None else None

    def _ledger(self) -> PlaybackLedger | None:
        """The agent's account of what the client played (None in a transcription session)."""
        if self._agent_session is None:
            return None
        ledger: PlaybackLedger = self._agent_session.agent.playout.ledger
        return ledger

    def _words_of(self, item: Item) -> tuple[PlaybackLedger, int] | None:
        """The ledger that still keeps the words of ``item``'s reply, and that reply; None if none does."""
        ledger = self._ledger()
        if ledger is None or item.reply is None or not ledger.knows(item.reply):
            return None
        return ledger, item.reply

    def _configure_agent(self) -> None:
        agent = self._agent()
        if agent is None:
            return
        turn = self.settings.turn_detection
        agent.settings = dataclasses.replace(
            agent.settings,
            auto_reply=turn is not None and turn.create_response and self.settings.speaks,
            interruptible=turn is not None and turn.interrupt_response,
            max_reply_tokens=self.settings.reply_tokens(self.agent_engines.config.agent.max_reply_tokens),
        )
        configured = self.agent_engines.config.agent
        if turn is not None and turn.type == "server_vad":
            wait = float(turn.silence_duration_ms)
            agent.turns.waits = TurnWaits(complete_wait_ms=wait, unsure_wait_ms=wait, incomplete_wait_ms=wait)
            agent.turns.uses_audio_model = False
        else:
            scale = EAGERNESS_SCALE[turn.eagerness if turn is not None else "auto"]
            agent.turns.waits = TurnWaits(
                complete_wait_ms=configured.complete_wait_ms * scale, unsure_wait_ms=configured.unsure_wait_ms * scale,
                incomplete_wait_ms=configured.incomplete_wait_ms * scale,
            )
            agent.turns.uses_audio_model = agent.turn_model is not None

    async def _guarded(self, pump: Awaitable[None]) -> None:
        """Run the session's pump; if it fails or its graph stops, the client hears of it and the session ends."""
        try:
            await pump
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("realtime session failed")
        if self._closed:
            return
        await self.send(self.out.error(
            "internal_error", "the session's pipeline stopped; the session was ended", kind="server_error",
        ))
        if self._on_failure is not None:
            self._on_failure()

    async def _run_agent(self) -> None:
        """Pull the agent's speech at real-time pace, and turn its events into server events, in order."""
        session = self._agent_session
        frame_samples = round(session.output_rate_hz * FRAME_S)
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_tick:
                late = 0
                while next_tick <= now and late < MAX_CATCH_UP_FRAMES:
                    for event in session.events.drain_nowait():  # the graph's, since the last one
                        await self._on_agent_event(event)  # (a user_turn opens the response this frame is of)
                    owner = self._response
                    frame = session.pull(frame_samples)
                    published = session.events.drain_nowait()  # what this pull did: clause starts, the end
                    if owner is not None and owner is self._response:
                        await self._send_audio(frame, session.output_rate_hz, owner)
                    for event in published:
                        await self._on_agent_event(event)
                    next_tick += FRAME_S
                    late += 1
                if next_tick <= now:  # stalled: restart the schedule rather than burst
                    next_tick = now + FRAME_S
                continue
            try:
                event = await asyncio.wait_for(session.events.get(), next_tick - now)
            except TimeoutError:
                continue
            if event is None:
                return
            await self._on_agent_event(event)

    async def _run_transcriber(self) -> None:
        """Turn the caption graph's frames into transcription events until the stream ends."""
        out = self._caption.captions_out
        while True:
            try:
                frame = await asyncio.wait_for(out.get(), FINAL_TIMEOUT_S / 2)
            except TimeoutError:
                await self._expire_awaiting()
                continue
            except Exception:
                return
            if isinstance(frame, TranscriptFrame):
                stable = frame.text if frame.is_final else " ".join(w.text for w in frame.words[: frame.committed])
                await self._on_input_event({
                    "type": "user_final" if frame.is_final else "user_partial", "text": frame.text, "stable": stable,
                    "start_s": frame.start_s, "end_s": frame.end_s,
                })
            elif isinstance(frame, ControlFrame) and frame.kind in (ControlKind.SPEECH_START, ControlKind.SPEECH_STOP):
                kind = "speech_start" if frame.kind is ControlKind.SPEECH_START else "speech_stop"
                await self._on_input_event({"type": kind, "at_s": frame.media_time_s})
            elif isinstance(frame, ErrorFrame) or (isinstance(frame, ControlFrame) and frame.kind is ControlKind.END_OF_STREAM):
                return

    # -- the user's side ---------------------------------------------------------------

    def _show_viewers(self, event: dict[str, Any]) -> None:
        """Hand the user's and the agent's words to the session's viewers."""
        if self._on_caption is not None:
            caption = caption_from_agent_event(event)
            if caption is not None:
                self._on_caption(caption)

    async def _on_agent_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "agent_done":
            self._show_viewers(event)
        if kind in ("speech_start", "speech_stop", "user_partial", "user_final"):
            await self._on_input_event(event)
        elif kind == "user_turn":
            await self._on_user_turn(event)
        elif kind == "turn_latency" and self.latency is not None:
            if event.get("reply") not in self._requested_replies:
                self.latency.observe(event, transport="realtime")
        elif kind in ("agent_text", "agent_done", "interrupted", "reply_discarded", "error"):
            await self._on_reply_event(event)

    def _final_pending(self) -> bool:
        since = self._final_due_since
        return since is not None and time.monotonic() - since < FINAL_TIMEOUT_S

    async def _expire_awaiting(self) -> None:
        """Complete committed utterances whose final never came (they had no words)."""
        now = time.monotonic()
        while self._awaiting and now - self._awaiting[0].committed_at >= FINAL_TIMEOUT_S:
            item = self._awaiting.popleft()
            await self._complete_transcription(item, item.heard())

    async def _on_input_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        self._show_viewers(event)
        vad = self.settings.turn_detection is not None
        await self._expire_awaiting()
        if kind == "speech_start":
            self._speaking = True
            if self._open is None:
                self._open = _InputItem(new_id("item"), event["at_s"] * 1000)
                if vad:
                    await self._emit(
                        "input_audio_buffer.speech_started", audio_start_ms=round(self._open.start_ms),
                        item_id=self._open.id,
                    )
        elif kind == "speech_stop":
            self._speaking = False
            spoken = self._open
            early = spoken is not None and spoken.final_end_s >= event["at_s"] - EARLY_FINAL_S
            self._final_due_since = None if early else time.monotonic()
            if self.settings.kind == "transcription" and vad and spoken is not None:
                self._open = None
                spoken.stop_s, spoken.committed_at = event["at_s"], time.monotonic()
                await self._commit_user(spoken, None, audio_end_ms=event["at_s"] * 1000, vad=True)
                if early:
                    await self._complete_transcription(spoken, spoken.heard())
                else:
                    self._awaiting.append(spoken)
        elif kind == "user_partial":
            item = self._open
            if item is not None and vad:
                item.stable = event.get("stable") or ""
                await self._transcription_delta(item)
        elif kind == "user_final":
            await self._on_final(event, vad=vad)
        self._input_changed.set()

    async def _on_final(self, event: dict[str, Any], *, vad: bool) -> None:
        """A final goes to the utterance it was spoken in: a committed one still waiting, or the open one."""
        text = (event.get("text") or "").strip()
        start_s = float(event.get("start_s", 0.0))
        end_s = float(event.get("end_s", start_s))
        owner = next((item for item in self._awaiting if start_s < item.stop_s + 0.05), None)
        if owner is None:
            self._final_due_since = None
            item = self._open
            if item is not None:
                item.finals.append(text)
                item.stable = ""
                item.final_end_s = max(item.final_end_s, end_s)
                if vad:
                    await self._transcription_delta(item)
            return
        while self._awaiting:  # those before it never got a final: they had no words
            item = self._awaiting.popleft()
            if item is owner:
                break
            await self._complete_transcription(item, item.heard())
        owner.finals.append(text)
        owner.stable = ""
        await self._transcription_delta(owner)
        await self._complete_transcription(owner, owner.heard())
        if not self._awaiting:
            self._final_due_since = None

    async def _transcription_delta(self, item: _InputItem) -> None:
        heard = item.heard()
        if heard.startswith(item.emitted) and len(heard) > len(item.emitted):
            delta, item.emitted = heard[len(item.emitted) :], heard
            await self._emit(
                "conversation.item.input_audio_transcription.delta", item_id=item.id, content_index=0, delta=delta,
            )

    async def _commit_user(self, item: _InputItem, transcript: str | None, *, audio_end_ms: float, vad: bool) -> None:
        """The user's turn (or utterance) is over: commit it as an item; ``transcript`` None while unknown."""
        if self._open is item:
            self._open = None
        if vad:
            await self._emit("input_audio_buffer.speech_stopped", audio_end_ms=round(audio_end_ms), item_id=item.id)
        previous = self.conversation.last_id()
        stored = Item(item.id, "user", transcript or "", audio=True)
        self.conversation.add(stored)
        await self._emit("input_audio_buffer.committed", item_id=item.id, previous_item_id=previous)
        await self._emit(
            "conversation.item.added", item=self.out.user_item(item.id, transcript=None, audio=True),
            previous_item_id=previous,
        )
        if transcript is not None:
            if item.emitted != transcript:
                rest = transcript[len(item.emitted) :] if transcript.startswith(item.emitted) else ""
                if rest:
                    await self._emit(
                        "conversation.item.input_audio_transcription.delta", item_id=item.id, content_index=0, delta=rest,
                    )
            await self._complete_transcription(item, transcript)

    async def _complete_transcription(self, item: _InputItem, transcript: str) -> None:
        stored = self.conversation.get(item.id)
        if stored is not None:
            stored.text = transcript
        await self._emit(
            "conversation.item.input_audio_transcription.completed", item_id=item.id, content_index=0,
            transcript=transcript, usage={"type": "duration", "seconds": 0.0},
        )
        await self._emit(
            "conversation.item.done", item=self.out.user_item(item.id, transcript=transcript, audio=True),
            previous_item_id=None,
        )

    async def _on_user_turn(self, event: dict[str, Any]) -> None:
        if self.settings.turn_detection is None:
            return  # push to talk: the client's commit ends the turn
        item = self._open or _InputItem(new_id("item"), event.get("speech_end_s", 0.0) * 1000)
        self._final_due_since = None
        await self._commit_user(item, event.get("text") or "", audio_end_ms=event.get("speech_end_s", 0.0) * 1000, vad=True)
        reply = event.get("reply")
        if reply is None and not (self.settings.turn_detection.create_response and not self.settings.speaks):
            return
        active = self._response
        if active is not None and not active.audio:  # a text reply still streaming: the new turn supersedes it
            await self._cancel_response(active, "turn_detected")
        elif active is not None:  # the agent has moved on to this turn: that reply is over
            await self._finish_response(active, "cancelled", "turn_detected")
        if reply is not None:
            response = await self._open_response(audio=True, reply=reply)
            response.user_item_id = item.id
        else:
            await self._start_response(audio=False)

    async def _maybe_respond(self) -> None:
        turn = self.settings.turn_detection
        if turn is not None and turn.create_response and self._response is None:
            await self._start_response(audio=self.settings.speaks)

    # -- responses ---------------------------------------------------------------------

    async def _start_response(self, *, audio: bool, instructions: str | None = None) -> None:
        if audio:
            agent = self._agent()
            if agent is None:
                raise RealtimeProtocolError("invalid_request", "audio replies need a realtime session")
            reply = agent.respond(instructions)
            if reply is None:
                raise RealtimeProtocolError("conversation_already_has_active_response", "a reply is still in progress")
            self._requested_replies.add(reply)
            await self._open_response(audio=True, reply=reply)
            return
        response = await self._open_response(audio=False)
        messages = self.conversation.messages()
        if instructions is not None:
            messages[0] = {"role": "system", "content": instructions}
        task = asyncio.create_task(self._run_text(response, messages), name="voxline-realtime-text")
        response.task = task
        self._text_tasks.add(task)
        task.add_done_callback(self._text_tasks.discard)

    async def _open_response(self, *, audio: bool, reply: int | None = None) -> _Response:
        item = Item(new_id("item"), "assistant", "", audio=audio, status="in_progress")
        response = _Response(new_id("resp"), item, audio, reply=reply)
        if audio:
            response.resampler = StreamResampler(self._agent_session.output_rate_hz, self.settings.output_format.rate_hz)
        self._response = response
        previous = self.conversation.add(item)
        if audio:
            self.conversation.speaking = item
        await self._emit("response.created", response=self.out.response(response.id, self.settings, status="in_progress",
                                                                          output=[], audio=audio))
        shape = self.out.assistant_item(item.id, audio=audio, text=None, status="in_progress")
        await self._emit("response.output_item.added", response_id=response.id, output_index=0, item=shape)
        await self._emit("conversation.item.added", item=shape, previous_item_id=previous)
        await self._emit("response.content_part.added", response_id=response.id, item_id=item.id, output_index=0,
                         content_index=0, part=self.out.part(audio=audio))
        return response

    async def _send_audio(self, frame: FloatAudio, rate_hz: int, response: _Response) -> None:
        if not response.audio or response.resampler is None:
            return
        if not response.audio_started:
            if not np.any(frame):
                return  # held, or not yet begun: nothing to send
            response.audio_started = True
            response.item.reply = response.reply
            ledger = self._ledger()
            response.item.audio_start = ledger.sent_samples - len(frame) if ledger is not None else 0
        response.item.audio_ms += len(frame) * 1000 / rate_hz
        out = response.resampler.process(frame)
        if len(out):
            await self._emit("response.output_audio.delta", response_id=response.id, item_id=response.item.id,
                             output_index=0, content_index=0, delta=self.settings.output_format.encode(out))

    async def _on_reply_event(self, event: dict[str, Any]) -> None:
        response = self._response
        kind = event["type"]
        if kind == "reply_discarded":
            # The user went on before the reply played: the agent puts the turn's words back
            # in front of what comes next, so its item goes and the next turn holds them all.
            if response is not None and response.reply == event.get("reply"):
                await self._finish_response(response, "cancelled", "turn_detected")
                user_item = response.user_item_id
                if user_item is not None and self.conversation.delete(user_item):
                    await self._emit("conversation.item.deleted", item_id=user_item)
            return
        if response is None or response.reply is None or response.reply != event.get("reply"):
            return
        if kind == "agent_text":
            text = event.get("text", "").strip()
            delta = text if not response.transcript else " " + text
            response.transcript += delta
            await self._emit("response.output_audio_transcript.delta", response_id=response.id,
                             item_id=response.item.id, output_index=0, content_index=0, delta=delta)
        elif kind == "error":
            response.status, response.reason = "failed", None
        elif kind == "agent_done":
            await self._finish_response(response, response.status, response.reason)
        elif kind == "interrupted":
            reason = "client_cancelled" if event.get("reason") == "cancelled" else "turn_detected"
            await self._finish_response(response, "cancelled", reason)
            if reason == "turn_detected" and response.audio_started:  # the server cut it: say where
                await self._emit("conversation.item.truncated", item_id=response.item.id, content_index=0,
                                 audio_end_ms=round(response.item.audio_ms))

    async def _finish_response(self, response: _Response, status: str, reason: str | None) -> None:
        if self._response is not response:
            return
        self._response = None
        item = response.item
        if response.audio:
            if self.conversation.speaking is item:
                self.conversation.speaking = None
            transcript = item.text if status != "completed" else (item.text or response.transcript)
            item.text = transcript
        else:
            transcript = item.text = response.transcript
        item.status = "completed" if status == "completed" else "incomplete"
        audio = response.audio
        if audio:
            await self._emit("response.output_audio.done", response_id=response.id, item_id=item.id,
                             output_index=0, content_index=0)
            await self._emit("response.output_audio_transcript.done", response_id=response.id, item_id=item.id,
                             output_index=0, content_index=0, transcript=transcript)
        else:
            await self._emit("response.output_text.done", response_id=response.id, item_id=item.id,
                             output_index=0, content_index=0, text=transcript)
        await self._emit("response.content_part.done", response_id=response.id, item_id=item.id, output_index=0,
                         content_index=0, part=self.out.part(audio=audio, text=transcript))
        shape = self.out.assistant_item(item.id, audio=audio, text=transcript, status=item.status)
        await self._emit("response.output_item.done", response_id=response.id, output_index=0, item=shape)
        await self._emit("conversation.item.done", item=shape, previous_item_id=None)
        await self._emit("response.done", response=self.out.response(
            response.id, self.settings, status=status, output=[shape], reason=reason, audio=audio,
        ))

    async def _cancel_response(self, response: _Response, reason: str) -> None:
        if response.audio:
            agent = self._agent()
            if agent is not None and agent.current_reply == response.reply:
                # Cut at what was heard (the agent writes it into the item before returning);
                # its ``interrupted`` event then finds no response of its reply and is ignored.
                await agent.interrupt("cancelled")
            await self._finish_response(response, "cancelled", reason)
            return
        task = response.task
        if task is not None and not task.done():
            task.cancel()
            await wait_for_tasks({task}, _CLOSE_TIMEOUT_S, "realtime response")
        await self._finish_response(response, "cancelled", reason)

    async def _run_text(self, response: _Response, messages: list[dict[str, str]]) -> None:
        llm = self.agent_engines.llm
        try:
            stream = llm.stream(messages, max_tokens=self.settings.reply_tokens(self.agent_engines.config.agent.max_reply_tokens))
            try:
                async for piece in stream:
                    response.transcript += piece
                    await self._emit("response.output_text.delta", response_id=response.id, item_id=response.item.id,
                                     output_index=0, content_index=0, delta=piece)
            finally:
                await stream.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine failure ends this response, not the session
            log.warning("realtime text response failed: %s", exc)
            await self._finish_response(response, "failed", None)
            return
        response.transcript = response.transcript.strip()
        await self._finish_response(response, "completed", None)

    # -- sending and closing -------------------------------------------------------------

    async def _emit(self, kind: str, **fields: Any) -> None:
        event = self.out.event(kind, **fields)
        if event is not None:
            await self.send(event)

    async def close(self) -> None:
        """Cancel the graph, the pump and any text response, and wait for them. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._pump, *self._text_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await wait_for_tasks(tasks, _CLOSE_TIMEOUT_S, "realtime session")
        graph = self._agent_session.graph if self._agent_session is not None else (
            self._caption.graph if self._caption is not None else None
        )
        if graph is not None:
            await graph.cancel()
            if self._retire is not None:
                self._retire(graph)
