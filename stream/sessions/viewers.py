"""Routes across sessions and nodes: viewers, transcripts, the watch page, placement, nodes.

- ``WS /v1/sessions/{id}/captions?from=start|now``: ``{"type": "session", ...}``, then the
  session's partials and finals (replayed first with ``from=start``, the default), then
  ``{"type": "end", "reason": "ended" | "node_lost"}`` and close 1000. Unknown id:
  error ``unknown_session``, close 4404; too many viewers or the bus away: 1013.
- ``GET /v1/sessions/{id}/transcript?format=json|srt|vtt``: the finals so far.
- ``GET /watch/{id}``: the viewer page (``clients/web/watch.html``).
- ``POST /v1/sessions`` ``{"kind": "captions"|"call"|"realtime"}``: the least-loaded
  node with headroom for that kind and the URLs to use there, or 503 + ``Retry-After``.
- ``GET /v1/nodes``: the registry's live nodes and their load (admin).

A viewer is pulled from its session's log at its own pace (no per-viewer queue, so a
slow viewer costs no memory); one that takes nothing for ``server.send_timeout_s`` is dropped
(its connection aborted: ``stalled_peers``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocket

from voxline.stream.auth import (
    AuthError,
    Need,
    check_request,
    check_websocket,
    refusal_response,
)
from voxline.stream.bounded_socket import BoundedSender, close_websocket, compact_json
from voxline.stream.sessions.log import KINDS, SESSION_ID_RE, BusUnavailable, UnknownSession
from voxline.stream.sessions.node_bus import NodeBus
from voxline.stream.sessions.subtitles import subtitles

log = logging.getLogger(__name__)

WEB_PAGE_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"
RETRY_AFTER_S = 5
TRANSCRIPT_FORMATS = ("json", "srt", "vtt")


class ViewerCount:
    """Live viewers of this node, against ``server.max_viewers``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> bool:
        """A viewer place; False at the limit."""
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def give_back(self) -> None:
        """Return a place taken by ``take``."""
        self.active -= 1


def _error(status: int, code: str, message: str, retry_after_s: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def _close_with(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    """An ``error`` event, then the close."""
    await close_websocket(websocket, close_code, message, last_message=compact_json(
        {"type": "error", "code": code, "message": message}
    ))


async def session_captions_endpoint(websocket: WebSocket) -> None:
    """``WS /v1/sessions/{id}/captions``: one viewer of one session, on any node."""
    session_id = websocket.path_params["session_id"]
    try:
        check_websocket(websocket, Need.watch(session_id))
    except AuthError as refused:
        await websocket.accept()
        await _close_with(websocket, refused.code, refused.message, refused.close_code)
        return
    await websocket.accept()
    start = websocket.query_params.get("from", "start")
    if start not in ("start", "now"):
        await _close_with(websocket, "bad_request", "'from' must be 'start' or 'now'", 4002)
        return
    bus: NodeBus = websocket.app.state.bus
    viewers: ViewerCount = websocket.app.state.viewers
    if not viewers.take():
        await _close_with(websocket, "server_busy", f"this node has its limit of {viewers.limit} viewers; retry later", 1013)
        return
    try:
        await _serve_viewer(websocket, bus, session_id, start == "start")
    finally:
        viewers.give_back()


async def _serve_viewer(websocket: WebSocket, bus: NodeBus, session_id: str, from_start: bool) -> None:
    try:
        if not SESSION_ID_RE.fullmatch(session_id):
            raise UnknownSession(session_id)
        info, live = await bus.lookup(session_id)
        events = bus.follow(info, from_start)
    except UnknownSession:
        await _close_with(websocket, "unknown_session", f"no session {session_id!r} is live or kept", 4404)
        return
    except BusUnavailable as exc:
        await _close_with(websocket, "bus_unavailable", str(exc), 1013)
        return
    sender = BoundedSender(websocket, websocket.app.state.service.config.server.send_timeout_s, "a caption viewer")
    reader = asyncio.create_task(_until_client_leaves(websocket), name="voxline-viewer-reader")
    try:
        if not await sender.send_json(info.event(live=live)):
            return
        async for event in events:
            if reader.done() or not await sender.send_text(event.text):
                return
        await sender.close(1000)
    except BusUnavailable:
        pass  # the bus went away mid-replay: returning lets the server close the socket
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def _until_client_leaves(websocket: WebSocket) -> None:
    """Read (and ignore) what a viewer sends until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def transcript_endpoint(request: Request) -> Response:
    """``GET /v1/sessions/{id}/transcript?format=json|srt|vtt``: the session's finals so far."""
    session_id = request.path_params["session_id"]
    try:
        check_request(request, Need.watch(session_id))
    except AuthError as refused:
        return refusal_response(refused)
    fmt = request.query_params.get("format", "json")
    if fmt not in TRANSCRIPT_FORMATS:
        return _error(400, "bad_request", f"format must be one of {', '.join(TRANSCRIPT_FORMATS)}")
    bus: NodeBus = request.app.state.bus
    try:
        if not SESSION_ID_RE.fullmatch(session_id):
            raise UnknownSession(session_id)
        info, live = await bus.lookup(session_id)
        finals = await bus.transcript(session_id)
    except UnknownSession:
        return _error(404, "unknown_session", f"no session {session_id!r} is live or kept")
    except BusUnavailable as exc:
        return _error(503, "bus_unavailable", str(exc), RETRY_AFTER_S)
    if fmt != "json":
        media = "text/vtt" if fmt == "vtt" else "application/x-subrip"
        return PlainTextResponse(subtitles(finals, fmt), media_type=media)
    return JSONResponse({"session": info.event(live=live), "finals": finals,
                         "text": " ".join(f["text"].strip() for f in finals if f.get("text"))})


async def watch_page(request: Request) -> Response:
    """``GET /watch/{id}``: the viewer page; its socket checks the token (``?token=``)."""
    return FileResponse(WEB_PAGE_DIR / "watch.html")


def _fits(node: dict[str, Any], kind: str) -> bool:
    if not node.get("headroom"):
        return False
    return kind == "captions" or bool(node.get("call_headroom"))


def _load(node: dict[str, Any]) -> float:
    sessions = node.get("sessions", 0) / max(1, node.get("max_sessions", 1))
    return max(sessions, float(node.get("cpu_load", 0.0)))


async def place_session_endpoint(request: Request) -> JSONResponse:
    """``POST /v1/sessions``: where a new session should go (see module doc)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return _error(400, "bad_request", "the body must be JSON, e.g. {\"kind\": \"call\"}")
    kind = body.get("kind", "captions") if isinstance(body, dict) else None
    if kind not in KINDS:
        return _error(400, "bad_request", f"kind must be one of {', '.join(KINDS)}")
    need = Need.publish() if kind == "captions" else Need.agent()
    try:
        check_request(request, need)
    except AuthError as refused:
        return refusal_response(refused)
    bus: NodeBus = request.app.state.bus
    try:
        nodes = await bus.nodes()
    except BusUnavailable:
        nodes = [{"node_id": bus.node_id, "url": bus.url, **bus.report()}]
    fitting = sorted((n for n in nodes if _fits(n, kind)), key=_load)
    if not fitting:
        return _error(503, "server_busy", f"every node is full for a {kind} session; retry later", RETRY_AFTER_S)
    node = fitting[0]
    url = str(node["url"]).rstrip("/")
    ws = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    suffix = f"?node={node['node_id']}"
    endpoints = {"captions": f"{ws}/v1/captions{suffix}", "call": f"{url}/v1/webrtc/offer{suffix}",
                 "realtime": f"{ws}/v1/realtime{suffix}"}
    return JSONResponse({"node": node["node_id"], "url": url, "kind": kind, "endpoint": endpoints[kind]})


async def nodes_endpoint(request: Request) -> JSONResponse:
    """``GET /v1/nodes``: the live nodes and their load reports (an admin token when tokens are on)."""
    try:
        check_request(request, Need.admin())
    except AuthError as refused:
        return refusal_response(refused)
    bus: NodeBus = request.app.state.bus
    try:
        nodes = await bus.nodes()
    except BusUnavailable as exc:
        return _error(503, "bus_unavailable", str(exc), RETRY_AFTER_S)
    return JSONResponse({"nodes": nodes})
