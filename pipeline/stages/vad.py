"""The VAD stage: forwards audio and marks where speech starts and stops.

Input and output: 16 kHz ``AudioFrame``s (forwarded unchanged) plus ``SPEECH_START`` /
``SPEECH_STOP`` control frames inserted after the audio that decided them. Their
``media_time_s`` is where speech began (moved earlier by the pre-roll pad) or ended;
it may lie in the past, which is why the ASR stage keeps a ring of recent audio.

The detector and the segmenter are passed in (any ``SpeechProbability`` and an object
with ``push_many``/``flush`` returning start/end events), keeping this stage free of
concrete models. One 32 ms Silero window costs about 0.1 ms, so it runs inline.
"""

from __future__ import annotations

from typing import Any

from ..frames import AudioFrame, ControlFrame, ControlKind, Frame
from ..stage import Stage

VAD_RATE_HZ = 16000


class VadStage(Stage):
    """Marks speech in a 16 kHz audio stream with start/stop control frames."""

    kind = "vad"

    def __init__(self, detector: Any, segmenter: Any, name: str = "vad") -> None:
        super().__init__(name)
        self.detector = detector
        self.segmenter = segmenter
        self._turn = 0
        self.speaking = False

    async def process(self, frame: Frame) -> None:
        """Forward ``frame``; for audio, also emit the speech events it completes."""
        await self.emit(frame)
        if isinstance(frame, AudioFrame):
            if frame.sample_rate_hz != VAD_RATE_HZ:
                raise ValueError(f"the VAD stage takes {VAD_RATE_HZ} Hz audio, got {frame.sample_rate_hz} Hz")
            self._turn = frame.turn
            events = self.segmenter.push_many(self.detector.feed(frame.samples))
            for event in events:
                await self._emit_event(event)

    async def _emit_event(self, event: Any) -> None:
        if hasattr(event, "start_samples"):
            self.speaking = True
            kind, at = ControlKind.SPEECH_START, event.start_samples
        else:
            self.speaking = False
            kind, at = ControlKind.SPEECH_STOP, event.end_samples
        await self.emit(ControlFrame(turn=self._turn, kind=kind, media_time_s=at / VAD_RATE_HZ))

    async def on_end_of_stream(self, frame: ControlFrame) -> None:
        """Close speech still open at the end of the stream, then forward end of stream."""
        for event in self.segmenter.flush():
            await self._emit_event(event)
        await self.emit(frame)
