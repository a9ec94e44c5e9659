"""One WebRTC voice call (aiortc): audio both ways and an events channel, for any live session.

The session is the agent (``recipes.agent``), the voice changer
(``recipes.voice_changer``) or the anonymizer (``recipes.anonymizer``): anything with a
graph to push the caller's audio into, a ``pull`` for what goes back, events out and
``on_client_event`` for the client's messages (``CallSession``).

- **Outgoing audio**: ``session_audio_track`` is the call's speaker. aiortc asks it for a
  frame whenever it wants one; it answers on a real-time schedule (never faster), with
  20 ms of 48 kHz mono s16 made from ``session.pull`` (silence when the session is
  quiet). For the agent, what it pulls is what the echo canceller takes as reference
  and what the agent counts as heard.
- **Incoming audio**: a task owned by the call reads the peer's track, turns each frame
  into a float32 mono ``AudioFrame`` and pushes it into the session's graph (which
  resamples to 16 kHz). When the graph cannot keep up, the frame is dropped and
  counted, never queued without bound.
- **Events**: a task forwards the session's events as JSON text on the ``events``
  data channel (the peer creates it; events made before it opens wait for it, those
  made after it closed are dropped and counted).
  Messages the client sends on it go to ``session.on_client_event`` (a ``vc.update``
  changes the voice live); one that is not a JSON object gets an ``error`` event back.
- **Life cycle**: ``close`` (idempotent) runs when the peer disconnects, ICE fails or
  the data channel closes: the tasks are cancelled and awaited, the graph cancelled,
  the peer connection closed; nothing of the call outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from voxline.errors import GraphClosed
from voxline.pipeline.edge import Edge
from voxline.pipeline.event_channel import EventChannel
from voxline.pipeline.frames import AudioFrame
from voxline.pipeline.graph import Graph
from voxline.pipeline.tasks import wait_for_tasks
from voxline.resampler import StreamResampler
from voxline.sample_fifo import SampleFifo
from voxline.stream.webrtc.opus_packets import join_leading_packets, with_lost_frames
from voxline.stream.webrtc.rtp_reorder import ReorderWindow

log = logging.getLogger(__name__)
FloatAudio = npt.NDArray[np.float32]

WEBRTC_RATE_HZ = 48000
FRAME_MS = 20
FRAME_SAMPLES = WEBRTC_RATE_HZ * FRAME_MS // 1000
PENDING_FRAMES_MAX = 10
"""The outgoing track's resampled backlog bound (200 ms); it holds about one frame."""


class CallSession(Protocol):
    """What a call needs of its session (the agent, the voice changer, the anonymizer)."""

    graph: Graph
    audio_in: Edge
    events: EventChannel

    @property
    def output_rate_hz(self) -> int:
        """Sample rate of what ``pull`` returns."""
        ...

    def pull(self, n_samples: int) -> FloatAudio:
        """The next ``n_samples`` to send the caller (called at real-time pace)."""
        ...

    def on_client_event(self, event: dict[str, Any]) -> None:
        """Take one JSON object the client sent on the events channel."""
        ...


def aiortc_module() -> Any:
    """The ``aiortc`` module, or a ``VoxlineError`` naming the extra to install."""
    try:
        import aiortc
    except ImportError as exc:  # pragma: no cover - the webrtc extra is missing
        from voxline.errors import VoxlineError

        raise VoxlineError("WebRTC calls need aiortc: pip install 'voxline[webrtc]'") from exc
    return aiortc


_RECEIVER_BUFFER = "_RTCRtpReceiver__jitter_buffer"  # aiortc's private jitter buffer of a receiver


def release_audio_on_arrival(pc: Any) -> int:
    """Make ``pc``'s audio receivers pass each packet on as soon as it is in order; how many changed.

    aiortc fixes the audio receiver's jitter buffer at 4 frames of prefetch, and even
    without prefetch a frame leaves only when the next packet shows it is complete:
    80 ms (or 20 ms) of delay on every inbound frame, with no option to change it. An
    Opus RTP packet is a whole 20 ms frame, so nothing is gained by waiting for the
    next one. Packets go through a ``ReorderWindow`` instead: in order, each leaves as
    it arrives; one that overtook another waits for the gap before it to fill, for at
    most ``REORDER_WINDOW_PACKETS`` packets (60 ms), and then leaves with the ones
    behind it in one joined packet (``join_leading_packets``). On the server the inbound audio
    feeds the recogniser, which needs every word but no smooth timing; a client
    (``CallClient``) smooths playback in its own speaker buffer.

    Reaches into aiortc's receiver (a private attribute, checked for; aiortc is pinned
    below 2; if it is gone the default buffer stays and 0 is returned). Call before any
    media arrives (right after the transceivers exist).
    """
    from aiortc.jitterbuffer import JitterBuffer

    changed = 0
    for transceiver in pc.getTransceivers():
        current = getattr(transceiver.receiver, _RECEIVER_BUFFER, None)
        if transceiver.kind == "audio" and type(current) is JitterBuffer:
            setattr(transceiver.receiver, _RECEIVER_BUFFER, _reordering_buffer())
            changed += 1
    return changed


def inbound_packet_counts(pc: Any) -> dict[str, int]:
    """What ``pc``'s reordering audio receivers did: packets ``released``, ``late`` and ``lost`` (gaps given up)."""
    counts = {"released": 0, "late": 0, "lost": 0}
    for transceiver in pc.getTransceivers():
        order = getattr(getattr(transceiver.receiver, _RECEIVER_BUFFER, None), "order", None)
        if isinstance(order, ReorderWindow):
            counts["released"] += order.released
            counts["late"] += order.dropped_late
            counts["lost"] += order.skipped
    return counts


def _reordering_buffer() -> Any:
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame

    class ReorderingAudioBuffer(JitterBuffer):
        """Audio packets released in sequence order (``ReorderWindow``), those released together joined.

        aiortc decodes one frame per arriving packet: packets let go together after a
        wait are joined into one multi-frame Opus packet so they are all decoded now. A
        short gap given up goes in as empty frames, which the Opus decoder conceals.
        """

        def __init__(self) -> None:
            super().__init__(capacity=16)
            self.order: ReorderWindow[Any] = ReorderWindow()
            self._ready: list[Any] = []  # released in order, not yet decoded (only when they would not join)

        def add(self, packet: Any) -> tuple[bool, Any]:
            self._ready += self.order.add(packet.sequence_number, packet)
            if not self._ready:
                return False, None
            data, used = join_leading_packets(with_lost_frames([p and p._data for p in self._ready]))
            first_real = next(i for i, p in enumerate(self._ready) if p is not None)
            timestamp = self._ready[first_real].timestamp - first_real * FRAME_SAMPLES
            del self._ready[:used]
            return False, JitterFrame(data=data, timestamp=timestamp)

    return ReorderingAudioBuffer()


def to_av_frame(samples: FloatAudio, pts: int) -> Any:
    """A 48 kHz mono s16 ``av.AudioFrame`` of float32 ``samples`` in [-1, 1] at ``pts``."""
    import av

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = WEBRTC_RATE_HZ
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, WEBRTC_RATE_HZ)
    return frame


def from_av_frame(frame: Any) -> tuple[FloatAudio, int]:
    """Float32 mono samples and the rate of a decoded ``av.AudioFrame`` (any layout, s16 or float)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        data = data.reshape(channels, -1).mean(axis=0)
    else:
        data = data.reshape(-1, channels).mean(axis=1)
    if np.issubdtype(data.dtype, np.integer) or frame.format.name.startswith("s16"):
        data = data / 32768.0
    return np.ascontiguousarray(data, dtype=np.float32), int(frame.sample_rate)


def bundle_problem(sdp: str) -> str:
    """What is wrong with the offer's BUNDLE group, or "" when nothing is.

    aiortc takes an offer whose ``a=group:BUNDLE`` names a ``mid`` no media section has
    (or whose sections lack their ``a=mid``), then fails inside its connect task and
    again when the connection is closed, leaving it half open. Such offers are refused
    before aiortc sees them.
    """
    session, *sections = re.split(r"\r?\n(?=m=)", sdp)
    bundles = [line.split()[1:] for line in session.splitlines() if line.startswith("a=group:BUNDLE")]
    if not bundles:
        return ""
    if any(line.startswith("a=mid:") for line in session.splitlines()):
        return "the offer has an a=mid line outside any media section"
    mids = [[line[len("a=mid:"):].strip() for line in section.splitlines() if line.startswith("a=mid:")] for section in sections]
    if any(len(found) != 1 for found in mids):
        return "with a BUNDLE group, every media section of the offer needs exactly one a=mid"
    known = {found[0] for found in mids}
    missing = [mid for group in bundles for mid in group if mid not in known]
    if missing:
        return f"the offer's BUNDLE group names {', '.join(missing)}, which no media section has"
    return ""


def transports_bound(pc: Any) -> bool:
    """True when every transceiver and the data channel of ``pc`` have a DTLS transport to run on."""
    sctp = pc.sctp
    return all(t.receiver.transport is not None for t in pc.getTransceivers()) and (
        sctp is None or sctp.transport is not None
    )


def session_audio_track(session: CallSession) -> Any:
    """A live ``aiortc.MediaStreamTrack`` (kind audio) playing what ``session`` pulls, in real time."""
    to_48k = StreamResampler(session.output_rate_hz, WEBRTC_RATE_HZ)
    pending = SampleFifo(PENDING_FRAMES_MAX * FRAME_SAMPLES)  # a frame or so in steady state
    pull_samples = session.output_rate_hz * FRAME_MS // 1000

    def next_frame() -> FloatAudio:
        # One pull per frame keeps the session's clock; the resampler's uneven output
        # (and its start-up delay, read as silence) evens out in the FIFO.
        pending.write(to_48k.process(session.pull(pull_samples)))
        return pending.read(FRAME_SAMPLES)

    return paced_audio_track(next_frame)


def paced_audio_track(next_frame: Callable[[], FloatAudio]) -> Any:
    """A live ``aiortc.MediaStreamTrack`` sending ``next_frame()`` (960 samples, 48 kHz) every 20 ms.

    aiortc asks for frames as fast as it likes; this answers on a real-time schedule,
    never faster, and after a stall (a busy loop) restarts the schedule rather than
    sending the missed frames in a burst.
    """
    return _paced_track_class()(next_frame)


_TRACK_CLASS: Any = None


def _paced_track_class() -> Any:
    global _TRACK_CLASS
    if _TRACK_CLASS is not None:
        return _TRACK_CLASS
    aiortc = aiortc_module()

    class PacedAudioTrack(aiortc.MediaStreamTrack):  # type: ignore[name-defined]
        kind = "audio"

        def __init__(self, next_frame: Callable[[], FloatAudio]) -> None:
            super().__init__()
            self._next_frame = next_frame
            self._start: float | None = None
            self._pts = 0

        async def recv(self) -> Any:
            if self.readyState != "live":
                raise aiortc.mediastreams.MediaStreamError
            now = time.monotonic()
            if self._start is None:
                self._start = now
            else:
                delay = self._start + self._pts / WEBRTC_RATE_HZ - now
                if delay > 0:
                    await asyncio.sleep(delay)
                elif -delay > 0.1:  # stalled: restart the schedule rather than burst
                    self._start = now - self._pts / WEBRTC_RATE_HZ
            frame = to_av_frame(self._next_frame(), self._pts)
            self._pts += FRAME_SAMPLES
            return frame

    _TRACK_CLASS = PacedAudioTrack
    return _TRACK_CLASS


class VoiceCall:
    """One peer connection bound to one ``CallSession``; owns its tasks; ``close`` ends it all.

    ``on_event`` sees every event the call sends (e.g. for metrics). A peer that has
    not connected ``connect_timeout_s`` after the answer, or whose audio has stopped
    arriving for ``media_timeout_s`` (a crashed browser, a lost network: ICE itself
    takes ~30 s to give up), ends the call. ``failure`` says why a call ended
    abnormally (empty for a normal hang-up).
    """

    def __init__(
        self,
        session: CallSession,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        connect_timeout_s: float = 20.0,
        media_timeout_s: float = 5.0,
    ) -> None:
        aiortc = aiortc_module()
        self.session = session
        self.on_event = on_event
        self.connect_timeout_s = connect_timeout_s
        self.media_timeout_s = media_timeout_s
        self._last_frame_at = time.monotonic()
        self.failure = ""
        self.pc = aiortc.RTCPeerConnection()
        self.track = session_audio_track(session)
        self.pc.addTrack(self.track)
        self.channel: Any = None
        self.frames_in = 0
        self.frames_dropped = 0
        self.events_dropped = 0
        self._channel_open = asyncio.Event()
        self.closed = asyncio.Event()
        self.connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._pts_in = 0

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                self._own(self._receive(track), "receive")

        @self.pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self.channel = channel
            if channel.readyState == "open":
                self._channel_open.set()

            @channel.on("open")
            def on_open() -> None:
                self._channel_open.set()

            @channel.on("message")
            def on_message(message: Any) -> None:
                self._client_message(message)

            @channel.on("close")
            def on_close() -> None:
                self._own(self.close(), "close")

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = self.pc.connectionState
            if state == "connected":
                self.connected.set()
            elif state in ("failed", "closed", "disconnected"):
                if state == "failed":
                    self.failure = self.failure or "ice_failed"
                self._own(self.close(), "close")

    def _own(self, coroutine: Any, name: str) -> None:
        if self._closing and name != "close":
            coroutine.close()
            return
        task = asyncio.create_task(coroutine, name=f"voxline-call-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def answer(self, sdp: str, kind: str = "offer") -> dict[str, str]:
        """Take the peer's offer; start the session; return the answer (``sdp``, ``type``)."""
        aiortc = aiortc_module()
        await self.session.graph.start()
        self._own(self._forward_events(), "events")
        self._own(self._connect_watchdog(), "watchdog")
        problem = bundle_problem(sdp)
        if problem:
            raise ValueError(problem)
        await self.pc.setRemoteDescription(aiortc.RTCSessionDescription(sdp=sdp, type=kind))
        if not transports_bound(self.pc):
            raise ValueError("a media or data section of the offer is bound to no transport")
        release_audio_on_arrival(self.pc)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    async def _receive(self, track: Any) -> None:
        aiortc = aiortc_module()
        while True:
            try:
                frame = await track.recv()
            except aiortc.mediastreams.MediaStreamError:
                self._own(self.close(), "close")
                return
            self._last_frame_at = time.monotonic()
            samples, rate = from_av_frame(frame)
            audio = AudioFrame(
                samples=samples, sample_rate_hz=rate, pts_samples=self._pts_in, capture_time=time.monotonic()
            )
            self._pts_in += len(samples)
            self.frames_in += 1
            try:
                accepted = self.session.audio_in.put_nowait(audio)
            except GraphClosed:  # the session's graph stopped (a stage failed): end the call
                log.warning("call ended: its session stopped (%s)", self.session.graph.error)
                self.failure = self.failure or "session_failed"
                self._own(self.close(), "close")
                return
            if not accepted:
                self.frames_dropped += 1

    def _client_message(self, message: Any) -> None:
        try:
            event = json.loads(message)
        except (TypeError, ValueError, RecursionError):  # RecursionError: nested too deep to parse
            event = None
        if not isinstance(event, dict):
            self.session.events.publish({
                "type": "error", "code": "bad_event", "message": "events from the client must be JSON objects",
            })
            return
        self.session.on_client_event(event)

    async def _connect_watchdog(self) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), self.connect_timeout_s)
        except TimeoutError:
            self.failure = "never_connected"
            log.info("call ended: the peer did not connect within %.0f s", self.connect_timeout_s)
            self._own(self.close(), "close")
            return
        self._last_frame_at = time.monotonic()
        while True:
            silent_for = time.monotonic() - self._last_frame_at
            if silent_for > self.media_timeout_s:
                self.failure = "peer_silent"
                log.info("call ended: no audio from the peer for %.1f s", silent_for)
                self._own(self.close(), "close")
                return
            await asyncio.sleep(min(1.0, self.media_timeout_s / 4))

    async def _forward_events(self) -> None:
        async for event in self.session.events:
            if self.on_event is not None:
                self.on_event(event)
            # Events made before the channel opened (the session's ready event) wait
            # for it; the session's event channel is bounded, so waiting costs no memory.
            await self._channel_open.wait()
            channel = self.channel
            if channel is None or channel.readyState != "open":
                self.events_dropped += 1  # closed since: the call is ending
                continue
            channel.send(json.dumps(event))

    async def close(self) -> None:
        """End the call: stop its tasks, cancel the graph, close the connection. Idempotent."""
        if self._closing:
            return
        self._closing = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await wait_for_tasks([t for t in self._tasks if t is not current], 5.0, "voice call")
        await self.session.graph.cancel()
        self.track.stop()
        packets = inbound_packet_counts(self.pc)
        log.info(
            "call closed: %d audio frames in, %d dropped (the session was full); "
            "%d packets in order, %d came too late, %d never came",
            self.frames_in, self.frames_dropped, packets["released"], packets["late"], packets["lost"],
        )
        with contextlib.suppress(Exception):  # aiortc may raise on a transport already gone
            await self.pc.close()
        self.closed.set()
