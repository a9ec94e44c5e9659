"""The resampling stage: any input rate in, one fixed rate out, with no clicks at joins.

``StreamResampler`` keeps its filter state across chunks, so chunk borders leave no
discontinuity, and its latency is small and fixed (1.5 ms from 48 kHz). Output pts count samples at the output rate from the first
input frame. End of stream flushes the filter's tail, so the last samples are kept.
"""

from __future__ import annotations

import numpy as np

from voxline.resampler import StreamResampler

from ..frames import AudioFrame, ControlFrame, Frame
from ..stage import Stage


class ResampleStage(Stage):
    """Converts ``AudioFrame``s to ``rate_hz``; frames already at that rate pass as they are."""

    kind = "resample"

    def __init__(self, rate_hz: int = 16000, name: str = "resample") -> None:
        super().__init__(name)
        self.rate_hz = rate_hz
        self._stream: StreamResampler | None = None
        self._in_rate = 0
        self._out_samples = 0
        self._last: AudioFrame | None = None

    async def process(self, frame: Frame) -> None:
        """Resample audio frames; forward everything else."""
        if not isinstance(frame, AudioFrame) or (frame.sample_rate_hz == self.rate_hz and self._stream is None):
            await self.emit(frame)
            return
        if self._stream is None or frame.sample_rate_hz != self._in_rate:
            if self._stream is not None:
                raise ValueError("the sample rate of a stream cannot change midway")
            self._in_rate = frame.sample_rate_hz
            self._stream = StreamResampler(self._in_rate, self.rate_hz)
        out = self._stream.process(frame.samples)
        self._last = frame
        await self._emit_audio(frame, out)

    async def _emit_audio(self, frame: AudioFrame, out: np.ndarray) -> None:
        if len(out) == 0:
            return
        resampled = AudioFrame(
            samples=np.ascontiguousarray(out, dtype=np.float32), sample_rate_hz=self.rate_hz,
            pts_samples=self._out_samples, capture_time=frame.capture_time,
        )
        self._out_samples += len(out)
        await self.emit(resampled)

    async def on_end_of_stream(self, frame: ControlFrame) -> None:
        """Flush the resampler's tail, then forward end of stream."""
        if self._stream is not None and self._last is not None:
            tail = self._stream.flush()
            await self._emit_audio(self._last, tail)
        await self.emit(frame)
