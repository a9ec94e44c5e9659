"""The server's uvicorn settings, made in one place: a single process, each worker, the tests' servers."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette

from voxline.config import Config

WS_HARD_LIMIT_FACTOR = 4
"""uvicorn drops messages past this multiple of the protocol limit outright (it sends close
1009, but the client may see 1006: the connection is closed with its data unread, which
resets it); below it, oversized messages get voxline's own error event."""

LOOPBACK_HOST = "127.0.0.1"


def bind_host(config: Config) -> str:
    """The address to bind: the configured host with a secret, loopback without one."""
    return config.server.host if config.server.secret else LOOPBACK_HOST


def uvicorn_config(config: Config, app: Starlette) -> uvicorn.Config:
    """uvicorn settings for ``app`` from ``config`` (host, port, WebSocket limits).

    Without a secret the host is loopback whatever was asked, and this says so on stderr.
    """
    host = bind_host(config)
    if not config.server.secret:
        print(f"voxline: no VOXLINE_SECRET set: tokens are off and the server binds {host} only"
              + (f" (not {config.server.host})" if host != config.server.host else "")
              + "; set VOXLINE_SECRET to serve other hosts", file=sys.stderr)
    return uvicorn.Config(
        app,
        host=host,
        port=config.server.port,
        ws="websockets-sansio",
        ws_max_size=config.server.max_message_bytes * WS_HARD_LIMIT_FACTOR,
        ws_ping_interval=config.server.ws_ping_interval_s,
        ws_ping_timeout=config.server.ws_ping_timeout_s,
        ws_per_message_deflate=config.server.ws_compression,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
