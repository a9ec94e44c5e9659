"""``WS /v1/captions``: one caption session per WebSocket connection.

The handler moves bytes only: ``CaptionProtocol`` validates, the caption graph
recognises. Two tasks per session, both owned here: this coroutine reads the client
and pushes audio into the graph (waiting when the graph is busy, so a fast client is
slowed by TCP back-pressure, never by dropped audio); a writer task sends caption
events as the graph makes them.

Endings:

- ``{"type": "end"}`` or bad input: the graph drains (finals for every word already
  accepted are sent), then bad input gets its error event, and the socket closes
  (1000, or the error's 4xxx code).
- the client closes normally: the graph drains (nothing left to send to).
- abrupt disconnect or server shutdown: the graph is cancelled.
- a stage fails: the client gets ``internal_error`` and close 4500; other sessions
  carry on.
In every case no task of the session outlives this handler.

The first message to the client is ``{"type": "session", "id": ...}``: the id viewers
watch (``/v1/sessions/{id}/captions``), taken from ``?session=`` or the token's
``publish:ID`` grant, else made fresh. Every partial and final also goes to the
session's log on the node's bus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.websockets import WebSocket

from voxline.errors import PipelineError, ProtocolError
from voxline.pipeline.frames import (
    AudioFrame,
    ControlFrame,
    ControlKind,
    ErrorFrame,
    TranscriptFrame,
)
from voxline.pipeline.recipes.captioner import CaptionGraph, build_caption_graph
from voxline.stream.admission import SessionAdmission
from voxline.stream.auth import AuthError, refuse_websocket
from voxline.stream.bounded_socket import BoundedSender
from voxline.stream.captions.protocol import (
    CaptionConfig,
    CaptionProtocol,
    EndOfAudio,
    SubtitlesRequest,
    caption_event,
    error_event,
    protocol_error,
)
from voxline.stream.sessions.log import SessionLog
from voxline.stream.sessions.node_bus import NodeBus, claim_session
from voxline.stream.sessions.subtitles import SubtitleTrack

log = logging.getLogger(__name__)

MAX_FRAME_S = 0.5
"""Audio messages longer than this are split into frames of this length (s)."""
WRITER_FINISH_S = 5.0
"""How long the writer may take to send the last captions of a drained session."""


class CaptionConnection:
    """The state of one ``/v1/captions`` connection (see module doc)."""

    def __init__(self, websocket: WebSocket, service: SessionAdmission, bus: NodeBus) -> None:
        self.websocket = websocket
        self.service = service
        self.bus = bus
        self.log: SessionLog | None = None
        self.protocol = CaptionProtocol(service.config.server.max_message_bytes)
        self.session: CaptionGraph | None = None
        self.subtitles = SubtitleTrack()
        self._sender = BoundedSender(websocket, service.config.server.send_timeout_s, "a caption client")
        self._pts_samples = 0
        self._writer: asyncio.Task[None] | None = None
        self._internal_error: str | None = None

    async def send_json(self, message: dict[str, Any]) -> bool:
        """Send one JSON text message; False (and nothing sent) when the client is gone.

        A client that takes nothing for ``server.send_timeout_s`` has stopped reading:
        its connection is dropped (``abort_peer``) and its graph cancelled, which ends
        the session (counted as disconnected) and frees its place.
        """
        if await self._sender.send_json(message):
            return True
        if self._sender.stalled and self.session is not None:
            await self.session.graph.cancel()  # unblocks a reader waiting for room in the graph
        return False

    async def close(self, code: int, reason: str = "") -> None:
        """Close the socket with ``code`` (and ``reason``, cut to fit) if it is still open."""
        await self._sender.close(code, reason)

    async def run(self) -> None:
        """Serve the connection until it ends; never raises for client behaviour."""
        service = self.service
        try:
            session_id, owner = claim_session(self.websocket)
        except AuthError as refused:
            await self.websocket.accept()
            await self.send_json(error_event(refused))
            await refuse_websocket(self.websocket, refused)
            return
        await self.websocket.accept()
        if not service.admit():
            err = protocol_error("server_busy", service.refusal)
            await self.send_json(error_event(err))
            await self.close(err.close_code, err.message)
            return
        self.log = self.bus.open("captions", owner, session_id)
        try:
            await self.send_json({"type": "session", "id": self.log.id})
            await self._serve()
        finally:
            self.log.end()
            service.release()

    async def _serve(self) -> None:
        service = self.service
        idle_s = service.config.server.idle_timeout_s
        outcome = "completed"
        client_error: ProtocolError | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout(idle_s):
                        message = await self.websocket.receive()
                except TimeoutError:
                    raise protocol_error("idle_timeout", f"no message for {idle_s:g} s") from None
                if message["type"] == "websocket.disconnect":
                    self._sender.gone = True
                    clean = message.get("code", 1000) in (1000, 1001) and not self._sender.stalled
                    outcome = "completed" if clean else "disconnected"
                    break
                if message.get("bytes") is not None:
                    await self._on_audio(self.protocol.receive_bytes(message["bytes"]))
                elif message.get("text") is not None:
                    command = self.protocol.receive_text(message["text"])
                    if isinstance(command, CaptionConfig):
                        await self._start_session()
                    elif isinstance(command, EndOfAudio):
                        break
                    elif isinstance(command, SubtitlesRequest):
                        await self.send_json({"type": "subtitles", "format": command.format, "text": self.subtitles.render(command.format)})
                if self._internal_error is not None:
                    break
        except ProtocolError as exc:
            client_error = exc
            outcome = "client_error"
        except asyncio.CancelledError:
            await self._cancel_session()
            raise
        except PipelineError:
            if self._sender.stalled:  # its graph was cancelled when the client was dropped
                outcome = "disconnected"
            else:  # the graph stopped taking audio: one of its stages failed
                self._internal_error = "the caption pipeline failed; the session was ended"
        except Exception:
            log.exception("caption connection failed")
            outcome = "failed"
            self._internal_error = "the server failed while reading this stream"
        try:
            if outcome == "disconnected":
                await self._cancel_session()
            else:
                await self._drain_session()
        finally:
            await self._cancel_session()
        await self._finish(outcome, client_error)

    async def _finish(self, outcome: str, client_error: ProtocolError | None) -> None:
        counters = self.service.counters
        if self._internal_error is not None:
            outcome = "failed"
            await self.send_json({"type": "error", "code": "internal_error", "message": self._internal_error})
            await self.close(4500, self._internal_error)
        elif client_error is not None:
            await self.send_json(error_event(client_error))
            await self.close(client_error.close_code, client_error.message)
        else:
            config = self.protocol.config
            if config is not None and config.subtitles:
                await self.send_json({"type": "subtitles", "format": config.subtitles, "text": self.subtitles.render(config.subtitles)})
            await self.close(1000)
        if outcome == "completed":
            counters.completed += 1
        elif outcome == "client_error":
            counters.client_errors += 1
        elif outcome == "disconnected":
            counters.disconnected += 1
        else:
            counters.failed += 1

    async def _start_session(self) -> None:
        engines = self.service.engines
        assert engines is not None, "the service was not started"
        self.session = build_caption_graph(engines, name="captions")
        self.service.metrics.track(self.session.graph)
        await self.session.graph.start()
        self._writer = asyncio.create_task(self._write_captions(), name="captions:writer")

    async def _on_audio(self, samples: Any) -> None:
        session = self.session
        config = self.protocol.config
        if session is None or config is None:
            raise protocol_error("config_required", "send a config message before audio")
        step = max(1, int(MAX_FRAME_S * config.sample_rate_hz))
        now = time.monotonic()
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step]
            frame = AudioFrame(samples=chunk, sample_rate_hz=config.sample_rate_hz, pts_samples=self._pts_samples, capture_time=now)
            self._pts_samples += len(chunk)
            if not session.audio_in.put_nowait(frame):
                await session.audio_in.put(frame)

    async def _write_captions(self) -> None:
        """Send every caption event the graph makes, until end of stream or failure."""
        assert self.session is not None
        out = self.session.captions_out
        counters = self.service.counters
        while True:
            try:
                frame = await out.get()
            except Exception:
                return
            if isinstance(frame, TranscriptFrame):
                event = caption_event(frame)
                if self.log is not None:
                    self.log.publish(event)
                if frame.is_final:
                    self.subtitles.add(event["start"], event["end"], event["text"])
                if await self.send_json(event):
                    if frame.is_final:
                        counters.finals_sent += 1
                    else:
                        counters.partials_sent += 1
            elif isinstance(frame, ErrorFrame):
                log.error("caption session failed: %s", frame.message)
                self._internal_error = "the caption pipeline failed; the session was ended"
                return
            elif isinstance(frame, ControlFrame) and frame.kind is ControlKind.END_OF_STREAM:
                return

    async def _drain_session(self) -> None:
        session = self.session
        if session is None:
            return
        drained = await session.graph.drain(self.service.config.server.drain_timeout_s)
        if not drained and session.graph.error is None and self._internal_error is None:
            self._internal_error = (
                f"the last captions could not be finished within {self.service.config.server.drain_timeout_s:g} s"
            )
        if self._writer is not None:
            try:
                async with asyncio.timeout(WRITER_FINISH_S):
                    await asyncio.shield(self._writer)
            except TimeoutError:
                pass
        if session.graph.error is not None and self._internal_error is None:
            self._internal_error = "the caption pipeline failed; the session was ended"

    async def _cancel_session(self) -> None:
        session = self.session
        if session is None:
            return
        await session.graph.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        self.service.metrics.retire(session.graph)


async def captions_endpoint(websocket: WebSocket) -> None:
    """Starlette endpoint for ``/v1/captions``."""
    service: SessionAdmission = websocket.app.state.service
    await CaptionConnection(websocket, service, websocket.app.state.bus).run()
