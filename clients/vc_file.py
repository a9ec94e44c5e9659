"""``voxline vc IN OUT``: convert a recording through the live voice-change stage.

The file goes through exactly what a call's audio goes through: 20 ms frames into a
graph with a ``VoiceChangeStage`` on a ``VoiceConverterEngine``, then the converter's
latency of silence to push the last samples out. The latency is taken off the front,
so the output has the input's length and rate and lines up with it. voxline's own
converter runs at the file's rate; a user's model at its own, with the whole file
resampled to it and back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.config import Config
from voxline.errors import VoxlineError
from voxline.models.vc_engine import VoiceConverterEngine
from voxline.models.voice_params import VoiceParams
from voxline.pipeline.frames import AudioFrame
from voxline.pipeline.graph import Graph, frames_until_end
from voxline.pipeline.recipes.voice_changer import load_converter
from voxline.pipeline.stages.voice_change import VoiceChangeStage

from .audio_files import read_audio

FloatAudio = npt.NDArray[np.float32]
FRAME_MS = 20


async def convert_through_stage(engine: VoiceConverterEngine, audio: FloatAudio, params: VoiceParams) -> FloatAudio:
    """``audio`` (at the engine's rate) converted by a one-stage graph; same length, aligned."""
    rate = engine.sample_rate_hz
    graph = Graph("vc-file")
    stage = VoiceChangeStage(engine.open(params))
    audio_in = graph.input_to(stage, maxsize=16)
    audio_out = graph.output_from(stage, maxsize=16)
    padded = np.concatenate((np.asarray(audio, np.float32), np.zeros(engine.latency_samples, np.float32)))
    step = rate * FRAME_MS // 1000

    async def feed() -> None:
        for pts in range(0, len(padded), step):
            await audio_in.put(AudioFrame(padded[pts : pts + step], rate, pts, time.monotonic()))
        await graph.drain()

    await graph.start()
    feeder = asyncio.create_task(feed(), name="vc-file:feed")
    try:
        parts = [frame.samples async for frame in frames_until_end(audio_out) if isinstance(frame, AudioFrame)]
        await feeder
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await graph.cancel()
    out = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return np.ascontiguousarray(out[engine.latency_samples : engine.latency_samples + len(audio)])


async def convert_file(in_path: str | Path, out_path: str | Path, params: VoiceParams, config: Config) -> dict[str, Any]:
    """Convert ``in_path`` into ``out_path`` (format from its extension); return a summary.

    Raises:
        AudioFileError: the input cannot be decoded.
        VoxlineError: the output cannot be written, or the converter cannot start.
    """
    import soundfile
    import soxr

    decoded = read_audio(in_path)
    vc = config.vc
    if not vc.model:  # voxline's converter runs at any rate from 8 to 48 kHz: the file's own
        vc = dataclasses.replace(vc, sample_rate_hz=min(48000, max(8000, decoded.sample_rate_hz)))
    engine = VoiceConverterEngine(load_converter(vc))
    rate = engine.sample_rate_hz
    audio = decoded.samples
    if rate != decoded.sample_rate_hz:
        audio = soxr.resample(audio, decoded.sample_rate_hz, rate).astype(np.float32)
    started = time.perf_counter()
    await engine.start()
    try:
        converted = await convert_through_stage(engine, audio, params)
    finally:
        await engine.close()
    elapsed = time.perf_counter() - started
    if rate != decoded.sample_rate_hz:
        converted = soxr.resample(converted, rate, decoded.sample_rate_hz).astype(np.float32)
    n = len(decoded.samples)
    converted = np.pad(converted[:n], (0, max(0, n - len(converted))))
    try:
        soundfile.write(str(out_path), np.clip(converted, -1.0, 1.0), decoded.sample_rate_hz)
    except (OSError, RuntimeError, TypeError, ValueError) as exc:  # soundfile: unknown format, unwritable path
        raise VoxlineError(f"cannot write {out_path}: {exc}") from exc
    return {
        "in": str(in_path), "out": str(out_path), "sample_rate_hz": decoded.sample_rate_hz,
        "duration_s": round(n / decoded.sample_rate_hz, 3), "voice": params.as_dict(),
        "converter_rate_hz": rate, "algorithmic_latency_ms": round(engine.latency_ms, 1),
        "real_time_factor": round(elapsed / max(n / decoded.sample_rate_hz, 1e-9), 4),
    }
