"""Acoustic echo cancellation: WebRTC's AEC3 (``aec-audio-processing``), one per session.

``EchoCanceller`` is sans-I/O. It is fed two 16 kHz mono float32 streams and returns
the microphone stream with the agent's own voice taken out:

- ``add_reference(samples)``: the far end, i.e. what the agent just played, any length;
- ``process(samples) -> samples``: the microphone, any length; returns the cleaned
  audio of every whole 10 ms frame buffered so far.

Both are cut into 10 ms frames (160 samples), the module's only frame size. AEC3 wants
its two streams interleaved at one clock, one far-end frame per near-end frame, so
``process`` feeds, before each microphone frame, the next 10 ms of queued reference;
when none is queued, it feeds silence (nothing was playing) so that the canceller's
clock keeps running and its estimate of the echo path stays valid.

Alignment contract: the caller adds exactly the audio that went to the speaker during
a span of wall-clock time (silence may be left out), at the latest when it passes the
microphone audio of that same span to ``process``. The canceller then sees the
reference lead the echo by the acoustic delay (loudspeaker, room, microphone and their
buffers), which AEC3 finds on its own: measured with ``EchoDevice``, echoes delayed
50 to 500 ms lose 31 to 36 dB, a 600 ms one only 5 dB (the estimator's reach).
``stream_delay_ms`` only sets where that search starts after a reset: it must not
exceed the true delay, so it defaults to 0. Measured with ``EchoDevice`` (a 50 ms
echo): a 0 or 40 ms hint removes 37 dB in the first second, a 100 ms hint only 12 dB
(200 ms: 8 dB); after a second or two all converge to the same figure.

- Added *late* (after its matching microphone audio), the reference is queued behind
  silence that was fed in its place and is consumed from then on in real time: the
  delay AEC3 sees shrinks by the lateness. That works while the lateness stays below
  the acoustic delay; beyond it the echo precedes its reference and is not removed.
- Added *early* in a burst (up to ``max_reference_ms``), the reference waits in the
  queue and is still consumed at one frame per microphone frame, so a burst added
  when its first sample starts to play is as good as real time; one added ahead of
  playout makes the delay AEC3 sees longer by that much. Measured with a 120 ms echo:
  reference added every 20 ms, 20 ms late, or in 500 ms bursts 200 ms early or
  100 ms late all removed 31 dB.
- A reference queue longer than ``max_reference_ms`` (1 s by default) drops its oldest
  samples: a caller that adds far more than is being played has broken the contract,
  and an unbounded queue would only make the misalignment grow. ``clear_reference``
  drops what is queued, for a caller that added audio which then was never played.

A partial reference frame at the head of the queue is used zero-padded (it is the
last piece of an utterance, or the caller is late by less than 10 ms).

Latency: ``process`` returns a whole number of 10 ms frames; up to 159 samples wait
for the next call (``pending_samples``), and ``flush`` returns them at the end of a
stream. Fed 20 ms chunks, it returns as many samples as it was given, at once. AEC3
itself delays the audio by ``AEC_ALGORITHMIC_DELAY_SAMPLES`` (128 samples, 8 ms,
measured with an impulse), so the cleaned stream starts with 8 ms of silence and its
content lags its position by 8 ms; the last 8 ms of a stream stay inside the module.

Noise suppression and automatic gain control are off by default: they change what the
ASR hears (its models were trained on unprocessed speech), and they are not needed to
remove echo. With echo cancellation on, WebRTC also applies its high-pass filter
(below about 80 Hz) to the microphone audio.

Cost, measured on the 2-core dev machine (Intel Xeon) over 10 s of frames:
0.07 ms of one core per 10 ms frame (far-end plus near-end, echo present, Python
included), i.e. 0.7 % of a core per session, so a stage may run it inline on its
event loop. Not thread-safe: call ``add_reference`` and ``process`` from one thread
(the session's event loop).

Needs ``aec-audio-processing`` (``pip install aec-audio-processing``). It is an sdist:
pip builds the WebRTC module from source (meson, ninja and swig come from PyPI as
build requirements; a C++17 compiler must be installed), about 2.5 minutes here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.errors import EngineError
from voxline.models.echo_coupling import EchoCouplingDetector
from voxline.sample_fifo import SampleFifo

__all__ = [
    "AEC_ALGORITHMIC_DELAY_SAMPLES",
    "AEC_FRAME_SAMPLES",
    "AEC_SAMPLE_RATE_HZ",
    "INSTALL_HINT",
    "EchoCanceller",
]

AEC_SAMPLE_RATE_HZ = 16000
"""The only rate both streams accept (Hz); resample before feeding."""
AEC_FRAME_SAMPLES = 160
"""Samples per processing frame: 10 ms at 16 kHz, the module's frame size."""
AEC_ALGORITHMIC_DELAY_SAMPLES = 128
"""How far (samples) AEC3's output lags its input (8 ms), measured with an impulse."""
MAX_REFERENCE_MS = 1000
"""Default bound of the far-end queue (ms); past it the oldest samples are dropped."""
INSTALL_HINT = "pip install aec-audio-processing"
"""What to run when the module is missing (it compiles from source)."""

FloatAudio = npt.NDArray[np.float32]

_PCM_SCALE = 32768.0
_SILENCE_PCM = bytes(2 * AEC_FRAME_SAMPLES)


def _import_processor() -> Any:
    try:
        from aec_audio_processing import AudioProcessor
    except ImportError as exc:
        raise EngineError(
            f"the echo canceller needs the WebRTC audio processing module; install it with: {INSTALL_HINT}"
        ) from exc
    except OSError as exc:  # the package's loader raises OSError for a broken shared library
        raise EngineError(f"the WebRTC audio processing module failed to load ({exc}); "
                          f"reinstall it with: {INSTALL_HINT}") from exc
    return AudioProcessor


def _to_pcm16(samples: FloatAudio) -> bytes:
    scaled = np.clip(samples * _PCM_SCALE, -_PCM_SCALE, _PCM_SCALE - 1)
    return np.rint(scaled).astype("<i2").tobytes()


def _mono(samples: npt.ArrayLike, what: str) -> FloatAudio:
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"the echo canceller takes mono {what} audio (1-D), got shape {audio.shape}")
    return audio


class EchoCanceller:
    """WebRTC AEC3 for one session: 16 kHz mono float32 in, the same without echo out.

    ``stream_delay_ms`` is a lower bound of the acoustic delay, passed to WebRTC as the
    start of its delay search (keep 0 unless the delay is known to be at least that).
    ``max_reference_ms`` bounds the far-end queue (drop-oldest). With
    ``bypass_without_echo`` (default) the microphone's own audio is passed on while
    ``EchoCouplingDetector`` finds no echo path (headphones): AEC3 would otherwise
    suppress the user during its first seconds of far-end audio. ``noise_suppression``
    and ``gain_control`` turn on WebRTC's NS (level ``ns_level``, 0-3) and digital AGC.

    Raises:
        EngineError: the ``aec-audio-processing`` package is not installed or does not
            load; the message carries the pip command.
    """

    def __init__(
        self,
        *,
        stream_delay_ms: int = 0,
        max_reference_ms: int = MAX_REFERENCE_MS,
        noise_suppression: bool = False,
        ns_level: int = 1,
        gain_control: bool = False,
        bypass_without_echo: bool = True,
    ) -> None:
        if stream_delay_ms < 0:
            raise ValueError(f"stream_delay_ms must be >= 0, got {stream_delay_ms}")
        if max_reference_ms < 10:
            raise ValueError(f"max_reference_ms must be at least one 10 ms frame, got {max_reference_ms}")
        processor_class = _import_processor()
        try:
            processor = processor_class(
                enable_aec=True, enable_ns=noise_suppression, ns_level=ns_level,
                enable_agc=gain_control, agc_mode=1, enable_vad=False,
            )
            processor.set_stream_format(AEC_SAMPLE_RATE_HZ, 1)
            processor.set_reverse_stream_format(AEC_SAMPLE_RATE_HZ, 1)
            processor.set_stream_delay(stream_delay_ms)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"cannot set up the WebRTC echo canceller: {exc}") from exc
        self._processor = processor
        self.coupling = EchoCouplingDetector(AEC_SAMPLE_RATE_HZ) if bypass_without_echo else None
        self._raw_delay = np.zeros(AEC_ALGORITHMIC_DELAY_SAMPLES, dtype=np.float32)
        self.bypassed_frames = 0
        """Frames passed through unprocessed because no echo path was found."""
        self.stream_delay_ms = stream_delay_ms
        self.max_reference_samples = max_reference_ms * AEC_SAMPLE_RATE_HZ // 1000
        self._reference = SampleFifo(self.max_reference_samples)
        self._mic = np.zeros(0, dtype=np.float32)
        self.frames_processed = 0
        """Near-end 10 ms frames processed so far."""
        self.reference_frames_used = 0
        """Of those, how many had far-end audio before them (the rest had silence)."""
        self.reference_dropped_samples = 0
        """Far-end samples dropped because the queue overflowed (a broken contract)."""

    @classmethod
    def available(cls) -> bool:
        """Whether ``aec-audio-processing`` is installed and loads (without raising)."""
        try:
            _import_processor()
        except EngineError:
            return False
        return True

    @property
    def queued_reference_samples(self) -> int:
        """Far-end samples waiting to be fed."""
        return len(self._reference)

    @property
    def pending_samples(self) -> int:
        """Microphone samples waiting for a whole 10 ms frame (0 to 159)."""
        return len(self._mic)

    def add_reference(self, samples: npt.ArrayLike) -> None:
        """Queue far-end audio (16 kHz mono float32): what the agent just played.

        See the module docstring for when to call it. Past ``max_reference_ms`` the
        oldest queued samples are dropped (counted in ``reference_dropped_samples``).
        """
        fifo = self._reference
        fifo.write(_mono(samples, "reference"))
        self.reference_dropped_samples = fifo.dropped

    def clear_reference(self) -> None:
        """Drop the queued far-end audio (it was added but will not be played)."""
        self._reference.clear()

    def process(self, samples: npt.ArrayLike) -> FloatAudio:
        """Cancel echo in microphone audio (16 kHz mono float32, any length).

        Returns the cleaned audio of every whole 10 ms frame buffered so far (float32
        in [-1, 1]); over a stream, the output runs at most 159 samples behind the
        input, and ``flush`` returns the rest.

        Raises:
            EngineError: the WebRTC module rejected a frame.
        """
        audio = _mono(samples, "microphone")
        mic = np.concatenate((self._mic, audio)) if len(self._mic) else audio
        whole = len(mic) - len(mic) % AEC_FRAME_SAMPLES
        self._mic = mic[whole:].copy()
        if whole == 0:
            return np.zeros(0, dtype=np.float32)
        pcm = _to_pcm16(mic[:whole])
        out = bytearray()
        frame_bytes = 2 * AEC_FRAME_SAMPLES
        for start in range(0, len(pcm), frame_bytes):
            out += self._process_frame(pcm[start : start + frame_bytes])
        return np.frombuffer(bytes(out), dtype="<i2").astype(np.float32) / np.float32(_PCM_SCALE)

    def flush(self) -> FloatAudio:
        """Process the last partial frame (zero-padded) and return its real samples."""
        pending = len(self._mic)
        if pending == 0:
            return np.zeros(0, dtype=np.float32)
        padded = np.zeros(AEC_FRAME_SAMPLES, dtype=np.float32)
        padded[:pending] = self._mic
        self._mic = np.zeros(0, dtype=np.float32)
        return self.process(padded)[:pending]

    def _next_reference_pcm(self) -> bytes:
        if not len(self._reference):
            return _SILENCE_PCM
        self.reference_frames_used += 1
        return _to_pcm16(self._reference.read(AEC_FRAME_SAMPLES))

    def _process_frame(self, mic_pcm: bytes) -> bytes:
        processor = self._processor
        try:
            reference_pcm = self._next_reference_pcm()
            processor.process_reverse_stream(reference_pcm)
            # AEC3 takes the delay only as a hint, but APM expects it before every frame.
            processor.set_stream_delay(self.stream_delay_ms)
            cleaned: bytes = processor.process_stream(mic_pcm)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"the WebRTC echo canceller failed: {exc}") from exc
        self.frames_processed += 1
        if self.coupling is None:
            return cleaned
        mic = np.frombuffer(mic_pcm, dtype="<i2").astype(np.float32) / np.float32(_PCM_SCALE)
        self.coupling.feed(np.frombuffer(reference_pcm, dtype="<i2").astype(np.float32) / np.float32(_PCM_SCALE), mic)
        # The raw path is delayed like the canceller's output, so switching leaves no jump.
        delayed = np.concatenate((self._raw_delay, mic))
        self._raw_delay = delayed[-AEC_ALGORITHMIC_DELAY_SAMPLES:]
        if self.coupling.bypass:
            self.bypassed_frames += 1
            return _to_pcm16(delayed[: len(mic)])
        return cleaned


