"""One scripted conversation with a real agent session, for the end-to-end agent tests."""

from __future__ import annotations

from typing import Any

from voxline.clients.agent_runner import PacedAgentLoop
from voxline.clients.echo_device import EchoDevice
from voxline.pipeline.recipes.agent import AgentEngines, AgentSession, build_agent_session


async def converse(
    engines: AgentEngines, user: Any, *, echo: EchoDevice | None = None, max_s: float = 60.0
) -> tuple[PacedAgentLoop, AgentSession]:
    """Run ``user`` against a fresh session in real time until it is done (or ``max_s``)."""
    session = build_agent_session(engines)
    loop = PacedAgentLoop(session, user, echo_device=echo)
    await session.graph.start()
    try:
        await loop.run(lambda _: user.done, max_s=max_s)
    finally:
        await session.graph.cancel()
    return loop, session
