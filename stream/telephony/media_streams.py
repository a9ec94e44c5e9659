"""Twilio Media Streams and Telnyx media streaming, as the carriers document them. Sans I/O.

A carrier opens a WebSocket to voxline for each phone call and speaks JSON text frames
(every number a string). ``MediaStreamProtocol.receive`` reads one frame into one event:

- ``connected`` (ignored but checked), ``start`` → ``StreamStarted`` (stream and call
  ids, custom parameters, the audio format), ``media`` → ``MediaChunk`` (G.711 bytes,
  8 kHz mono, with the carrier's chunk number and timestamp), ``dtmf`` →
  ``DigitPressed``, ``mark`` → ``MarkPlayed`` (the carrier played everything sent before
  the mark, or dropped it on a ``clear``), ``stop`` → ``StreamStopped``;
- Twilio: ``streamSid``/``sequenceNumber``, ``start.mediaFormat`` (always
  ``audio/x-mulaw``, 8000 Hz, mono); Telnyx: ``stream_id``/``sequence_number``,
  ``start.media_format`` (``PCMU`` or ``PCMA`` at 8000 Hz; others are refused);
- media of the outbound track (a stream of both tracks) is not the caller and is
  skipped (``None``).

Anything else raises ``CarrierProtocolError`` with a message for the log: text that is
not a JSON object, a binary frame (the caller checks), an unknown event, a missing or
mistyped field, base64 that does not decode, media before ``start``, a second
``start``. ``fatal`` errors (an audio format voxline cannot decode) end the call; the
rest are logged and the call goes on.

The other way, ``media(payload)``, ``mark(name)`` and ``clear()`` make the frames the
carrier plays, acknowledges and flushes: ``{"event": "media", "media": {"payload":
base64}}`` (Twilio's carry ``streamSid`` as well), and so on.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from voxline.errors import VoxlineError

__all__ = [
    "CARRIERS",
    "CarrierProtocolError",
    "DigitPressed",
    "MarkPlayed",
    "MediaChunk",
    "MediaStreamProtocol",
    "StreamStarted",
    "StreamStopped",
    "TelnyxMediaStream",
    "TwilioMediaStream",
    "media_stream_protocol",
]

PHONE_RATE_HZ = 8000
MAX_CHUNK_BYTES = 30 * PHONE_RATE_HZ
"""The most audio one inbound media frame may carry: 30 s of G.711 (Telnyx's own upper bound)."""
MAX_NAME_CHARS = 256
DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


class CarrierProtocolError(VoxlineError):
    """A frame from the carrier that does not follow its protocol; ``fatal`` when the call cannot go on.

    ``close_code`` is the WebSocket close code a fatal one ends the call with (1003: an
    audio format voxline cannot take; 1008: anything else).
    """

    def __init__(self, message: str, *, fatal: bool = False, close_code: int = 1008) -> None:
        super().__init__(message)
        self.message = message
        self.fatal = fatal
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The call's stream began: who and what, and the audio encoding (``PCMU`` or ``PCMA``, 8 kHz)."""

    stream_id: str
    call_id: str
    encoding: str
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MediaChunk:
    """Caller audio: G.711 bytes (one a sample, 8 kHz), the carrier's chunk number and timestamp (ms)."""

    payload: bytes
    chunk: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class DigitPressed:
    """The caller pressed a key (``0``-``9``, ``*``, ``#``, ``A``-``D``)."""

    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The carrier echoed a mark the server sent."""

    name: str


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The carrier ended the stream (the caller hung up, or the call was redirected)."""


CarrierEvent = StreamStarted | MediaChunk | DigitPressed | MarkPlayed | StreamStopped


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CarrierProtocolError(f"'{where}' must be an object")
    return value


def _text(container: dict[str, Any], key: str, where: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value:
        raise CarrierProtocolError(f"'{where}.{key}' must be a non-empty string")
    if len(value) > MAX_NAME_CHARS:
        raise CarrierProtocolError(f"'{where}.{key}' is over {MAX_NAME_CHARS} characters")
    return value


def _count(container: dict[str, Any], key: str, where: str) -> int:
    """A carrier number: documented as a string of digits (an int is taken too)."""
    value = container.get(key)
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    raise CarrierProtocolError(f"'{where}.{key}' must be a whole number (as a string)")


def _parameters(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CarrierProtocolError(f"'{where}' must be an object")
    return {str(key)[:MAX_NAME_CHARS]: str(item)[:4096] for key, item in list(value.items())[:64]}


class MediaStreamProtocol:
    """One carrier WebSocket's protocol state: frames in → events, frames out (see module doc)."""

    carrier = ""
    _stream_key = ""
    _sequence_key = ""

    def __init__(self) -> None:
        self.started: StreamStarted | None = None
        self.stopped = False

    def receive(self, text: str) -> CarrierEvent | None:
        """The event one text frame carries (``None``: nothing for the call); ``CarrierProtocolError`` if bad."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CarrierProtocolError(f"a frame that is not JSON: {exc}") from None
        message = _object(message, "frame")
        kind = message.get("event")
        if kind == "connected":
            return None
        if kind == "start":
            return self._start(message)
        if kind in ("media", "dtmf", "mark", "stop") and self.started is None:
            raise CarrierProtocolError(f"'{kind}' before 'start'")
        if kind == "media":
            return self._media(_object(message.get("media"), "media"))
        if kind == "dtmf":
            digit = _text(_object(message.get("dtmf"), "dtmf"), "digit", "dtmf")
            if digit not in DTMF_DIGITS:
                raise CarrierProtocolError(f"'dtmf.digit' {digit!r} is not a key of a phone")
            return DigitPressed(digit.upper())
        if kind == "mark":
            return MarkPlayed(_text(_object(message.get("mark"), "mark"), "name", "mark"))
        if kind == "stop":
            self.stopped = True
            return StreamStopped()
        if kind == "error":  # Telnyx reports its own trouble this way
            raise CarrierProtocolError(f"the carrier reported an error: {str(message.get('payload'))[:300]}")
        raise CarrierProtocolError(f"unknown event {str(kind)[:40]!r}")

    def _start(self, message: dict[str, Any]) -> StreamStarted:
        if self.started is not None:
            raise CarrierProtocolError("a second 'start' on one stream")
        start = _object(message.get("start"), "start")
        self.started = self._read_start(message, start)
        return self.started

    def _read_start(self, message: dict[str, Any], start: dict[str, Any]) -> StreamStarted:
        raise NotImplementedError

    def _media(self, media: dict[str, Any]) -> MediaChunk | None:
        track = media.get("track", "inbound")
        if track not in ("inbound", "inbound_track"):
            return None  # the agent's own audio, on a stream of both tracks
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise CarrierProtocolError("'media.payload' must be base64 text")
        if len(payload) > MAX_CHUNK_BYTES * 4 // 3 + 4:
            raise CarrierProtocolError(f"a media frame over {MAX_CHUNK_BYTES // PHONE_RATE_HZ} s of audio")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise CarrierProtocolError("'media.payload' is not valid base64") from None
        return MediaChunk(audio, _count(media, "chunk", "media"), _count(media, "timestamp", "media"))

    def _frame(self, event: str, **body: Any) -> str:
        return json.dumps({"event": event, **body}, separators=(",", ":"))

    def media(self, payload: bytes) -> str:
        """A frame that plays ``payload`` (G.711 in the stream's encoding, 8 kHz) to the caller."""
        return self._frame("media", media={"payload": base64.b64encode(payload).decode("ascii")})

    def mark(self, name: str) -> str:
        """A frame the carrier echoes once the audio sent before it has played."""
        return self._frame("mark", mark={"name": name})

    def clear(self) -> str:
        """A frame that drops every bit of audio the carrier has not played yet."""
        return self._frame("clear")


class TwilioMediaStream(MediaStreamProtocol):
    """Twilio's bidirectional Media Streams (``<Connect><Stream>``): μ-law 8 kHz, ``streamSid`` on every frame."""

    carrier = "twilio"

    def _read_start(self, message: dict[str, Any], start: dict[str, Any]) -> StreamStarted:
        stream_id = _text(start, "streamSid", "start")
        call_id = _text(start, "callSid", "start")
        media_format = _object(start.get("mediaFormat"), "start.mediaFormat")
        encoding, rate = media_format.get("encoding"), media_format.get("sampleRate")
        channels = media_format.get("channels", 1)
        if encoding != "audio/x-mulaw" or rate not in (8000, "8000") or channels not in (1, "1"):
            raise CarrierProtocolError(
                f"unsupported media format {encoding!r} at {rate!r} Hz, {channels!r} channel(s): "
                "Twilio streams audio/x-mulaw at 8000 Hz, mono",
                fatal=True, close_code=1003,
            )
        return StreamStarted(stream_id, call_id, "PCMU", _parameters(start.get("customParameters"), "customParameters"))

    def _frame(self, event: str, **body: Any) -> str:
        stream_id = self.started.stream_id if self.started is not None else ""
        return json.dumps({"event": event, "streamSid": stream_id, **body}, separators=(",", ":"))


class TelnyxMediaStream(MediaStreamProtocol):
    """Telnyx media streaming in RTP mode: PCMU or PCMA at 8 kHz; frames may come out of order."""

    carrier = "telnyx"

    def _read_start(self, message: dict[str, Any], start: dict[str, Any]) -> StreamStarted:
        stream_id = _text(message, "stream_id", "frame")
        call_id = _text(start, "call_control_id", "start")
        media_format = _object(start.get("media_format"), "start.media_format")
        encoding, rate = media_format.get("encoding"), media_format.get("sample_rate")
        channels = media_format.get("channels", 1)
        if encoding not in ("PCMU", "PCMA") or rate not in (8000, "8000") or channels not in (1, "1"):
            raise CarrierProtocolError(
                f"unsupported media format {encoding!r} at {rate!r} Hz, {channels!r} channel(s): "
                "voxline takes PCMU or PCMA at 8000 Hz, mono (stream_bidirectional_codec PCMU or PCMA)",
                fatal=True, close_code=1003,
            )
        return StreamStarted(stream_id, call_id, str(encoding), _parameters(start.get("custom_parameters"), "custom_parameters"))


CARRIERS: dict[str, type[MediaStreamProtocol]] = {"twilio": TwilioMediaStream, "telnyx": TelnyxMediaStream}


def media_stream_protocol(carrier: str) -> MediaStreamProtocol:
    """A fresh protocol state for ``carrier`` (``twilio`` or ``telnyx``)."""
    return CARRIERS[carrier]()
