"""Run an agent session in-process at real-time pace: the loop a transport would run.

Every ``frame_ms`` (on an absolute schedule, so it never drifts or runs faster than
real time) ``PacedAgentLoop`` does what a sound card or a WebRTC peer does:

1. pulls the agent's next frame, keeps it (``played``) and hands it to ``on_played``
   (a speaker);
2. takes the user's next frame from ``source`` (a microphone, a file, a script);
3. if an ``echo_device`` is given, mixes what was just played back into that frame,
   as a loudspeaker next to a microphone would;
4. pushes the result into the session's graph, stamped with its capture time;
5. collects the session's events.

With ``record`` (the default) it keeps everything played, sent and published, for
the demo, the benchmark and the tests; ``voxline mic`` turns it off, so a call of
hours holds no growing lists. After a stall of more than ``max_lag_frames`` ticks it
skips the missed ticks instead of sending a burst faster than real time.

It is used by ``voxline demo``, the agent benchmark and the tests; ``voxline mic``
runs the same session against real devices.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from voxline.errors import PipelineError
from voxline.pipeline.frames import AudioFrame, ControlFrame, ControlKind
from voxline.pipeline.recipes.agent import LISTEN_RATE_HZ, AgentSession
from voxline.resampler import StreamResampler
from voxline.sample_fifo import SampleFifo

FloatAudio = npt.NDArray[np.float32]


class UserSource(Protocol):
    """Gives the user's next ``n`` samples at 16 kHz (silence when there is nothing to say)."""

    def __call__(self, n_samples: int, loop: PacedAgentLoop) -> FloatAudio:
        """The next frame of the user's audio."""
        ...


class EchoPath(Protocol):
    """A loudspeaker and microphone in one room (``voxline.clients.echo_device.EchoDevice``)."""

    def play(self, frame: FloatAudio) -> None:
        """The speaker plays ``frame`` (16 kHz)."""
        ...

    def capture(self, user_frame: FloatAudio) -> FloatAudio:
        """What the microphone hears: ``user_frame`` plus the room's echo of what was played."""
        ...


@dataclass(slots=True)
class PacedAgentLoop:
    """Drives one ``AgentSession`` in real time from a ``UserSource``."""

    session: AgentSession
    source: UserSource
    echo_device: EchoPath | None = None
    frame_ms: int = 20
    on_event: Callable[[dict[str, Any]], None] | None = None
    on_played: Callable[[FloatAudio], None] | None = None
    record: bool = True
    max_lag_frames: int = 3
    skipped_ticks: int = 0
    played: list[FloatAudio] = field(default_factory=list)
    played_at: list[float] = field(default_factory=list)
    sent: list[FloatAudio] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    start_time: float = 0.0
    ticks: int = 0
    _pts: int = 0
    _to_16k: StreamResampler | None = None
    _played_16k: SampleFifo = field(default_factory=lambda: SampleFifo(LISTEN_RATE_HZ))  # read each tick: ~1 frame

    @property
    def media_s(self) -> float:
        """Seconds of user audio sent so far."""
        return self._pts / LISTEN_RATE_HZ

    async def run(self, until: Callable[[PacedAgentLoop], bool], *, max_s: float = 120.0) -> None:
        """Tick until ``until(self)`` is true (checked every tick) or ``max_s`` passes.

        The graph must be started; it is not stopped here.
        """
        frame_s = self.frame_ms / 1000
        n_in = LISTEN_RATE_HZ * self.frame_ms // 1000
        n_out = self.session.output_rate_hz * self.frame_ms // 1000
        if self._to_16k is None:
            self._to_16k = StreamResampler(self.session.output_rate_hz, LISTEN_RATE_HZ)
        if not self.start_time:
            self.start_time = time.monotonic()
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            target = self.start_time + self.ticks * frame_s
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > self.max_lag_frames * frame_s:
                # The loop stalled: skip the missed ticks rather than send a burst.
                behind = int(-delay / frame_s)
                self.start_time += behind * frame_s
                self.skipped_ticks += behind
            self._tick(n_in, n_out)
            if until(self):
                return
            await asyncio.sleep(0)

    def _tick(self, n_in: int, n_out: int) -> None:
        self.ticks += 1
        played = self.session.pull(n_out)
        if self.record:
            self.played.append(played)
            self.played_at.append(time.monotonic())
        if self.on_played is not None:
            self.on_played(played)
        mic = self.source(n_in, self)
        if self.echo_device is not None and self._to_16k is not None:  # run() made the resampler
            # The resampler's output varies by a sample or two a frame; silence pads its start.
            self._played_16k.write(self._to_16k.process(played))
            self.echo_device.play(self._played_16k.read(n_in))
            mic = self.echo_device.capture(mic)
        if self.record:
            self.sent.append(mic)
        frame = AudioFrame(
            samples=mic, sample_rate_hz=LISTEN_RATE_HZ, pts_samples=self._pts, capture_time=time.monotonic()
        )
        self._pts += len(mic)
        if not self.session.audio_in.put_nowait(frame):
            raise PipelineError("the agent's input is full: the graph is not keeping up with real time")
        for event in self.session.events.drain_nowait():
            if self.record:
                self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

    def end_of_stream(self) -> None:
        """Tell the graph the user's audio has ended."""
        self.session.audio_in.put_nowait(ControlFrame(kind=ControlKind.END_OF_STREAM))

    def reply_audio(self) -> FloatAudio:
        """Everything the agent played (at ``session.output_rate_hz``), silence included."""
        return np.concatenate(self.played) if self.played else np.zeros(0, dtype=np.float32)


class TurnTakingUser:
    """A ``UserSource`` that says each clip in turn, waiting for the agent's answer between them.

    Clip ``i + 1`` starts ``gap_s`` after the agent finished answering clip ``i`` (an
    ``agent_done`` event), or after ``answer_timeout_s`` without one. ``speech_end_wall``
    holds, per clip, the wall time its last loud sample was sent: the start of the
    voice-to-voice span a listener would measure; ``speech_start_wall`` the time of its
    first loud sample (agent audio between the two talked over the user).
    """

    def __init__(self, clips: list[FloatAudio], *, gap_s: float = 0.6, answer_timeout_s: float = 45.0) -> None:
        self.clips = [np.asarray(c, dtype=np.float32) for c in clips]
        self.gap_s = gap_s
        self.answer_timeout_s = answer_timeout_s
        self.speech_end_wall: list[float] = []
        self.speech_start_wall: list[float] = []
        self._index = 0
        self._position = 0
        self._waiting_since: float | None = None
        self._done_events_seen = 0
        self._idle_since: float | None = None

    @property
    def done(self) -> bool:
        """True once every clip was said and the last one answered (or timed out)."""
        return self._index >= len(self.clips)

    def __call__(self, n_samples: int, loop: PacedAgentLoop) -> FloatAudio:
        """The next frame: the current clip, or silence while the agent answers."""
        chunk = np.zeros(n_samples, dtype=np.float32)
        if self.done:
            return chunk
        now = time.monotonic()
        if self._waiting_since is not None:
            answered = sum(e["type"] == "agent_done" for e in loop.events) > self._done_events_seen
            if answered and self._idle_since is None:
                self._idle_since = now
            timed_out = now - self._waiting_since > self.answer_timeout_s
            if not timed_out and (self._idle_since is None or now - self._idle_since < self.gap_s):
                return chunk
            self._done_events_seen = sum(e["type"] == "agent_done" for e in loop.events)
            self._waiting_since = self._idle_since = None
            self._index += 1
            self._position = 0
            if self.done:
                return chunk
        clip = self.clips[self._index]
        part = clip[self._position : self._position + n_samples]
        chunk[: len(part)] = part
        loud = np.flatnonzero(np.abs(clip) > 0.01)
        first_loud, last_loud = (int(loud[0]), int(loud[-1])) if len(loud) else (0, 0)
        if self._position <= first_loud < self._position + n_samples:
            self.speech_start_wall.append(now)
        if self._position <= last_loud < self._position + n_samples:
            self.speech_end_wall.append(now)
        self._position += n_samples
        if self._position >= len(clip):
            self._waiting_since = now
        return chunk
