"""The HTTP + WebSocket application.

Routes: ``/`` (the browser call page, ``clients/web``), ``/healthz``, ``/metrics``,
``/v1/captions`` (WebSocket captions), ``/v1/realtime`` (the OpenAI-Realtime protocol,
``realtime``), ``POST /v1/webrtc/offer`` (voice calls), ``/v1/telephony/twilio`` and
``/v1/telephony/telnyx`` (phone calls from a carrier's media stream, ``telephony``),
``GET /v1/vc/voices`` (the voice changer's presets and ranges, for a client's controls),
``POST /v1/tokens`` (``auth``), and the routes across sessions and nodes
(``viewers``: ``/v1/sessions/{id}/captions``, ``/v1/sessions/{id}/transcript``,
``/watch/{id}``, ``POST /v1/sessions``, ``/v1/nodes``).

Access: with ``server.secret`` (``VOXLINE_SECRET``) every route but ``/healthz`` and the
static page files checks a token (``auth``); without one the server binds loopback only.

``create_app(config)`` returns a Starlette app whose lifespan loads the shared engines
once (or uses ``engines`` / ``agent_engines`` passed in, e.g. by tests) and releases
them at shutdown. ``launch.serve`` runs it on uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from voxline import __version__
from voxline.allocator import release_free_memory, resident_mb
from voxline.config import Config
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.pipeline.tasks import wait_for_tasks
from voxline.stream.admission import SessionAdmission
from voxline.stream.auth import (
    AccessPolicy,
    AuthError,
    Need,
    check_request,
    refusal_response,
    tokens_endpoint,
)
from voxline.stream.captions.endpoint import captions_endpoint
from voxline.stream.metrics_http import metrics_registry, render_metrics
from voxline.stream.realtime.endpoint import realtime_endpoint
from voxline.stream.sessions.node_bus import NodeBus, claim_session
from voxline.stream.sessions.viewers import (
    ViewerCount,
    nodes_endpoint,
    place_session_endpoint,
    session_captions_endpoint,
    transcript_endpoint,
    watch_page,
)
from voxline.stream.stalled_peers import TransportAccess
from voxline.stream.telephony.endpoints import telnyx_endpoint, twilio_endpoint
from voxline.stream.webrtc.calls import CallOffer, CallRefused, CallService

WEB_PAGE_DIR = Path(__file__).resolve().parent.parent / "clients" / "web"
MAX_OFFER_BYTES = 64 * 1024


def node_report(service: SessionAdmission, calls: CallService, bus: NodeBus) -> dict[str, Any]:
    """This node's load, as the registry and placement read it."""
    server = service.config.server
    calls_live = calls.active_calls
    reason = service.headroom()
    return {
        "node_id": bus.node_id,
        "sessions": service.active_sessions,
        "max_sessions": server.max_sessions,
        "calls": calls_live,
        "max_calls": server.max_calls,
        "cpu_load": round(service.cpu.value, 3),
        "max_cpu_load": server.max_cpu_load,
        "headroom": not reason,
        "call_headroom": not reason and not calls.unavailable and calls_live < server.max_calls,
        "session_ids": [log.id for log in bus.local.live_sessions()],
    }


def runtime_counts(service: SessionAdmission, calls: CallService) -> dict[str, int]:
    """What a leak would grow: live graphs (every session kind), open peer connections,
    asyncio tasks and open file descriptors of this process."""
    return {
        "graphs": service.metrics.live_graphs,
        "peer_connections": calls.open_peer_connections,
        "tasks": len(asyncio.all_tasks()),
        "open_fds": psutil.Process().num_fds(),
    }


def engine_load_mb(service: SessionAdmission, calls: CallService) -> dict[str, float]:
    """Resident memory each loaded engine added while it loaded (MB): where a node's memory went."""
    loaded = dict(service.engines.loaded_mb) if service.engines is not None else {}
    agent = calls.engines
    if agent is not None and not calls.unavailable:
        loaded.update(getattr(agent, "loaded_mb", {}))
    return loaded


async def healthz(request: Request) -> JSONResponse:
    """Liveness and load: status, version, node, sessions, leak counts, uptime (open: probes carry no token)."""
    service: SessionAdmission = request.app.state.service
    calls: CallService = request.app.state.calls
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "node_id": request.app.state.bus.node_id,
            "cpu_load": round(service.cpu.value, 3),
            "sessions": service.active_sessions,
            **runtime_counts(service, calls),
            "max_sessions": service.config.server.max_sessions,
            "calls": calls.active_calls,
            "max_calls": service.config.server.max_calls,
            "calls_available": not calls.unavailable,
            "uptime_s": round(time.monotonic() - service.started_at, 1),
            "resident_mb": round(resident_mb(), 1),
            "engine_load_mb": engine_load_mb(service, calls),
        }
    )


async def vc_voices(request: Request) -> JSONResponse:
    """``GET /v1/vc/voices``: the voice changer's presets, the ranges of its values and the default."""
    from voxline.models.voice_params import (
        FORMANT_RANGE,
        MONOTONE_RANGE_HZ,
        PRESETS,
        SEMITONES_RANGE,
    )

    vc = request.app.state.service.config.vc
    return JSONResponse({
        "presets": {name: params.as_dict() for name, params in PRESETS.items()},
        "default": vc.preset,
        "ranges": {"semitones": SEMITONES_RANGE, "formant": FORMANT_RANGE, "monotone_hz": MONOTONE_RANGE_HZ},
        "algorithmic_latency_ms": vc.latency_ms if not vc.model else None,
    })


async def webrtc_offer(request: Request) -> JSONResponse:
    """``POST /v1/webrtc/offer``: start a voice call; the answer, or a clear refusal."""
    calls: CallService = request.app.state.calls
    try:
        session_id, owner = claim_session(request)
    except AuthError as refused:
        return refusal_response(refused)
    try:
        body = await request.body()
        if len(body) > MAX_OFFER_BYTES:
            raise CallRefused(413, "bad_offer", f"the offer is over {MAX_OFFER_BYTES} bytes")
        try:
            decoded: Any = json.loads(body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
            raise CallRefused(400, "bad_offer", f"the body is not JSON: {exc}") from exc
        offer = CallOffer.parse(decoded)
        if offer.mode == "agent":
            try:
                check_request(request, Need.agent())
            except AuthError as refused:
                return refusal_response(refused)
        answer = await calls.open_call(offer, owner, session_id)
    except CallRefused as refusal:
        headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s is not None else None
        return JSONResponse(
            {"error": {"code": refusal.code, "message": refusal.message}}, status_code=refusal.status, headers=headers
        )
    return JSONResponse(answer)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition (an admin token when tokens are on)."""
    try:
        check_request(request, Need.admin())
    except AuthError as refused:
        return refusal_response(refused)
    return Response(render_metrics(request.app.state.metrics_registry), media_type="text/plain; version=0.0.4")


def create_app(
    config: Config, engines: CaptionEngines | None = None, agent_engines: Any = None, cpu_root_pid: int | None = None
) -> Starlette:
    """The voxline ASGI app; engines load at startup unless passed in.

    ``cpu_root_pid`` roots the process tree whose CPU admission counts (default: this
    process; a worker passes its front's).

    ``agent_engines`` (an ``AgentEngines``) serves voice calls with models already
    loaded; without it they load at startup beside the caption engines, unless
    ``server.max_calls`` is 0 or the ``webrtc`` extra is not installed.
    """
    service = SessionAdmission(config, engines, cpu_root_pid)
    bus = NodeBus(config, lambda: node_report(service, calls, bus))
    calls = CallService(config, agent_engines, admission=service, bus=bus)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        trimmer: asyncio.Task[None] | None = None
        try:
            await calls.start(service.engines)
            await bus.start()
            if config.server.memory_trim_s > 0:
                trimmer = asyncio.create_task(trim_memory_every(config.server.memory_trim_s), name="voxline-memory-trim")
            yield
        finally:
            if trimmer is not None:
                trimmer.cancel()
                await wait_for_tasks([trimmer], 5.0, "memory trim")
            await calls.close()
            await bus.close()
            await service.close()

    app = Starlette(
        routes=[
            Route("/", web_page),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            WebSocketRoute("/v1/captions", captions_endpoint),
            WebSocketRoute("/v1/realtime", realtime_endpoint),
            WebSocketRoute("/v1/telephony/twilio", twilio_endpoint),
            WebSocketRoute("/v1/telephony/telnyx", telnyx_endpoint),
            Route("/v1/webrtc/offer", webrtc_offer, methods=["POST"]),
            Route("/v1/vc/voices", vc_voices),
            Route("/v1/tokens", tokens_endpoint, methods=["POST"]),
            Route("/v1/sessions", place_session_endpoint, methods=["POST"]),
            WebSocketRoute("/v1/sessions/{session_id}/captions", session_captions_endpoint),
            Route("/v1/sessions/{session_id}/transcript", transcript_endpoint),
            Route("/watch/{session_id}", watch_page),
            Route("/v1/nodes", nodes_endpoint),
            Mount("/web", StaticFiles(directory=WEB_PAGE_DIR), name="web"),
        ],
        lifespan=lifespan,
        middleware=[Middleware(TransportAccess)],
    )
    app.state.service = service
    app.state.calls = calls
    app.state.bus = bus
    app.state.access = AccessPolicy(config.server.secret)
    app.state.viewers = ViewerCount(config.server.max_viewers)
    app.state.node_report = bus.report
    app.state.metrics_registry = metrics_registry(service, calls)
    return app


async def web_page(request: Request) -> Response:
    """``GET /``: the browser call page."""
    return FileResponse(WEB_PAGE_DIR / "index.html")


async def trim_memory_every(interval_s: float) -> None:
    """Hand the allocator's free pages back to the kernel every ``interval_s``, off the loop, until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(release_free_memory)
