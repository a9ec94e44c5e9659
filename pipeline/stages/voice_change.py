"""The voice-change stage: each audio frame through the shared converter, in order, same length.

Frames must already be at the converter's rate (a ``ResampleStage`` goes before). The
converted frame keeps the input's ``pts_samples`` and ``capture_time``; its content is
the converter's ``latency_samples`` behind (see ``models.vc_engine``). Other frames
pass through. A failed conversion fails the stage, and with it only this session.
"""

from __future__ import annotations

from ..engines import ConversionStream
from ..frames import AudioFrame, Frame
from ..stage import Stage


class VoiceChangeStage(Stage):
    """Converts one session's audio through its ``ConversionStream`` (a ``ConverterSession``)."""

    kind = "voice_change"

    def __init__(self, converter: ConversionStream, name: str = "voice_change") -> None:
        super().__init__(name)
        self.converter = converter

    async def process(self, frame: Frame) -> None:
        """Convert audio frames (at the converter's rate); forward everything else."""
        if not isinstance(frame, AudioFrame):
            await self.emit(frame)
            return
        rate = self.converter.sample_rate_hz
        if frame.sample_rate_hz != rate:
            raise ValueError(f"the voice changer takes {rate} Hz audio, got {frame.sample_rate_hz} Hz")
        converted = await self.converter.convert(frame.samples)
        await self.emit(AudioFrame(converted, rate, frame.pts_samples, frame.capture_time))
