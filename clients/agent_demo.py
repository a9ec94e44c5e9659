"""``voxline demo``: a spoken conversation with the agent, headless, with no audio devices.

The user's questions are synthesized with the packaged Piper voice and spoken into
the agent at real-time pace (``PacedAgentLoop``), one after the other, each after the
agent has answered the one before. Prints both sides' transcripts and each turn's
latency breakdown, writes the agent's side to a WAV file and the latency waterfall
to a PNG.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import soundfile

from voxline.config import Config
from voxline.pipeline.recipes.agent import LISTEN_RATE_HZ, AgentEngines, build_agent_session
from voxline.testing.speech_synth import synthesize

from .agent_runner import PacedAgentLoop, TurnTakingUser
from .waterfall_plot import plot_waterfall

DEFAULT_QUESTIONS = ("What is the capital of Italy?", "What language do people speak there?")


@dataclass(slots=True)
class DemoResult:
    """What a demo run produced."""

    user_text: list[str] = field(default_factory=list)
    agent_text: list[str] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    reply_wav: Path | None = None
    waterfall_png: Path | None = None


def event_printer(out: TextIO) -> Callable[[dict[str, Any]], None]:
    """An ``on_event`` callback printing both sides' words and each turn's latency to ``out``."""

    def show(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "user_turn":
            print(f"you:   {event['text']}", file=out, flush=True)
        elif kind == "agent_done" and event.get("text"):
            print(f"agent: {event['text']}", file=out, flush=True)
        elif kind == "turn_latency":
            parts = ", ".join(f"{k} {v:.0f}" for k, v in event["breakdown_ms"].items())
            print(f"       voice-to-voice {event['v2v_ms']:.0f} ms ({parts})", file=out, flush=True)
        elif kind == "anon.phrase":
            print(f"re-spoken ({event['latency_ms']:.0f} ms): {event['text']}", file=out, flush=True)
        elif kind in ("vc.ready", "vc.updated"):
            voice = ", ".join(f"{k} {v}" for k, v in event.items() if k in ("semitones", "formant", "monotone_hz"))
            print(f"voice: {voice}", file=out, flush=True)
        elif kind in ("interrupted", "error"):
            print(f"       [{kind}] {event}", file=out, flush=True)

    return show


async def run_demo(
    config: Config,
    questions: Sequence[str] = DEFAULT_QUESTIONS,
    *,
    reply_wav: str | Path | None = "reply.wav",
    waterfall_png: str | Path | None = "waterfall.png",
    echo: bool = False,
    out: TextIO = sys.stdout,
    engines: AgentEngines | None = None,
) -> DemoResult:
    """Hold the conversation; ``echo`` also feeds the agent's voice back into its microphone."""
    own_engines = engines is None
    engines = engines or await AgentEngines.load(config)
    result = DemoResult()
    try:
        session = build_agent_session(engines)
        clips = [np.concatenate([np.zeros(LISTEN_RATE_HZ // 2, np.float32), synthesize(q, LISTEN_RATE_HZ)]) for q in questions]
        user = TurnTakingUser(clips)
        echo_device = None
        if echo:
            from .echo_device import EchoDevice

            echo_device = EchoDevice(delay_ms=120, gain=0.5, seed=1)
        loop = PacedAgentLoop(session, user, echo_device=echo_device, on_event=event_printer(out))
        await session.graph.start()
        try:
            await loop.run(lambda _: user.done, max_s=30.0 * len(questions) + 10)
        finally:
            await session.graph.cancel()
        for event in loop.events:
            kind = event["type"]
            if kind == "user_turn":
                result.user_text.append(event["text"])
            elif kind == "agent_done" and event.get("text"):
                result.agent_text.append(event["text"])
            elif kind == "turn_latency":
                result.turns.append(event)
        result.events = loop.events
        if reply_wav is not None:
            result.reply_wav = Path(reply_wav)
            soundfile.write(result.reply_wav, loop.reply_audio(), session.output_rate_hz, subtype="PCM_16")
            print(f"agent audio: {result.reply_wav}", file=out)
        if waterfall_png is not None and result.turns:
            result.waterfall_png = plot_waterfall(result.turns, waterfall_png)
            print(f"latency waterfall: {result.waterfall_png}", file=out)
    finally:
        if own_engines:
            await engines.close()
    return result
