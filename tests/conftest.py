"""Shared fixtures: the real caption engines (loaded once) and real servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from voxline.config import BusConfig, Config, ServerConfig, TelephonyConfig, load_config
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.stream.app import create_app
from voxline.stream.launch.uvicorn_settings import uvicorn_config

T = TypeVar("T")


@pytest.fixture(scope="session")
def caption_engines() -> Iterator[CaptionEngines]:
    """Whisper tiny.en and Silero VAD from their pip packages, shared by all tests."""
    config = load_config(env={})
    engines = asyncio.run(CaptionEngines.load(config.asr, config.vad))
    yield engines
    asyncio.run(engines.close())


@pytest.fixture(scope="module")
def agent_engines(caption_engines: CaptionEngines) -> Iterator[AgentEngines]:
    """The embedded LLM and Piper beside the shared caption engines (replies kept short)."""
    from voxline.models.tts import PiperEngine
    from voxline.pipeline.recipes.agent import load_chat_engine, load_turn_model

    config = load_config(env={}, overrides={"agent": {"max_reply_tokens": 40}})

    async def load() -> AgentEngines:
        llm = load_chat_engine(config)
        await llm.start()
        tts = PiperEngine()
        await tts.start()
        return AgentEngines(
            captions=caption_engines, llm=llm, tts=tts, config=config, turn_model=load_turn_model(config)
        )

    engines = asyncio.run(load())
    yield engines

    async def close() -> None:
        await engines.tts.close()
        await engines.llm.close()

    asyncio.run(close())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class ServedApp:
    """A server running in its own thread: its ws:// base URL, its app, and the event loop it runs on."""

    url: str
    app: Starlette
    loop: asyncio.AbstractEventLoop

    async def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coroutine`` on the server's loop (its objects live there) and await its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)


@contextlib.contextmanager
def running_app(
    engines: CaptionEngines, agent_engines: AgentEngines | None = None, bus: BusConfig | None = None,
    telephony: TelephonyConfig | None = None, **server: object,
) -> Iterator[ServedApp]:
    """A real voxline server on a loopback port, in its own thread (see ``running_server``)."""
    base = load_config(env={})
    settings: dict[str, object] = {
        "port": free_port(), "max_calls": 4 if agent_engines else 0, "max_cpu_load": 1.0, **server,
    }
    config = Config(
        server=ServerConfig(**settings),  # type: ignore[arg-type]
        bus=bus or BusConfig(),
        telephony=telephony or TelephonyConfig(),
        asr=base.asr, vad=base.vad,
        agent=agent_engines.config.agent if agent_engines else base.agent,
    )
    app = create_app(config, engines=engines, agent_engines=agent_engines)
    server_obj = uvicorn.Server(uvicorn_config(config, app))
    loops: list[asyncio.AbstractEventLoop] = []

    def serve() -> None:
        with asyncio.Runner() as runner:  # as uvicorn's own run: tasks, generators, executor shut down after
            loops.append(runner.get_loop())
            runner.run(server_obj.serve())

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server_obj.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield ServedApp(f"ws://127.0.0.1:{config.server.port}", app, loops[0])
    finally:
        server_obj.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def running_server(
    engines: CaptionEngines, agent_engines: AgentEngines | None = None, bus: BusConfig | None = None,
    telephony: TelephonyConfig | None = None, **server: object,
) -> Iterator[str]:
    """A real voxline server on a loopback port, in its own thread; yields its ws:// base URL.

    With ``agent_engines`` it serves voice calls too (``http://`` + the same host:port);
    without, calls are off (``max_calls = 0``) unless ``server`` says otherwise. The CPU
    load check is off (tests load the machine themselves) unless ``server`` sets it.
    """
    with running_app(engines, agent_engines, bus, telephony, **server) as served:
        yield served.url


@pytest.fixture(scope="module")
def server_url(caption_engines: CaptionEngines) -> Iterator[str]:
    """A server shared by the tests of one module."""
    with running_server(caption_engines, max_message_bytes=64000, idle_timeout_s=5.0) as url:
        yield url


def http(url: str) -> str:
    """The http:// form of a ws:// base URL."""
    return url.replace("ws://", "http://", 1)


def get(url: str, path: str) -> httpx.Response:
    """A plain HTTP GET against the test server."""
    return httpx.get(http(url) + path, timeout=10)
