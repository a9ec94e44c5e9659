"""The HTTP + WebSocket application: ``/healthz``, ``/metrics``, ``/v1/captions``.

``create_app(config)`` returns a Starlette app whose lifespan loads the shared engines
once (or uses ``engines`` passed in, e.g. by tests) and releases them at shutdown.
``serve(config)`` runs it on uvicorn.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from voxline import __version__
from voxline.config import Config
from voxline.pipeline.recipes.captioner import CaptionEngines

from .captions_ws import captions_endpoint
from .metrics_http import metrics_registry, render_metrics
from .service import CaptionService

WS_HARD_LIMIT_FACTOR = 4
"""uvicorn drops messages past this multiple of the protocol limit outright (close 1009);
below it, oversized messages get voxline's own error event."""


async def healthz(request: Request) -> JSONResponse:
    """Liveness and load: status, version, sessions, uptime."""
    service: CaptionService = request.app.state.service
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "sessions": service.active_sessions,
            "graphs": service.metrics.live_graphs,
            "max_sessions": service.config.server.max_sessions,
            "uptime_s": round(time.monotonic() - service.started_at, 1),
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(render_metrics(request.app.state.metrics_registry), media_type="text/plain; version=0.0.4")


def create_app(config: Config, engines: CaptionEngines | None = None) -> Starlette:
    """The voxline ASGI app; engines load at startup unless passed in."""
    service = CaptionService(config, engines)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            WebSocketRoute("/v1/captions", captions_endpoint),
        ],
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics_registry = metrics_registry(service)
    return app


def uvicorn_config(config: Config, app: Starlette) -> uvicorn.Config:
    """uvicorn settings for ``app`` from ``config`` (host, port, WebSocket limits)."""
    return uvicorn.Config(
        app,
        host=config.server.host,
        port=config.server.port,
        ws="websockets-sansio",
        ws_max_size=config.server.max_message_bytes * WS_HARD_LIMIT_FACTOR,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


def serve(config: Config) -> None:
    """Run the server until interrupted (blocking; the CLI's ``voxline serve``)."""
    app = create_app(config)
    uvicorn.Server(uvicorn_config(config, app)).run()
