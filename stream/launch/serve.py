"""``voxline serve``: one process on uvicorn, or a front and its workers (``front``)."""

from __future__ import annotations

import uvicorn

from voxline.allocator import limit_arenas
from voxline.config import Config
from voxline.stream.app import create_app
from voxline.stream.launch.front import serve_workers
from voxline.stream.launch.uvicorn_settings import uvicorn_config


def serve(config: Config) -> None:
    """Run the server until interrupted (blocking; the CLI's ``voxline serve``).

    With ``server.workers`` > 1, a front process and that many workers (``front``).
    """
    if config.server.workers > 1:
        serve_workers(config)
        return
    limit_arenas(config.server.malloc_arenas)  # before the engines start their threads
    app = create_app(config)
    uvicorn.Server(uvicorn_config(config, app)).run()
