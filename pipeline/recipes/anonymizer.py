"""The anonymizer recipe: the caller's words, re-spoken in the Piper voice.

    audio in ─ resample 16 kHz ─ VAD ─ streaming ASR ─ respeak (Piper) ─► pull()

The recogniser and the VAD are the caption engines (shared); Piper is the agent's
TTS engine (shared). What the caller hears back is only Piper: their voice never
reaches the output, only their words. ``anon.phrase`` events carry each phrase's
text and its latency (see ``stages.respeak``).
"""

from __future__ import annotations

from voxline.models.tts import PiperEngine

from ..event_channel import EventChannel
from ..graph import Graph
from ..live_output import LiveOutput
from ..stages.resample import ResampleStage
from ..stages.respeak import RespeakStage
from .captioner import CaptionEngines, make_asr_stage, make_vad_stage
from .live_session import LiveSession

MAX_QUEUED_SPEECH_S = 30.0
"""Re-spoken audio the output holds for a listener who has not played it yet."""


class AnonymizerSession(LiveSession):
    """One anonymizer session: ``pull`` gives the re-spoken speech (silence between phrases)."""

    __slots__ = ()


def build_anonymizer_session(
    captions: CaptionEngines, tts: PiperEngine, *, name: str = "anonymizer"
) -> AnonymizerSession:
    """Wire one anonymizer session (not started: ``await session.graph.start()``)."""
    events = EventChannel()
    # Piper runs ahead of real time: what it made waits its turn, none of it is ever surplus.
    output = LiveOutput(tts.sample_rate_hz, target_s=0.0, max_s=MAX_QUEUED_SPEECH_S, settle_s=None)
    graph = Graph(name)
    resample = ResampleStage(16000)
    vad = make_vad_stage(captions)
    asr = make_asr_stage(captions, forward_audio=True)
    respeak = RespeakStage(tts, output, events)
    audio_in = graph.input_to(resample, maxsize=64)
    graph.chain(resample, vad, asr, respeak, maxsize=64)
    events.publish({"type": "anon.ready"})
    return AnonymizerSession(graph, audio_in, events, output)
