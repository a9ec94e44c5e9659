"""``WS /v1/telephony/twilio`` and ``WS /v1/telephony/telnyx``: phone calls into the voice agent.

Point a Twilio number at voxline with TwiML ``<Connect><Stream url="wss://HOST/v1/telephony/twilio"/></Connect>``
(a bidirectional stream); a Telnyx call with ``streaming_start`` (``stream_url``,
``stream_bidirectional_mode: "rtp"``, ``stream_bidirectional_codec: "PCMU"`` or
``"PCMA"``). Each connection:

1. **Authorises**: with ``telephony.twilio_auth_token`` (``VOXLINE_TWILIO_AUTH_TOKEN``)
   Twilio's ``X-Twilio-Signature`` must match (``twilio_signature``); else, with
   ``VOXLINE_SECRET``, a voxline token granting ``agent`` in ``?token=`` (put it in the
   stream URL); with neither, loopback only. Refused: close 4401 or 4403.
2. **Admits** the call: a place of ``server.max_calls`` (shared with WebRTC calls and
   Realtime sessions) and of ``server.max_sessions``. Full: close 1013.
3. Waits for the carrier's ``start`` (``telephony.start_timeout_s``), then runs a
   ``PhoneCall`` on a fresh agent session. A ``system_prompt`` custom parameter
   (``<Parameter name="system_prompt" value="..."/>``, Telnyx ``custom_parameters``)
   replaces the agent's prompt for the call.

The call's words go to the node's bus as a session of kind ``call`` (viewers and
transcripts work as for any session; ``?session=ID`` in the stream URL names it, as for
the other publishers, and a token must grant ``publish:ID`` then); its turn latencies to ``/metrics`` under
``transport="twilio"`` or ``"telnyx"``. Nothing of a call outlives its socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from starlette.websockets import WebSocket

from voxline.stream.auth import AuthError, Need, token_or_loopback_refusal
from voxline.stream.bounded_socket import close_websocket
from voxline.stream.sessions.log import caption_from_agent_event
from voxline.stream.sessions.node_bus import claim_session
from voxline.stream.telephony.media_streams import (
    CarrierProtocolError,
    MediaStreamProtocol,
    StreamStarted,
    media_stream_protocol,
)
from voxline.stream.telephony.phone_call import PhoneCall
from voxline.stream.telephony.twilio_signature import signature_valid, signed_urls
from voxline.stream.webrtc.calls import MAX_SYSTEM_PROMPT_CHARS, CallRefused, CallService

log = logging.getLogger(__name__)

MAX_FRAMES_BEFORE_START = 50
"""Frames a carrier may send before ``start`` (``connected``, stray media) before it is turned away."""


def twilio_refusal(websocket: WebSocket, auth_token: str, public_url: str) -> tuple[int, str] | None:
    """Why Twilio's upgrade is refused (close code, message), or None when its signature matches."""
    signature = websocket.headers.get("x-twilio-signature", "")
    scheme = "wss" if websocket.url.scheme in ("wss", "https") else "ws"
    forwarded = websocket.headers.get("x-forwarded-proto", "")
    if forwarded in ("https", "wss"):
        scheme = "wss"
    urls = signed_urls(public_url, scheme, websocket.headers.get("host", ""), websocket.url.path, websocket.url.query)
    if signature_valid(auth_token, signature, urls):
        return None
    if not signature:
        return 4401, "no X-Twilio-Signature: this server checks Twilio's signature (VOXLINE_TWILIO_AUTH_TOKEN)"
    return 4403, f"X-Twilio-Signature does not match {urls[0]} (set telephony.public_url to the URL Twilio uses)"


async def wait_for_start(websocket: WebSocket, protocol: MediaStreamProtocol, timeout_s: float) -> StreamStarted:
    """Read frames until the carrier's ``start``; ``CarrierProtocolError`` if it does not come (fatal)."""
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(MAX_FRAMES_BEFORE_START):
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    raise CarrierProtocolError("the carrier went before 'start'", fatal=True)
                text = message.get("text")
                if text is None:
                    log.warning("%s: a binary frame before 'start' (carriers send JSON text)", protocol.carrier)
                    continue
                try:
                    event = protocol.receive(text)
                except CarrierProtocolError as exc:
                    if exc.fatal:
                        raise
                    log.warning("%s: %s", protocol.carrier, exc.message)
                    continue
                if isinstance(event, StreamStarted):
                    return event
    except TimeoutError:
        raise CarrierProtocolError(f"no 'start' within {timeout_s:g} s", fatal=True) from None
    raise CarrierProtocolError(f"no 'start' in the first {MAX_FRAMES_BEFORE_START} frames", fatal=True)


def _agent_session(calls: CallService, carrier: str, started: StreamStarted) -> Any:
    from voxline.pipeline.recipes.agent import agent_settings, build_agent_session

    settings = agent_settings(calls.config)
    prompt = started.custom_parameters.get("system_prompt")
    if prompt:
        settings = dataclasses.replace(settings, system_prompt=prompt[:MAX_SYSTEM_PROMPT_CHARS])
    return build_agent_session(calls.engines, settings=settings, name=f"phone-{carrier}")


async def serve_phone_call(websocket: WebSocket, carrier: str) -> None:
    """Serve one carrier socket (see module doc); never raises for the carrier's behaviour."""
    state = websocket.app.state
    calls: CallService = state.calls
    telephony = calls.config.telephony
    refused: tuple[int, str] | None = None
    if carrier == "twilio" and telephony.twilio_auth_token:
        refused = twilio_refusal(websocket, telephony.twilio_auth_token, telephony.public_url)
    else:
        token_refusal = token_or_loopback_refusal(websocket, Need.agent())
        refused = (token_refusal[0], token_refusal[2]) if token_refusal is not None else None
    owner, session_id = "", websocket.query_params.get("session") or None
    if refused is None and not (carrier == "twilio" and telephony.twilio_auth_token):
        try:
            session_id, owner = claim_session(websocket)
        except AuthError as exc:
            refused = (exc.close_code, exc.message)
    if refused is not None:
        log.warning("%s stream refused: %s", carrier, refused[1])
        await close_websocket(websocket, *refused)
        return
    try:
        calls.take_call_place()
    except CallRefused as exc:
        log.warning("%s stream refused: %s", carrier, exc.message)
        await close_websocket(websocket, 1013, exc.message)
        return
    try:
        await websocket.accept()
        await _serve_admitted(websocket, carrier, calls, state.bus, owner, session_id)
    finally:
        calls.give_call_place()


async def _serve_admitted(
    websocket: WebSocket, carrier: str, calls: CallService, bus: Any, owner: str, session_id: str | None
) -> None:
    protocol = media_stream_protocol(carrier)
    try:
        started = await wait_for_start(websocket, protocol, calls.config.telephony.start_timeout_s)
    except CarrierProtocolError as exc:
        log.warning("%s stream ended before its call began: %s", carrier, exc.message)
        await close_websocket(websocket, exc.close_code, exc.message)
        return
    session = _agent_session(calls, carrier, started)
    session_log = bus.open("call", owner, session_id) if bus is not None else None

    def on_event(event: dict[str, Any]) -> None:
        calls.latency.observe(event, carrier)
        if session_log is not None:
            caption = caption_from_agent_event(event)
            if caption is not None:
                session_log.publish(caption)

    server = calls.config.server
    call = PhoneCall(
        websocket, protocol, started, session, on_event=on_event, send_timeout_s=server.send_timeout_s,
        media_timeout_s=server.call_media_timeout_s, max_message_bytes=server.max_message_bytes,
    )
    log.info("%s call %s began (session %s)", carrier, started.call_id, session_log.id if session_log else "-")
    if calls.admission is not None:
        calls.admission.metrics.track(session.graph)
    calls.phone_calls.add(call)
    calls.counters.started += 1
    began = time.monotonic()
    try:
        await call.run()
    finally:
        calls.phone_calls.discard(call)
        calls.counters.ended += 1
        if call.failure:
            calls.counters.failed += 1
        if calls.admission is not None and not session.graph.running:
            calls.admission.metrics.retire(session.graph)
        if session_log is not None:
            session_log.end()
        log.info("%s call %s ended after %.1f s%s", carrier, started.call_id, time.monotonic() - began,
                 f" ({call.failure})" if call.failure else "")


async def twilio_endpoint(websocket: WebSocket) -> None:
    """Starlette endpoint for ``/v1/telephony/twilio``."""
    await serve_phone_call(websocket, "twilio")


async def telnyx_endpoint(websocket: WebSocket) -> None:
    """Starlette endpoint for ``/v1/telephony/telnyx``."""
    await serve_phone_call(websocket, "telnyx")
