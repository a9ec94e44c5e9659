"""Captioning without a server: the caption graph run in this process.

``caption_locally`` feeds audio chunks into a caption graph built on engines loaded
here and yields the same caption events (dicts) a ``/v1/captions`` client would get.
End of input drains the graph, so the last words always get their final.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from voxline.config import Config
from voxline.errors import PipelineError
from voxline.pipeline.frames import AudioFrame, TranscriptFrame
from voxline.pipeline.graph import frames_until_end
from voxline.pipeline.recipes.captioner import CaptionEngines, build_caption_graph
from voxline.pipeline.stage import Stage
from voxline.stream.captions.protocol import caption_event


async def caption_locally(
    chunks: AsyncIterator[np.ndarray],
    sample_rate_hz: int,
    config: Config,
    engines: CaptionEngines | None = None,
    extra_stages: Sequence[Stage] = (),
) -> AsyncIterator[dict[str, Any]]:
    """Yield caption events for the audio in ``chunks`` (mono float32 at ``sample_rate_hz``).

    Loads engines from ``config`` unless ``engines`` is given (then they are left
    open). ``extra_stages`` are spliced in after the ASR stage. Raises ``PipelineError`` if a stage fails. Cancelled, it stops the graph.
    """
    own_engines = engines is None
    if engines is None:
        engines = await CaptionEngines.load(config.asr, config.vad)
    session = build_caption_graph(engines, extra_stages=extra_stages, name="captions")
    graph = session.graph

    async def feed() -> None:
        try:
            pts = 0
            async for chunk in chunks:
                frame = AudioFrame(
                    samples=chunk, sample_rate_hz=sample_rate_hz, pts_samples=pts, capture_time=time.monotonic()
                )
                pts += len(chunk)
                await session.audio_in.put(frame)
            if not await graph.drain(config.server.drain_timeout_s) and graph.error is None:
                raise PipelineError(f"the last captions were not finished within {config.server.drain_timeout_s:g} s")
        except BaseException:
            await graph.cancel()  # wakes the reader below
            raise

    await graph.start()
    feeder = asyncio.create_task(feed(), name="captions:feed")
    try:
        async for frame in frames_until_end(session.captions_out):
            if isinstance(frame, TranscriptFrame):
                yield caption_event(frame)
        await feeder  # re-raises why the feed stopped, if it did
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await graph.cancel()
        if own_engines:
            await engines.close()
