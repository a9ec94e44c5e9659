"""The last stage of a live session: its audio into the session's ``LiveOutput``.

What the transport plays comes out of ``LiveOutput.read`` on the transport's clock.
Each second the stage publishes a ``vc.latency`` event (what the server adds, so a
client can see it): the converter's fixed delay, the median time from a frame's
arrival to its converted audio being ready, and what waits in the output buffer.
When the stage ends, so do the session's events.
"""

from __future__ import annotations

import statistics
import time
from collections import deque

from ..event_channel import EventChannel
from ..frames import AudioFrame, Frame
from ..live_output import LiveOutput
from ..stage import Stage

REPORT_EVERY_S = 1.0


class LiveSinkStage(Stage):
    """Writes audio frames into ``output``; forwards nothing; reports latency on ``events``."""

    kind = "live_sink"

    def __init__(
        self, output: LiveOutput, events: EventChannel, *, algorithmic_ms: float, name: str = "live_sink"
    ) -> None:
        super().__init__(name)
        self.output = output
        self.events = events
        self.algorithmic_ms = algorithmic_ms
        self._ready_ms: deque[float] = deque(maxlen=64)
        self._next_report = 0.0

    async def process(self, frame: Frame) -> None:
        """Queue audio for the transport (frames at the output's rate)."""
        if not isinstance(frame, AudioFrame):
            return
        if frame.sample_rate_hz != self.output.sample_rate_hz:
            raise ValueError(f"the live output plays {self.output.sample_rate_hz} Hz, got {frame.sample_rate_hz} Hz")
        self.output.write(frame.samples)
        now = time.monotonic()
        if frame.capture_time:
            self._ready_ms.append((now - frame.capture_time) * 1000)
        if now >= self._next_report and self._ready_ms:
            self._next_report = now + REPORT_EVERY_S
            self.events.publish({
                "type": "vc.latency",
                "algorithmic_ms": round(self.algorithmic_ms, 1),
                "processing_ms": round(statistics.median(self._ready_ms), 1),
                "buffered_ms": round(self.output.delay_s * 1000, 1),
                "dropped_ms": round(1000 * self.output.dropped_samples / self.output.sample_rate_hz, 1),
            })

    async def on_close(self) -> None:
        """The session's stream is over: end its events."""
        self.events.close()
