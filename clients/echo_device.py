"""A simulated loudspeaker and microphone in one room, for echo tests and benchmarks.

``EchoDevice`` stands for the user's device while the agent talks: what the agent
plays comes back into the microphone late and quieter, mixed with the user's own
voice and a little noise. Sans-I/O and deterministic (one seed):

- ``play(samples)`` hands audio to the loudspeaker (mono float32 at ``sample_rate_hz``,
  16 kHz unless told, any length);
  it is queued and leaves the loudspeaker in real time, one sample per sample the
  microphone captures;
- ``capture(user) -> mic`` captures one span: ``user`` is what the user said meanwhile
  (any length; zeros for silence), ``mic`` the same length: the user, plus the echo of
  the loudspeaker's output ``delay_ms`` earlier, plus white noise at ``noise_dbfs``.

The echo path is ``gain`` times a short room response: a direct tap at ``delay_ms``
and ``reflections`` later taps spread over the next ``room_ms``, each quieter than the
one before (``decay`` per tap) with random signs. With ``reflections=0`` it is a pure
delay. Nothing the loudspeaker has not yet played is heard, and when nothing is queued
it plays silence, as a real sound card does.

Typical use, one 20 ms frame per tick::

    device = EchoDevice(delay_ms=120, gain=0.5)
    device.play(agent_frame)
    mic = device.capture(user_frame)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxline.sample_fifo import SampleFifo

__all__ = ["MAX_DELAY_MS", "MAX_QUEUED_MS", "SAMPLE_RATE_HZ", "EchoDevice"]

SAMPLE_RATE_HZ = 16000
"""Default rate of everything the device plays and captures (Hz)."""
MAX_DELAY_MS = 1000
"""Longest echo delay plus room response the device models (ms)."""
MAX_QUEUED_MS = 10_000
"""Most audio ``play`` may queue ahead of the loudspeaker (ms)."""

FloatAudio = npt.NDArray[np.float32]


def _mono(samples: npt.ArrayLike, what: str) -> FloatAudio:
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"the echo device takes mono {what} audio (1-D), got shape {audio.shape}")
    return audio


class EchoDevice:
    """A loudspeaker whose output returns into a microphone, ``delay_ms`` later.

    ``gain`` scales the direct echo (0.3 to 0.6 is a laptop at arm's length);
    ``reflections`` taps over ``room_ms`` after it, each ``decay`` times the one before;
    ``noise_dbfs`` is the RMS level of the microphone's white noise (None: none);
    ``seed`` fixes the room and the noise; ``sample_rate_hz`` is the rate of what is
    played and captured.
    """

    def __init__(
        self,
        *,
        delay_ms: float = 120.0,
        gain: float = 0.5,
        reflections: int = 3,
        room_ms: float = 30.0,
        decay: float = 0.5,
        noise_dbfs: float | None = -60.0,
        seed: int = 0,
        sample_rate_hz: int = SAMPLE_RATE_HZ,
    ) -> None:
        if not 0 <= delay_ms or delay_ms + room_ms > MAX_DELAY_MS:
            raise ValueError(f"delay_ms + room_ms must lie in [0, {MAX_DELAY_MS}] ms, got {delay_ms} + {room_ms}")
        if reflections < 0:
            raise ValueError(f"reflections must be >= 0, got {reflections}")
        rng = np.random.default_rng(seed)
        delay = round(delay_ms * sample_rate_hz / 1000)
        room = round(room_ms * sample_rate_hz / 1000)
        offsets = [0, *sorted(rng.choice(np.arange(1, max(room, reflections) + 1), reflections, replace=False))]
        amplitudes = [gain * decay**k * (1.0 if k == 0 else rng.choice((-1.0, 1.0))) for k in range(len(offsets))]
        self.taps: tuple[tuple[int, float], ...] = tuple(
            (delay + int(offset), float(amp)) for offset, amp in zip(offsets, amplitudes, strict=True)
        )
        """The echo path: (lag in samples, amplitude) per tap."""
        self.delay_ms = delay_ms
        self.gain = gain
        self.sample_rate_hz = sample_rate_hz
        self._history = np.zeros(max(lag for lag, _ in self.taps), dtype=np.float32)
        self._queued = SampleFifo(MAX_QUEUED_MS * sample_rate_hz // 1000)  # play() refuses more first
        self._noise_rms = 0.0 if noise_dbfs is None else 10 ** (noise_dbfs / 20)
        self._rng = rng
        self.last_echo = np.zeros(0, dtype=np.float32)
        """The echo part of the latest ``capture`` (for measuring echo return loss)."""

    def play(self, samples: npt.ArrayLike) -> None:
        """Queue audio for the loudspeaker (mono float32 at ``sample_rate_hz``).

        Raises:
            ValueError: more than ``MAX_QUEUED_MS`` would be queued.
        """
        audio = _mono(samples, "played")
        if len(self._queued) + len(audio) > MAX_QUEUED_MS * self.sample_rate_hz // 1000:
            raise ValueError(f"the echo device queues at most {MAX_QUEUED_MS} ms ahead of playout")
        self._queued.write(audio)

    def _speaker(self, n: int) -> FloatAudio:
        return self._queued.read(n)

    def capture(self, user: npt.ArrayLike) -> FloatAudio:
        """What the microphone hears while the user says ``user``; the same length."""
        voice = _mono(user, "user")
        n = len(voice)
        played = np.concatenate((self._history, self._speaker(n)))
        span = len(self._history)
        echo = np.zeros(n, dtype=np.float32)
        for lag, amp in self.taps:
            echo += np.float32(amp) * played[span - lag : span - lag + n]
        self._history = played[len(played) - span :]
        self.last_echo = echo
        mic = voice + echo
        if self._noise_rms:
            mic += (self._rng.standard_normal(n) * self._noise_rms).astype(np.float32)
        return np.clip(mic, -1.0, 1.0).astype(np.float32, copy=False)
