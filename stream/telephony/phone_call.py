"""One phone call over a carrier's media-stream WebSocket, bound to one voice-agent session.

The carrier (Twilio, Telnyx) has opened the socket and the endpoint has admitted it.
``PhoneCall.run`` reads the carrier's frames (``media_streams``) until the stream
stops or the socket goes, and owns three tasks while the call lasts:

- **Caller → agent**: each ``media`` frame is put in order (``InboundAudio``) and goes
  into the agent's graph as 8 kHz audio (the graph resamples it for the VAD and the
  recogniser). When the graph cannot keep up the audio is dropped and counted.
- **Agent → caller** (``_speak``): every 20 ms, on a real-time schedule, the agent's
  next 20 ms (``session.pull``: also the echo canceller's reference) is resampled to
  8 kHz once (a streaming resampler: no clicks at frame joins), G.711-encoded and sent
  as one ``media`` frame; silence too, so the carrier's playback clock and the agent's
  stay one. While the agent speaks a ``mark`` follows every ``MARK_EVERY_MS`` of its
  audio and one ends each stretch of speech.
- **Events** (``_forward_events``): the agent's events go to the session's captions
  (the node's bus: viewers can watch a phone call like any session) and its turn
  latencies to ``/metrics`` (``transport`` = the carrier). When the agent stops for
  the caller's voice (``agent_paused``, ``interrupted``) a ``clear`` goes out at once,
  so the carrier drops what it had queued.

What the caller heard is the carrier's word, not voxline's: the agent's playout keeps
its account in a ``PlaybackLedger`` that takes marks (``echoes_marks``), which counts
the samples pulled and the marks echoed, so an interruption cuts the history at the carrier's
acknowledged position plus the time it has played since, and a ``clear`` makes what
was still queued unheard.

A frame that breaks the protocol is logged with the call's id and skipped; one that
makes the call impossible (an audio format voxline cannot decode) ends it with close
1003. No audio from the carrier for ``media_timeout_s`` ends the call too.
``hang_up`` ends it from voxline's side: a last mark, its echo awaited (the goodbye
played), then close 1000. ``close`` is idempotent and leaves no task behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.errors import GraphClosed
from voxline.pipeline.agent.playback_ledger import PlaybackLedger
from voxline.pipeline.frames import AudioFrame
from voxline.pipeline.tasks import wait_for_tasks
from voxline.resampler import StreamResampler
from voxline.sample_fifo import SampleFifo
from voxline.stream.bounded_socket import BoundedSender
from voxline.stream.g711 import alaw_encode, ulaw_encode
from voxline.stream.telephony.inbound_audio import InboundAudio
from voxline.stream.telephony.media_streams import (
    PHONE_RATE_HZ,
    CarrierProtocolError,
    DigitPressed,
    MarkPlayed,
    MediaChunk,
    MediaStreamProtocol,
    StreamStarted,
    StreamStopped,
)

log = logging.getLogger(__name__)

FRAME_MS = 20
PHONE_FRAME_SAMPLES = PHONE_RATE_HZ * FRAME_MS // 1000
MARK_EVERY_MS = 100.0
"""While the agent speaks, a mark follows this much of its audio: the history is cut within it."""
MAX_BAD_FRAMES = 200
"""Protocol errors one call may make before it is ended (a carrier speaking something else)."""
HANG_UP_MARK_WAIT_S = 2.0
"""How long a hang-up waits for its last mark beyond the audio still queued (s)."""
_STOP_TIMEOUT_S = 5.0  # for the call's own tasks to end once cancelled
_SPEECH_LEVEL = 1e-4  # a frame with a sample above this carries the agent's voice


class PhoneCall:
    """The carrier's socket, the protocol, the agent session, and the ledger of what was heard (see module doc).

    ``session`` is an ``AgentSession`` (not started); ``on_event`` sees every agent
    event (captions, metrics). ``failure`` says why a call ended abnormally (empty for
    a hang-up by either side).
    """

    def __init__(
        self,
        websocket: WebSocket,
        protocol: MediaStreamProtocol,
        started: StreamStarted,
        session: Any,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        send_timeout_s: float = 10.0,
        media_timeout_s: float = 5.0,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        self.websocket = websocket
        self.protocol = protocol
        self.started = started
        self.session = session
        self.on_event = on_event
        self.send_timeout_s = send_timeout_s
        self.media_timeout_s = media_timeout_s
        self.max_message_bytes = max_message_bytes
        rate = session.output_rate_hz
        self.ledger = PlaybackLedger(rate, echoes_marks=True)
        session.agent.playout.use_ledger(self.ledger)
        self.inbound = InboundAudio(started.encoding)
        self._encode = ulaw_encode if started.encoding == "PCMU" else alaw_encode
        self._to_phone = StreamResampler(rate, PHONE_RATE_HZ)
        self._pending = SampleFifo(10 * PHONE_FRAME_SAMPLES)
        self._pull_samples = rate * FRAME_MS // 1000
        self._sender = BoundedSender(websocket, send_timeout_s, "a carrier")
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._last_media_at = time.monotonic()
        self._speech_frames = 0  # agent-voiced frames sent since the last mark
        self._unacked_audio = False  # agent audio sent since the last clear
        self._hang_up_mark: str | None = None
        self._hang_up_played = asyncio.Event()
        self.failure = ""
        self.frames_in = 0
        self.frames_dropped = 0
        self.bad_frames = 0
        self.clears = 0
        self.closed = asyncio.Event()

    @property
    def call_id(self) -> str:
        """The carrier's id of the call (Twilio's ``callSid``, Telnyx's ``call_control_id``)."""
        return self.started.call_id

    def _own(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=f"voxline-phone-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Serve the call until the stream stops, the socket goes or the call fails; then ``close``.

        Cancelled midway (the server stopping), it closes the call and re-raises.
        """
        try:
            await self.session.graph.start()
            self._own(self._speak(), "speak")
            self._own(self._forward_events(), "events")
            self._own(self._media_watchdog(), "watchdog")
            await self._read()
        except Exception:  # a bug of ours: this call ends (1011), the server and other calls go on
            log.exception("%s call %s failed", self.protocol.carrier, self.call_id)
            self.failure = "internal_error"
            await self._close_socket(1011, "the server failed on this call")
        finally:
            await self.close()

    async def _read(self) -> None:
        while not self._sender.gone:
            try:
                message = await self.websocket.receive()
            except (RuntimeError, WebSocketDisconnect):
                self._sender.gone = True
                return
            if message["type"] == "websocket.disconnect":
                self._sender.gone = True
                return
            text = message.get("text")
            try:
                if text is None:
                    raise CarrierProtocolError("a binary frame: carriers send JSON text frames")
                if len(text) > self.max_message_bytes:
                    raise CarrierProtocolError(f"a frame over {self.max_message_bytes} bytes")
                if self._take(self.protocol.receive(text)):
                    return
            except CarrierProtocolError as exc:
                self.bad_frames += 1
                log.warning("%s call %s: %s", self.protocol.carrier, self.call_id, exc.message)
                if exc.fatal or self.bad_frames > MAX_BAD_FRAMES:
                    self.failure = "protocol_error"
                    await self._close_socket(exc.close_code, exc.message)
                    return

    def _take(self, event: object) -> bool:
        """Act on one carrier event; True when the stream has ended."""
        if isinstance(event, MediaChunk):
            self._last_media_at = time.monotonic()
            self._hear(self.inbound.add(event))
        elif isinstance(event, MarkPlayed):
            self.ledger.echoed(event.name)
            if event.name == self._hang_up_mark:
                self._hang_up_played.set()
        elif isinstance(event, DigitPressed):
            self.session.events.publish({"type": "dtmf", "digit": event.digit, "at": time.monotonic()})
        elif isinstance(event, StreamStopped):
            log.info("%s call %s: the carrier stopped the stream", self.protocol.carrier, self.call_id)
            return True
        elif isinstance(event, StreamStarted):  # only one start: the protocol refuses a second
            raise CarrierProtocolError("a second 'start' on one stream")
        return False

    def _hear(self, samples: Any) -> None:
        if not len(samples):
            return
        frame = AudioFrame(
            samples=samples, sample_rate_hz=PHONE_RATE_HZ, pts_samples=self.inbound.samples_out - len(samples),
            capture_time=time.monotonic(),
        )
        self.frames_in += 1
        try:
            accepted = self.session.audio_in.put_nowait(frame)
        except GraphClosed:
            log.warning("%s call %s ended: its session stopped (%s)", self.protocol.carrier, self.call_id,
                        self.session.graph.error)
            self.failure = self.failure or "session_failed"
            self._sender.gone = True
            self._stop_reading()
            return
        if not accepted:
            self.frames_dropped += 1

    def _stop_reading(self) -> None:
        self._own(self._close_socket(1011, "the call's session stopped"), "close-socket")

    async def _send(self, text: str) -> bool:
        """Send one frame; a carrier that takes none for ``send_timeout_s`` is dropped. False once gone."""
        if await self._sender.send_text(text):
            return True
        if self._sender.stalled:
            self.failure = self.failure or "carrier_stalled"
        return False

    def _next_phone_frame(self) -> tuple[bytes, bool]:
        """The next 20 ms for the caller as G.711 bytes, and whether the agent's voice is in it."""
        pulled = self.session.pull(self._pull_samples)  # the playout counts it in the ledger
        self._pending.write(self._to_phone.process(pulled))
        samples = self._pending.read(PHONE_FRAME_SAMPLES)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        return self._encode(pcm), bool(np.abs(pulled).max(initial=0.0) > _SPEECH_LEVEL)

    async def _speak(self) -> None:
        """Send the agent's audio in real time (see module doc); after a stall, restart the schedule."""
        frames_per_mark = max(1, round(MARK_EVERY_MS / FRAME_MS))
        start = time.monotonic()
        sent = 0
        while not self._sender.gone:
            delay = start + sent * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > 0.1:  # stalled (a busy loop): go on from now rather than burst
                start = time.monotonic() - sent * FRAME_MS / 1000
            payload, voiced = self._next_phone_frame()
            if self._hang_up_mark is not None:
                return  # hanging up: the last mark is the last thing the carrier gets
            if not await self._send(self.protocol.media(payload)):
                return
            sent += 1
            if voiced:
                self._unacked_audio = True
                self._speech_frames += 1
            if (voiced and self._speech_frames >= frames_per_mark) or (not voiced and self._speech_frames):
                self._speech_frames = 0
                await self._send(self.protocol.mark(self.ledger.place_mark()))

    async def _clear(self) -> None:
        """The agent stopped for the caller: drop what the carrier still has queued."""
        if not self._unacked_audio:
            return
        self._unacked_audio = False
        self._speech_frames = 0
        heard = self.ledger.cleared()
        self.clears += 1
        await self._send(self.protocol.clear())
        log.debug("%s call %s: clear at %.2f s heard of %.2f s sent", self.protocol.carrier, self.call_id,
                  heard / self.ledger.rate_hz, self.ledger.sent_samples / self.ledger.rate_hz)

    async def _forward_events(self) -> None:
        async for event in self.session.events:
            if event.get("type") in ("agent_paused", "interrupted"):
                await self._clear()
            if self.on_event is not None:
                self.on_event(event)

    async def _media_watchdog(self) -> None:
        while not self._sender.gone:
            silent_for = time.monotonic() - self._last_media_at
            if silent_for > self.media_timeout_s:
                self.failure = self.failure or "peer_silent"
                log.info("%s call %s ended: no audio from the carrier for %.1f s", self.protocol.carrier,
                         self.call_id, silent_for)
                await self._close_socket(1000, "no audio from the carrier")
                return
            await asyncio.sleep(min(1.0, self.media_timeout_s / 4))

    async def hang_up(self, reason: str = "the agent ended the call") -> None:
        """End the call from voxline's side: a last mark, awaited until the audio before it played; then close."""
        if self._sender.gone or self._closing:
            return
        self._hang_up_mark = self.ledger.place_mark()
        if await self._send(self.protocol.mark(self._hang_up_mark)):
            wait_s = self.ledger.queued_s + HANG_UP_MARK_WAIT_S
            try:
                await asyncio.wait_for(self._hang_up_played.wait(), wait_s)
            except TimeoutError:
                log.info("%s call %s: the last mark was not echoed within %.1f s", self.protocol.carrier,
                         self.call_id, wait_s)
        await self._close_socket(1000, reason)

    async def _close_socket(self, code: int, reason: str) -> None:
        await self._sender.close(code, reason)

    async def close(self) -> None:
        """Stop the call's tasks, cancel the session's graph, close the socket. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._sender.gone = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await wait_for_tasks([t for t in self._tasks if t is not current], _STOP_TIMEOUT_S, "phone call")
        await self.session.graph.cancel()
        await self._close_socket(1000, "")
        order = self.inbound.order
        log.info(
            "%s call %s closed: %d audio frames in, %d dropped (the session was full), %d bad frames; "
            "chunks %d in order, %d too late, %d never came; %d marks echoed, %d clears",
            self.protocol.carrier, self.call_id, self.frames_in, self.frames_dropped, self.bad_frames,
            order.released, order.dropped_late, order.skipped, self.ledger.echoes, self.clears,
        )
        self.closed.set()
