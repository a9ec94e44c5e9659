"""The voice-changer recipe: audio in → resample → streaming converter → live output.

``build_voice_changer_session`` wires one session on the process's shared
``VoiceConverterEngine``:

    audio in ─ resample to the converter's rate ─ voice change ─ live sink ─► pull()

A transport pushes the caller's frames into ``audio_in`` and calls ``pull`` every
20 ms for the converted voice (``output_rate_hz``), as it does for the agent. The
client changes the voice live with ``{"type": "vc.update", "preset": ..., "semitones":
..., "formant": ..., "monotone_hz": ...}`` (``on_client_event``): keys left out keep
their values; the session answers ``vc.updated`` with the voice now applied, or an
``error`` event naming what was wrong (the session carries on unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxline.config import VcConfig
from voxline.errors import ConfigError
from voxline.models.device import choose_device
from voxline.models.vc_engine import ConverterSession, StreamingConverter, VoiceConverterEngine
from voxline.models.voice_converter import PRESETS, PsolaConverter, VoiceParams

from ..edge import FullPolicy
from ..event_channel import EventChannel, unknown_client_event
from ..graph import Graph
from ..live_output import LiveOutput
from ..stages.live_sink import LiveSinkStage
from ..stages.resample import ResampleStage
from ..stages.voice_change import VoiceChangeStage
from .live_session import LiveSession

INPUT_BUDGET_MS = 100.0
"""A caller's frame still waiting for the converter this long after it arrived is dropped."""


def load_converter(config: VcConfig) -> StreamingConverter:
    """The converter the config names: a user's model (``vc.model``) or voxline's PSOLA."""
    device = choose_device(config.device)
    if config.model:
        from voxline.models.neural_vc import NeuralConverter

        return NeuralConverter(config.model, device=device)
    return PsolaConverter(config.sample_rate_hz, latency_ms=config.latency_ms, device=device)


def default_voice(config: VcConfig) -> VoiceParams:
    """The voice a session starts with: the config's preset."""
    if config.preset not in PRESETS:
        raise ConfigError(f"vc.preset must be one of {', '.join(PRESETS)}, not {config.preset!r}")
    return PRESETS[config.preset]


@dataclass(slots=True)
class VoiceChangerSession(LiveSession):
    """One voice-changer session: ``pull`` gives the converted voice; ``converter`` its stream."""

    converter: ConverterSession

    def on_client_event(self, event: dict[str, Any]) -> None:
        """Apply a ``vc.update`` live; anything else gets an ``error`` event."""
        if event.get("type") != "vc.update":
            self.events.publish(unknown_client_event(event, ("vc.update",)))
            return
        options = {k: v for k, v in event.items() if k != "type"}
        try:
            self.converter.params = VoiceParams.from_options(options, base=self.converter.params)
        except ConfigError as exc:
            self.events.publish({"type": "error", "code": "bad_vc_update", "message": str(exc)})
            return
        self.events.publish({"type": "vc.updated", **self.converter.params.as_dict()})


def build_voice_changer_session(
    engine: VoiceConverterEngine, params: VoiceParams | None = None, *, name: str = "voice_changer"
) -> VoiceChangerSession:
    """Wire one voice-changer session (not started: ``await session.graph.start()``)."""
    events = EventChannel()
    output = LiveOutput(engine.sample_rate_hz)
    converter = engine.open(params)
    graph = Graph(name)
    resample = ResampleStage(engine.sample_rate_hz)
    change = VoiceChangeStage(converter)
    sink = LiveSinkStage(output, events, algorithmic_ms=engine.latency_ms)
    # A live voice is worth nothing late: frames that waited past the budget are dropped
    # (counted on the edge) rather than played behind the caller.
    audio_in = graph.input_to(resample, maxsize=16, policy=FullPolicy.DROP_OLDEST, max_age_ms=INPUT_BUDGET_MS)
    graph.chain(resample, change, sink, maxsize=16)
    events.publish({"type": "vc.ready", "algorithmic_latency_ms": round(engine.latency_ms, 1),
                    **converter.params.as_dict()})
    return VoiceChangerSession(graph, audio_in, events, output, converter)
