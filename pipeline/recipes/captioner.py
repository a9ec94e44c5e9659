"""The captioning recipe: resample → VAD → streaming ASR → (your stages) → output.

``CaptionEngines`` holds the process-wide models (one Whisper engine and one VAD
model shared by every session); ``build_caption_graph`` wires one session's graph.
Edges block when full: caption audio is never dropped, a slow consumer slows the
producer instead (for a socket, TCP back-pressure).

Extra stages (``extra_stages``) are spliced in after the ASR stage, in order; they see
every transcript and control frame before the transport does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from voxline.allocator import LoadGrowth
from voxline.config import AsrConfig, VadConfig
from voxline.models.asr import WhisperEngine
from voxline.models.vad import SileroVadModel, SileroVadStream, SpeechSegmenter

from ..edge import Edge
from ..graph import Graph
from ..stage import Stage
from ..stages.asr import AsrSettings, StreamingAsrStage
from ..stages.resample import ResampleStage
from ..stages.vad import VadStage


@dataclass(slots=True)
class CaptionEngines:
    """The models every caption session of a process shares."""

    recognizer: WhisperEngine
    vad_model: SileroVadModel
    asr: AsrConfig
    vad: VadConfig
    loaded_mb: dict[str, float] = field(default_factory=dict)
    """Resident memory each engine added while it loaded (MB), for ``/healthz``."""

    @classmethod
    async def load(cls, asr: AsrConfig | None = None, vad: VadConfig | None = None) -> CaptionEngines:
        """Load the VAD and ASR models and start the ASR worker."""
        asr = asr or AsrConfig()
        vad = vad or VadConfig()
        recognizer = WhisperEngine(
            model=asr.model,
            device=asr.device,
            compute_type=asr.compute_type or None,
            cpu_threads=asr.cpu_threads,
            workers=asr.workers,
            max_batch=asr.max_batch,
            bucket_s=asr.bucket_s,
        )
        growth = LoadGrowth()
        await recognizer.start()
        growth.took("asr")
        vad_model = SileroVadModel.shared()
        growth.took("vad")
        return cls(recognizer=recognizer, vad_model=vad_model, asr=asr, vad=vad, loaded_mb=growth.mb)

    async def close(self) -> None:
        """Stop the ASR worker. Idempotent."""
        await self.recognizer.close()


@dataclass(slots=True)
class CaptionGraph:
    """One session's graph and the two edges a transport uses."""

    graph: Graph
    audio_in: Edge
    captions_out: Edge
    asr: StreamingAsrStage


def make_vad_stage(
    engines: CaptionEngines, *, min_speech_ms: float | None = None, threshold: float | None = None
) -> VadStage:
    """A session's VAD stage on the shared Silero model, with the configured thresholds.

    ``min_speech_ms`` overrides the configured minimum (an agent reacts sooner);
    ``threshold`` the speech probability that opens speech (a Realtime client's
    ``server_vad.threshold``; the closing threshold keeps its distance below it).
    """
    vad_cfg = engines.vad
    opening = vad_cfg.threshold if threshold is None else threshold
    closing = opening * vad_cfg.neg_threshold / vad_cfg.threshold  # the configured ratio, never 0
    return VadStage(
        SileroVadStream(engines.vad_model),
        SpeechSegmenter(
            threshold=opening,
            neg_threshold=closing if threshold is not None else vad_cfg.neg_threshold,
            min_speech_ms=vad_cfg.min_speech_ms if min_speech_ms is None else min_speech_ms,
            min_silence_ms=vad_cfg.hangover_ms,
            speech_pad_ms=vad_cfg.speech_pad_ms,
        ),
    )


def make_asr_stage(
    engines: CaptionEngines, *, forward_audio: bool = False, late_tail_ms: float = 0.0
) -> StreamingAsrStage:
    """A session's streaming ASR stage on the shared recogniser, with the configured cadence.

    ``forward_audio`` passes the audio on after the transcripts' stage (an agent needs
    it for timing; a caption transport does not). ``late_tail_ms``: see ``AsrSettings``.
    """
    return StreamingAsrStage(
        engines.recognizer,
        AsrSettings(
            partial_interval_ms=engines.asr.partial_interval_ms,
            max_window_s=engines.asr.max_window_s,
            early_final_ms=engines.asr.early_final_ms,
            late_tail_ms=late_tail_ms,
            forward_audio=forward_audio,
        ),
    )


def build_caption_graph(
    engines: CaptionEngines,
    *,
    extra_stages: Sequence[Stage] = (),
    name: str = "captions",
    vad_threshold: float | None = None,
) -> CaptionGraph:
    """Wire a caption session: audio at any rate in, ``TranscriptFrame``s out (and the VAD's control frames)."""
    graph = Graph(name)
    resample = ResampleStage(16000)
    vad = make_vad_stage(engines, threshold=vad_threshold)
    asr = make_asr_stage(engines)
    audio_in = graph.input_to(resample, maxsize=64)
    graph.chain(resample, vad, asr, *extra_stages, maxsize=64)
    last = extra_stages[-1] if extra_stages else asr
    captions_out = graph.output_from(last, name="captions", maxsize=256)
    return CaptionGraph(graph=graph, audio_in=audio_in, captions_out=captions_out, asr=asr)
