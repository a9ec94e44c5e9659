"""A simulated phone carrier and caller for tests and benches: Twilio or Telnyx media streams, byte for byte.

The carrier is the WebSocket client of ``/v1/telephony/{twilio,telnyx}``. ``PhoneCaller``
plays both the carrier and the person on the phone:

- **Microphone**: from ``start`` on it sends a ``media`` frame every 20 ms (160 bytes of
  8 kHz G.711), silence between what the caller says, as a phone line does. ``say``
  queues a clip (any rate; resampled to 8 kHz). Telnyx streams can send chunks of
  ``chunk_ms`` (20 ms to seconds) and add ``jitter_ms`` of random delay to each send,
  which reorders them, as Telnyx documents.
- **Speaker**: ``media`` from the server goes into a playback queue that starts playing
  once ``playout_delay_ms`` is buffered (a carrier's jitter buffer) and then plays 20 ms
  per tick in real time. A ``mark`` is queued behind the audio sent before it and echoed
  when that audio has played; a ``clear`` drops the queue and echoes every pending mark
  at once (Twilio's documented behaviour). ``played`` keeps every tick: its wall time
  and its samples.
- **Echo** (``echo_gain``): what the speaker plays comes back into the microphone that
  much louder (a phone with carrier-side echo).

Every time is ``time.monotonic()``. Everything the server sent is kept in ``received``
with its arrival time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr
import websockets

from voxline.stream.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

FloatAudio = npt.NDArray[np.float32]
RATE_HZ = 8000
FRAME_MS = 20
FRAME = RATE_HZ * FRAME_MS // 1000
LOUD = 0.01
MAX_QUEUE_S = 60.0


@dataclass
class Said:
    """One clip the caller said: wall times its first and last loud samples were sent."""

    text: str
    first_loud_at: float = 0.0
    last_loud_at: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Mark:
    """A mark the server sent: when it arrived, when it was echoed, and whether its audio played."""

    name: str
    arrived_at: float
    echoed_at: float | None = None
    played: bool = False


def twilio_signature(auth_token: str, url: str) -> str:
    """Twilio's ``X-Twilio-Signature`` for a WebSocket upgrade to ``url`` (no POST parameters)."""
    return base64.b64encode(hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()).decode()


class PhoneCaller:
    """One simulated phone call (see module doc); ``async with PhoneCaller(url) as call: await call.say(...)``."""

    def __init__(
        self, url: str, carrier: str = "twilio", *, encoding: str = "PCMU", custom_parameters: dict[str, str] | None = None,
        twilio_auth_token: str | None = None, headers: dict[str, str] | None = None, jitter_ms: float = 0.0,
        chunk_ms: tuple[int, int] = (20, 20), playout_delay_ms: float = 60.0, echo_gain: float = 0.0,
        echo_delay_ms: float = 200.0, seed: int = 0,
    ) -> None:
        self.url = url
        self.carrier = carrier
        self.encoding = "PCMU" if carrier == "twilio" else encoding
        self.custom_parameters = custom_parameters or {}
        self.headers = dict(headers or {})
        if twilio_auth_token:
            self.headers["X-Twilio-Signature"] = twilio_signature(twilio_auth_token, url)
        self.jitter_ms = jitter_ms
        self.chunk_ms = chunk_ms
        self.playout_delay_ms = playout_delay_ms
        self.echo_gain = echo_gain
        self.echo_delay_frames = max(1, round(echo_delay_ms / FRAME_MS))
        self.rng = random.Random(seed)
        self.stream_id = f"MZ{uuid.uuid4().hex}" if carrier == "twilio" else str(uuid.uuid4())
        self.call_id = f"CA{uuid.uuid4().hex}" if carrier == "twilio" else f"v3:{uuid.uuid4().hex}"
        self.ws: Any = None
        self._sequence = 0
        self._chunk = 0
        self._mic: deque[tuple[FloatAudio, Said]] = deque()
        self._queue: deque[FloatAudio | Mark] = deque()  # speaker: audio frames and marks in order
        self._queued_samples = 0
        self._playing = False
        self._echo: deque[FloatAudio] = deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._send_lock = asyncio.Lock()
        self.played: list[tuple[float, FloatAudio]] = []
        self.marks: list[Mark] = []
        self.clears: list[float] = []
        self.dropped_at_clear: list[int] = []
        """Samples the speaker had queued, unplayed, when each clear came (what the clear dropped)."""
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.bad_from_server = 0
        self.underruns = 0
        self.closed = asyncio.Event()

    # -- wire -------------------------------------------------------------------------------

    def _frame(self, event: str, **body: Any) -> str:
        self._sequence += 1
        if self.carrier == "twilio":
            return json.dumps({"event": event, "sequenceNumber": str(self._sequence), **body, "streamSid": self.stream_id})
        return json.dumps({"event": event, "sequence_number": str(self._sequence), **body, "stream_id": self.stream_id})

    def _start(self) -> str:
        if self.carrier == "twilio":
            return self._frame("start", start={
                "accountSid": "AC" + "0" * 32, "streamSid": self.stream_id, "callSid": self.call_id,
                "tracks": ["inbound"], "customParameters": self.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}})
        return self._frame("start", start={
            "user_id": str(uuid.uuid4()), "call_control_id": self.call_id, "call_session_id": str(uuid.uuid4()),
            "from": "+13125550100", "to": "+13125550199", "custom_parameters": self.custom_parameters,
            "media_format": {"encoding": self.encoding, "sample_rate": 8000, "channels": 1}})

    def _encode(self, samples: FloatAudio) -> bytes:
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        return ulaw_encode(pcm) if self.encoding == "PCMU" else alaw_encode(pcm)

    def _decode(self, payload: bytes) -> FloatAudio:
        pcm = ulaw_decode(payload) if self.encoding == "PCMU" else alaw_decode(payload)
        return pcm.astype(np.float32) / np.float32(32768)

    async def send_raw(self, data: str | bytes) -> None:
        """Send one frame as is (bad input for tests)."""
        async with self._send_lock:
            await self.ws.send(data)

    async def dtmf(self, digit: str) -> None:
        """The caller presses a key."""
        body: dict[str, Any] = {"digit": digit}
        if self.carrier == "twilio":
            body["track"] = "inbound_track"
        await self.send_raw(self._frame("dtmf", dtmf=body))

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> PhoneCaller:
        self.ws = await websockets.connect(self.url, additional_headers=self.headers, max_size=None)
        connected = {"event": "connected", "version": "1.0.0"}
        if self.carrier == "twilio":
            connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        with contextlib.suppress(websockets.ConnectionClosed):  # a server that refuses may close at once
            await self.ws.send(json.dumps(connected))
            await self.ws.send(self._start())
        self._t0 = time.monotonic()
        self._tasks = [asyncio.create_task(c, name=f"phone-sim-{n}") for n, c in (
            ("mic", self._microphone()), ("speaker", self._speaker()), ("reader", self._reader()))]
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.send_raw(self._frame("stop", stop={"accountSid": "AC", "callSid": self.call_id}))
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            await asyncio.wait_for(self.ws.wait_closed(), 5)
        await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def close_code(self) -> int | None:
        """The close code of the socket once closed (None while open)."""
        return self.ws.close_code if self.ws is not None else None

    # -- the caller -----------------------------------------------------------------------------

    async def say(self, audio: FloatAudio, rate_hz: int, text: str = "") -> Said:
        """Say ``audio`` (from the next frame on, in real time); returns when its last sample was sent."""
        clip = soxr.resample(np.asarray(audio, np.float32), rate_hz, RATE_HZ).astype(np.float32)
        said = Said(text)
        self._mic.append((clip, said))
        await said.done.wait()
        return said

    def _next_mic(self, n: int, now: float) -> FloatAudio:
        out = np.zeros(n, np.float32)
        filled = 0
        while filled < n and self._mic:
            clip, said = self._mic[0]
            take = min(n - filled, len(clip))
            part = clip[:take]
            loud = np.flatnonzero(np.abs(part) > LOUD)
            if len(loud):
                if not said.first_loud_at:
                    said.first_loud_at = now
                said.last_loud_at = now
            out[filled:filled + take] = part
            filled += take
            if take == len(clip):
                self._mic.popleft()
                said.done.set()
            else:
                self._mic[0] = (clip[take:], said)
        if self.echo_gain > 0 and len(self._echo) >= self.echo_delay_frames:
            back = np.concatenate([self._echo.popleft() for _ in range(n // FRAME)])
            out += self.echo_gain * back[:n]
        return out

    async def _microphone(self) -> None:
        sent_ms = 0
        pending: list[asyncio.Task[None]] = []
        try:
            while True:
                size_ms = FRAME_MS * self.rng.randint(self.chunk_ms[0] // FRAME_MS, self.chunk_ms[1] // FRAME_MS)
                due = self._t0 + (sent_ms + size_ms) / 1000
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                samples = self._next_mic(size_ms * RATE_HZ // 1000, time.monotonic())
                self._chunk += 1
                media = {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(sent_ms),
                         "payload": base64.b64encode(self._encode(samples)).decode()}
                frame = self._frame("media", media=media)
                sent_ms += size_ms
                if self.jitter_ms > 0:
                    delay = self.rng.uniform(0, self.jitter_ms) / 1000
                    pending = [t for t in pending if not t.done()]
                    pending.append(asyncio.create_task(self._send_later(frame, delay)))
                else:
                    await self.send_raw(frame)
        except websockets.ConnectionClosed:
            return
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _send_later(self, frame: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.send_raw(frame)

    # -- the carrier's playback -------------------------------------------------------------------

    async def _reader(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.bad_from_server += 1
                    continue
                frame = json.loads(message)
                self.received.append((now, frame))
                kind = frame.get("event")
                if kind == "media":
                    audio = self._decode(base64.b64decode(frame["media"]["payload"]))
                    if self._queued_samples + len(audio) > MAX_QUEUE_S * RATE_HZ:
                        raise RuntimeError("the server sent more than a minute of audio ahead")
                    self._queue.append(audio)
                    self._queued_samples += len(audio)
                elif kind == "mark":
                    mark = Mark(frame["mark"]["name"], now)
                    self.marks.append(mark)
                    self._queue.append(mark)
                elif kind == "clear":
                    self.clears.append(now)
                    self.dropped_at_clear.append(self._queued_samples)
                    dropped = [m for m in self._queue if isinstance(m, Mark)]
                    self._queue.clear()
                    self._queued_samples = 0
                    self._playing = False
                    for mark in dropped:
                        await self._echo_mark(mark, played=False)
                else:
                    self.bad_from_server += 1
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def _echo_mark(self, mark: Mark, *, played: bool) -> None:
        mark.echoed_at, mark.played = time.monotonic(), played
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.send_raw(self._frame("mark", mark={"name": mark.name}))

    async def _speaker(self) -> None:
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * FRAME_MS / 1000 - time.monotonic()))
            now = time.monotonic()
            if not self._playing and self._queued_samples >= self.playout_delay_ms * RATE_HZ / 1000:
                self._playing = True
            out = np.zeros(FRAME, np.float32)
            filled = 0
            while self._playing and self._queue and filled < FRAME:
                head = self._queue[0]
                if isinstance(head, Mark):
                    self._queue.popleft()
                    await self._echo_mark(head, played=True)
                    continue
                take = min(FRAME - filled, len(head))
                out[filled:filled + take] = head[:take]
                filled += take
                self._queued_samples -= take
                if take == len(head):
                    self._queue.popleft()
                else:
                    self._queue[0] = head[take:]
            while self._playing and self._queue and isinstance(self._queue[0], Mark):
                await self._echo_mark(self._queue.popleft(), played=True)  # type: ignore[arg-type]
            if self._playing and filled < FRAME:
                self.underruns += 1
                if not self._queue:
                    self._playing = False  # rebuffer
            self.played.append((now, out))
            if self.echo_gain > 0:
                self._echo.append(out)

    # -- what the caller heard -------------------------------------------------------------------

    def heard(self, since: float = 0.0, until: float = float("inf")) -> FloatAudio:
        """The 8 kHz audio the speaker played between two wall times."""
        parts = [audio for at, audio in self.played if since <= at < until]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def first_loud_after(self, at: float) -> float | None:
        """The wall time the speaker first played a loud frame after ``at``."""
        return next((t for t, audio in self.played if t >= at and np.abs(audio).max() > LOUD), None)

    def quiet_since(self, at: float, quiet_s: float) -> bool:
        """True when nothing loud has played in the last ``quiet_s`` and the last is after ``at``."""
        now = time.monotonic()
        recent = [audio for t, audio in self.played if t >= max(at, now - quiet_s)]
        return now - at >= quiet_s and all(np.abs(a).max() <= LOUD for a in recent)

    def received_audio(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, FloatAudio]]:
        """The server's media frames that arrived between two wall times: (arrival, 8 kHz samples)."""
        return [(at, self._decode(base64.b64decode(frame["media"]["payload"])))
                for at, frame in self.received if since <= at < until and frame.get("event") == "media"]

    def first_loud_received_after(self, at: float) -> float | None:
        """The arrival time of the first loud media frame after ``at`` (before the carrier's playout buffer)."""
        return next((t for t, audio in self.received_audio(at) if np.abs(audio).max() > LOUD), None)
