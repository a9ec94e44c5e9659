"""``WS /v1/realtime``: the OpenAI-Realtime protocol over a WebSocket, one session per connection.

The official ``openai`` SDK connects here unmodified (``AsyncOpenAI(base_url=
"http://HOST:PORT/v1", websocket_base_url="ws://HOST:PORT/v1").realtime.connect(
model=...)``); so does any client of the raw protocol. The connection:

1. **Authorises** the ``Authorization: Bearer KEY`` header (or ``?api_key=``, for
   browsers). With ``VOXLINE_SECRET`` set, the key must be a voxline token (``auth``)
   granting ``agent`` (``publish:*`` for ``?intent=transcription``); with none, any key
   is accepted, from loopback only. A refusal is an ``error`` event and close 4401
   (bad or expired token) or 4403 (a grant missing, or not loopback).
2. **Admits** the session: every socket holds a session place (``server.max_sessions``);
   an agent session also holds one of ``server.max_calls``, shared with the WebRTC
   calls. Past either: an ``error`` event and close 1013 (try again later).
3. Picks the **dialect**: beta when the client sent ``OpenAI-Beta: realtime=v1``, GA
   otherwise; the **kind**: transcription for ``?intent=transcription``, else realtime
   (``session.update`` may change it before any audio).
4. Sends ``session.created`` at once, then reads client events until the client goes:
   each goes to ``RealtimeSession.handle``. Malformed JSON, an unknown event, a bad
   field, bad base64 or audio of the wrong size get an ``error`` event carrying the
   offending ``event_id``; the session carries on.

Sends are serialised and bounded in time (``server.send_timeout_s``): a client that
stops reading is dropped (its connection aborted), not buffered for. On any ending the session is closed: no task,
graph or reservation outlives the connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket

from voxline.stream.admission import SessionAdmission
from voxline.stream.auth import Need, token_or_loopback_refusal
from voxline.stream.bounded_socket import BoundedSender
from voxline.stream.realtime.protocol import (
    RealtimeProtocolError,
    ServerEvents,
    SessionSettings,
    parse_client_event,
)
from voxline.stream.realtime.session import RealtimeSession
from voxline.stream.sessions.log import SessionLog
from voxline.stream.sessions.node_bus import NodeBus
from voxline.stream.webrtc.calls import CallRefused, CallService

log = logging.getLogger(__name__)


class RealtimeConnection:
    """The state of one ``/v1/realtime`` connection (see module doc)."""

    def __init__(self, websocket: WebSocket, service: SessionAdmission, calls: CallService, bus: NodeBus) -> None:
        self.websocket = websocket
        self.bus = bus
        self.log: SessionLog | None = None
        self.service = service
        self.calls = calls
        self.beta = websocket.headers.get("openai-beta", "").replace(" ", "") == "realtime=v1"
        self.events = ServerEvents(beta=self.beta)
        self._sender = BoundedSender(websocket, service.config.server.send_timeout_s, "a realtime client")
        self._holds_call = False
        self._reader: asyncio.Task[Any] | None = None
        self._failed = False
        self.session: RealtimeSession | None = None

    async def send(self, event: dict[str, Any]) -> None:
        """Send one server event; a client that cannot take it within ``server.send_timeout_s`` is dropped."""
        if await self._sender.send_json(event) or not self._sender.stalled:
            return
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()  # it is waiting on a client that no longer reads

    async def _refuse(self, close_code: int, code: str, message: str) -> None:
        await self.send(self.events.error(code, message))
        await self._sender.close(close_code, message)

    def _end_after_failure(self) -> None:
        """The session's pipeline failed (it told the client): stop reading, so the connection closes."""
        self._failed = True
        if self._reader is not None:
            self._reader.cancel()

    def _hold_agent_place(self, wanted: bool) -> None:
        """Take or give back a place on the agent engines as the session's kind changes."""
        if wanted and not self._holds_call:
            try:
                self.calls.reserve()
            except CallRefused as exc:
                raise RealtimeProtocolError(exc.code, exc.message, "session.type") from None
            self._holds_call = True
        elif not wanted and self._holds_call:
            self.calls.release()
            self._holds_call = False

    async def run(self) -> None:
        """Serve the connection until it ends; never raises for client behaviour."""
        await self.websocket.accept()
        transcription = self.websocket.query_params.get("intent") == "transcription"
        refused = token_or_loopback_refusal(self.websocket, Need.publish() if transcription else Need.agent())
        if refused is not None:
            await self._refuse(*refused)
            return
        if not self.service.admit():
            await self._refuse(1013, "server_busy", self.service.refusal)
            return
        try:
            await self._serve()
        finally:
            if self.log is not None:
                self.log.end()
            self.service.release()
            self._hold_agent_place(False)

    def _publish(self, caption: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.publish(caption)

    async def _serve(self) -> None:
        query = self.websocket.query_params
        kind = "transcription" if query.get("intent") == "transcription" else "realtime"
        if kind == "realtime":
            try:
                self._hold_agent_place(True)
            except RealtimeProtocolError as exc:
                if exc.code == "server_busy":
                    await self._refuse(1013, exc.code, exc.message)
                    return
                # calls are off on this server: the session works once it becomes a transcription
        agent_engines = self.calls.engines if not self.calls.unavailable else None
        prompt = agent_engines.config.agent.system_prompt if agent_engines is not None else ""
        settings = SessionSettings(kind=kind, model=query.get("model") or "voxline", instructions=prompt)
        self.session = RealtimeSession(
            settings, self.events, self.send,
            caption_engines=self.service.engines, agent_engines=agent_engines,
            latency=self.calls.latency, track_graph=self.service.metrics.track, retire_graph=self.service.metrics.retire,
            hold_agent=self._hold_agent_place, on_failure=self._end_after_failure, on_caption=self._publish,
        )
        self.log = self.bus.open("realtime", session_id=self.session.id)
        await self.send(self.events.session("session.created", settings, self.session.id))
        self._reader = asyncio.current_task()
        try:
            await self._read()
        except asyncio.CancelledError:
            if not (self._sender.gone or self._failed):
                raise  # the server is stopping
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # we cancelled it ourselves, for a client that stopped reading
        finally:
            self._reader = None
            await self.session.close()
            await self._sender.close(1011 if self._failed else 1000)

    async def _read(self) -> None:
        assert self.session is not None
        limit = self.service.config.server.max_message_bytes
        while not self._sender.gone:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._sender.gone = True
                return
            text = message.get("text")
            event_id = None
            try:
                if text is None:
                    raise RealtimeProtocolError("invalid_event", "client events are JSON text messages, not binary")
                if len(text) > limit:
                    raise RealtimeProtocolError("message_too_large", f"a client event may be at most {limit} bytes")
                event = parse_client_event(text)
                event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
                await self.session.handle(event)
            except RealtimeProtocolError as exc:
                await self.send(self.events.error(exc.code, exc.message, param=exc.param, event_id=event_id))
            except Exception:
                log.exception("realtime session failed on a client event")
                await self.send(self.events.error(
                    "internal_error", "the server failed on this event; the session was ended", event_id=event_id,
                    kind="server_error",
                ))
                self._failed = True
                return


async def realtime_endpoint(websocket: WebSocket) -> None:
    """Starlette endpoint for ``/v1/realtime``."""
    state = websocket.app.state
    await RealtimeConnection(websocket, state.service, state.calls, state.bus).run()
