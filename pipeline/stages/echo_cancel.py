"""The echo-cancelling stage: microphone audio with the agent's own voice taken out.

Place it first on the microphone path, before VAD and ASR, so that the agent does not
hear (and interrupt) itself. Input and output: 16 kHz ``AudioFrame``s (resample other
rates before this stage); control frames are forwarded as they come, in order with the
audio around them.

The canceller is passed in: any object with ``add_reference``/``process``/``flush``
on 16 kHz float32 arrays (``voxline.models.echo.EchoCanceller``, WebRTC's AEC3), which
keeps this stage free of concrete models. The far end reaches it through
``add_reference``: whoever plays the agent's audio (the transport pulling frames from
the ``PlayoutBuffer``) calls it with each frame as it goes to the speaker, no later
than the microphone audio of the same moment enters this stage (see the canceller's
docstring for what happens when the reference is late or early).

Frame boundaries are kept: output frame *i* has the same ``pts_samples``, length,
``sample_rate_hz``, ``capture_time`` and ``turn`` as input frame *i*, and carries the
cleaned audio of those samples. The canceller works on 10 ms frames, so:

- while every input frame is a whole number of 10 ms (the pipeline's 20 ms frames),
  each output frame is ready at once, with no added latency;
- from the first frame that is not, the content runs one 10 ms frame behind the frame
  that carries it (``latency_samples`` = 160): 10 ms of silence is inserted once at
  that point, and end of stream emits one extra frame with the last 10 ms.

On top of that AEC3 delays its output by 8 ms (``AEC_ALGORITHMIC_DELAY_SAMPLES``), so
speech times downstream are that much late; no stage compensates for it.

Cost: about 0.07 ms of one core per 10 ms frame (see ``voxline.models.echo``), so it
runs inline on the event loop.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..frames import AudioFrame, ControlFrame, Frame
from ..stage import Stage

ECHO_RATE_HZ = 16000
"""The only rate the stage takes (Hz)."""
ECHO_FRAME_SAMPLES = 160
"""The canceller's frame (10 ms at 16 kHz); the unit of the stage's latency."""

FloatAudio = npt.NDArray[np.float32]


class Canceller(Protocol):
    """What the stage needs of an echo canceller (16 kHz mono float32 throughout)."""

    def add_reference(self, samples: FloatAudio) -> None:
        """Queue far-end audio: what was just played."""

    def process(self, samples: FloatAudio) -> FloatAudio:
        """Cancel echo in microphone audio; return the cleaned audio ready so far."""

    def flush(self) -> FloatAudio:
        """Return the cleaned rest of the microphone audio at the end of the stream."""


def _check_rate(rate_hz: int, what: str) -> None:
    if rate_hz != ECHO_RATE_HZ:
        raise ValueError(
            f"the echo canceller takes {ECHO_RATE_HZ} Hz {what}, got {rate_hz} Hz; "
            f"resample to {ECHO_RATE_HZ} Hz first"
        )


class EchoCancelStage(Stage):
    """Removes the agent's played audio (the reference) from a 16 kHz microphone stream."""

    kind = "echo_cancel"

    def __init__(self, canceller: Canceller, name: str = "echo_cancel") -> None:
        super().__init__(name)
        self.canceller = canceller
        self._ready = np.zeros(0, dtype=np.float32)
        self._last: AudioFrame | None = None
        self.latency_samples = 0
        """How far the content runs behind the frames that carry it (0 or 160 samples)."""

    def add_reference(self, samples: FloatAudio, sample_rate_hz: int = ECHO_RATE_HZ) -> None:
        """Hand the canceller what was just played (mono float32 at 16 kHz).

        Raises:
            ValueError: ``sample_rate_hz`` is not 16 kHz.
        """
        _check_rate(sample_rate_hz, "reference audio")
        self.canceller.add_reference(samples)

    async def process(self, frame: Frame) -> None:
        """Cancel echo in audio frames (same pts and length out); forward everything else.

        Raises:
            ValueError: an audio frame is not at 16 kHz.
        """
        if not isinstance(frame, AudioFrame):
            await self.emit(frame)
            return
        _check_rate(frame.sample_rate_hz, "audio")
        cleaned = self.canceller.process(frame.samples)
        ready = np.concatenate((self._ready, cleaned)) if len(self._ready) else cleaned
        n = len(frame.samples)
        if len(ready) < n:
            # Not enough for this frame: fall one whole canceller frame behind, once.
            pad = -(-(n - len(ready)) // ECHO_FRAME_SAMPLES) * ECHO_FRAME_SAMPLES
            ready = np.concatenate((np.zeros(pad, dtype=np.float32), ready))
            self.latency_samples += pad
        self._ready = ready[n:]
        self._last = frame
        await self.emit(AudioFrame(
            samples=np.ascontiguousarray(ready[:n], dtype=np.float32),
            sample_rate_hz=frame.sample_rate_hz, pts_samples=frame.pts_samples,
            capture_time=frame.capture_time,
        ))

    async def on_end_of_stream(self, frame: ControlFrame) -> None:
        """Emit the audio still held (one frame, if the stage runs behind), then end of stream."""
        last = self._last
        if last is not None:
            tail = self.canceller.flush()
            rest = np.concatenate((self._ready, tail)) if len(self._ready) else tail
            self._ready = np.zeros(0, dtype=np.float32)
            if len(rest):
                await self.emit(AudioFrame(
                    samples=np.ascontiguousarray(rest, dtype=np.float32),
                    sample_rate_hz=last.sample_rate_hz,
                    pts_samples=last.pts_samples + len(last.samples), capture_time=last.capture_time,
                ))
        await self.emit(frame)
