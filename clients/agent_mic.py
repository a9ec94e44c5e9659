"""``voxline mic``: talk to the agent through this computer's microphone and speakers.

Without ``--url`` the agent runs in this process; ``PacedAgentLoop`` paces it every
20 ms. With ``--url`` (``run_mic_call``) the agent runs on a voxline server and this
process is a WebRTC peer (``CallClient``): the microphone goes out at 48 kHz, the
agent's audio comes back at 48 kHz, and echo is removed on the server, whose
reference is what it sent. Either way PortAudio's threads meet asyncio through two
small thread-safe buffers:

- ``SampleRing`` for the microphone: the input callback appends, the loop takes
  exactly one frame per tick (silence on an underrun, the oldest audio dropped when
  more than ``max_s`` piles up, so latency cannot grow);
- another ``SampleRing`` for the speaker: the loop appends each frame the agent
  played, the output callback takes what the sound card asks for.

The echo canceller is on (config ``agent.echo_cancel``): on a laptop's speakers the
agent hears itself, and the canceller, whose reference is exactly what was handed to
the speaker, removes it. Headphones work too.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from voxline.config import Config
from voxline.errors import VoxlineError
from voxline.pipeline.recipes.agent import LISTEN_RATE_HZ, AgentEngines, build_agent_session
from voxline.sample_fifo import SampleFifo

from .agent_demo import event_printer
from .agent_runner import PacedAgentLoop

FloatAudio = npt.NDArray[np.float32]


class SampleRing:
    """A thread-safe ``SampleFifo`` holding at most ``max_s`` seconds (oldest dropped)."""

    def __init__(self, sample_rate_hz: int, max_s: float = 0.5) -> None:
        self._fifo = SampleFifo(int(sample_rate_hz * max_s))
        self._lock = threading.Lock()
        self.underruns = 0

    def __len__(self) -> int:
        return len(self._fifo)

    @property
    def dropped(self) -> int:
        """Samples dropped because the reader fell behind."""
        return self._fifo.dropped

    def write(self, samples: FloatAudio) -> None:
        """Append ``samples``; past capacity the oldest are dropped (and counted)."""
        with self._lock:
            self._fifo.write(samples)

    def read(self, n_samples: int) -> FloatAudio:
        """Exactly ``n_samples``: what is buffered, then silence (an underrun, counted)."""
        with self._lock:
            if len(self._fifo) < n_samples:
                self.underruns += 1
            return self._fifo.read(n_samples)


class MicSource:
    """A ``UserSource`` reading the microphone's ``SampleRing`` one frame per tick."""

    def __init__(self, ring: SampleRing) -> None:
        self.ring = ring

    def __call__(self, n_samples: int, loop: PacedAgentLoop) -> FloatAudio:
        """The microphone's next ``n_samples`` (16 kHz)."""
        return self.ring.read(n_samples)


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise VoxlineError(
            "voxline mic needs the sounddevice package and the PortAudio library "
            "(pip install sounddevice; apt-get install libportaudio2)"
        ) from exc
    return sounddevice


def open_devices(
    mic: SampleRing, speaker: SampleRing, speaker_rate_hz: int, frame_ms: int, mic_rate_hz: int = LISTEN_RATE_HZ
) -> tuple[Any, Any]:
    """Open (not start) the PortAudio input and output streams feeding/draining the rings."""
    sounddevice = _sounddevice()

    def captured(indata: Any, frames: int, time_info: Any, status: Any) -> None:
        mic.write(indata[:, 0])

    def wanted(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        outdata[:, 0] = speaker.read(frames)

    try:
        source = sounddevice.InputStream(
            samplerate=mic_rate_hz, channels=1, dtype="float32", latency="low",
            blocksize=mic_rate_hz * frame_ms // 1000, callback=captured,
        )
        sink = sounddevice.OutputStream(
            samplerate=speaker_rate_hz, channels=1, dtype="float32", latency="low",
            blocksize=speaker_rate_hz * frame_ms // 1000, callback=wanted,
        )
    except Exception as exc:  # PortAudioError: no device, busy device, bad rate
        raise VoxlineError(f"cannot open the audio devices: {exc}") from exc
    return source, sink


def _stop_on_ctrl_c(stop: asyncio.Event) -> None:
    """The first Ctrl-C ends the call cleanly; a second one is a KeyboardInterrupt."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except NotImplementedError:  # Windows: Ctrl-C raises KeyboardInterrupt in the loop
        pass


async def run_mic(config: Config, *, out: TextIO = sys.stdout, frame_ms: int = 20) -> int:
    """Converse through the default microphone and speaker until Ctrl-C."""
    _sounddevice()  # fail before loading the models
    engines = await AgentEngines.load(config)
    try:
        session = build_agent_session(engines)
        # Small rings: the speaker's bounds how late (and how long an echo) the agent's
        # audio can be; overflowing drops the oldest instead of adding delay for good.
        mic = SampleRing(LISTEN_RATE_HZ, max_s=0.1)
        speaker = SampleRing(session.output_rate_hz, max_s=0.08)
        source, sink = open_devices(mic, speaker, session.output_rate_hz, frame_ms)
        loop = PacedAgentLoop(
            session, MicSource(mic), frame_ms=frame_ms, on_event=event_printer(out), on_played=speaker.write,
            record=False,
        )
        stop = asyncio.Event()
        _stop_on_ctrl_c(stop)
        print("talk to the agent; Ctrl-C to stop", file=sys.stderr)
        await session.graph.start()
        try:
            with source, sink:
                await loop.run(lambda _: stop.is_set(), max_s=float("inf"))
        finally:
            await session.graph.cancel()
    finally:
        await engines.close()
    return 0


async def run_mic_call(
    url: str, *, session: dict[str, Any] | None = None, out: TextIO = sys.stdout, frame_ms: int = 20
) -> int:
    """Call the voxline server at ``url`` over WebRTC until Ctrl-C or hang-up.

    ``session`` is the offer's session object (e.g. ``{"mode": "voice_changer"}``);
    default: the agent.
    """
    _sounddevice()  # fail before connecting
    from voxline.stream.webrtc.call import WEBRTC_RATE_HZ

    from .webrtc_client import CallClient

    mic = SampleRing(WEBRTC_RATE_HZ, max_s=0.1)
    # Network audio arrives unevenly (packets are passed on as they come): a little more room
    # than the local speaker ring, still bounded so a stall cannot add delay for good.
    speaker = SampleRing(WEBRTC_RATE_HZ, max_s=0.2)
    source, sink = open_devices(mic, speaker, WEBRTC_RATE_HZ, frame_ms, mic_rate_hz=WEBRTC_RATE_HZ)
    client = CallClient(url, mic.read, on_audio=speaker.write, session=session)
    show = event_printer(out)
    stop = asyncio.Event()
    _stop_on_ctrl_c(stop)

    async def print_events() -> None:
        async for event in client.events():
            show(event)
        stop.set()  # the server hung up

    printer = asyncio.create_task(print_events(), name="voxline-mic-events")
    try:
        await client.connect()
        print(f"talking to {url}; Ctrl-C to stop", file=sys.stderr)
        with source, sink:
            await stop.wait()
    finally:
        await client.close()
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
    return 0
