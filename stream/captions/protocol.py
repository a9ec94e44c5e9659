"""The ``/v1/captions`` wire protocol, sans I/O.

Client → server:

1. one JSON text message ``{"type": "config", "sample_rate": 16000, "encoding":
   "pcm_s16le" | "f32le", "language": "en", "subtitles": "srt" | "vtt" (optional)}``;
2. binary messages of mono audio in that encoding and rate (any size up to the limit);
3. optionally ``{"type": "end"}``: no more audio; the server sends the last final(s),
   then (if asked for) the subtitles, then closes with 1000.

Server → client: JSON text messages ``{"type": "partial" | "final", "utterance",
"text", "start", "end", "words": [{"word", "start", "end", "probability"}],
"committed"}`` (times in seconds of stream audio), ``{"type": "subtitles", "format",
"text"}``, and on bad input ``{"type": "error", "code", "message"}`` followed by a close
with the 4xxx code listed in ``CLOSE_CODES``.

``CaptionProtocol`` validates what the client sends and turns it into audio or
commands; it raises ``ProtocolError`` with the code and message the client is told.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxline.errors import ProtocolError
from voxline.pipeline.frames import TranscriptFrame
from voxline.stream.sessions.subtitles import SUBTITLE_FORMATS

MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 48000
ENCODINGS = {"pcm_s16le": 2, "f32le": 4}
LANGUAGES = {"en"}
MAX_TEXT_MESSAGE_BYTES = 4096

CLOSE_CODES = {
    "config_required": 4001,
    "bad_config": 4002,
    "bad_audio": 4003,
    "unexpected_message": 4004,
    "message_too_big": 4009,
    "idle_timeout": 4008,
    "server_busy": 1013,
    "internal_error": 4500,
}


def protocol_error(code: str, message: str) -> ProtocolError:
    """A ``ProtocolError`` carrying ``code``'s close code from ``CLOSE_CODES``."""
    return ProtocolError(code, message, CLOSE_CODES[code])


class _State(enum.Enum):
    AWAIT_CONFIG = "await_config"
    STREAMING = "streaming"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CaptionConfig:
    """What a client declared in its config message."""

    sample_rate_hz: int
    encoding: str
    language: str
    subtitles: str | None


@dataclass(frozen=True, slots=True)
class EndOfAudio:
    """The client has no more audio: drain and close."""


@dataclass(frozen=True, slots=True)
class SubtitlesRequest:
    """The client asked for the subtitles so far, in ``format``."""

    format: str


Command = CaptionConfig | EndOfAudio | SubtitlesRequest


class CaptionProtocol:
    """Validates one client's messages; never touches a socket."""

    def __init__(self, max_message_bytes: int = 1 << 20) -> None:
        self.max_message_bytes = max_message_bytes
        self.config: CaptionConfig | None = None
        self._state = _State.AWAIT_CONFIG

    @property
    def ended(self) -> bool:
        """True once the client sent ``end``."""
        return self._state is _State.ENDED

    def receive_text(self, text: str) -> Command:
        """Parse a text message into a command, or raise ``ProtocolError``."""
        if len(text) > MAX_TEXT_MESSAGE_BYTES:
            raise protocol_error("message_too_big", f"text messages are limited to {MAX_TEXT_MESSAGE_BYTES} bytes")
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; "[[[..." recurses
            where = "a config message" if self._state is _State.AWAIT_CONFIG else "audio (binary) or a JSON command"
            raise protocol_error(
                "config_required" if self._state is _State.AWAIT_CONFIG else "unexpected_message",
                f"expected {where}, got text that is not JSON",
            ) from exc
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise protocol_error("unexpected_message", 'messages are JSON objects with a "type"')
        kind = message["type"]
        if self._state is _State.AWAIT_CONFIG:
            if kind != "config":
                raise protocol_error("config_required", f'the first message must be {{"type": "config"}}, got {kind!r}')
            self.config = self._parse_config(message)
            self._state = _State.STREAMING
            return self.config
        if self._state is _State.ENDED:
            raise protocol_error("unexpected_message", "nothing may follow end")
        if kind == "end":
            self._state = _State.ENDED
            return EndOfAudio()
        if kind == "subtitles":
            fmt = message.get("format")
            if not _one_of(fmt, SUBTITLE_FORMATS):
                raise protocol_error("unexpected_message", f"subtitle format must be one of {sorted(SUBTITLE_FORMATS)}")
            return SubtitlesRequest(str(fmt))
        if kind == "config":
            raise protocol_error("unexpected_message", "config was already sent; a session has one config")
        raise protocol_error("unexpected_message", f"unknown message type {kind!r}")

    def _parse_config(self, message: dict[str, Any]) -> CaptionConfig:
        rate = message.get("sample_rate", 16000)
        if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
            raise protocol_error(
                "bad_config", f"sample_rate must be an integer from {MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ} Hz, got {rate!r}"
            )
        encoding = message.get("encoding", "pcm_s16le")
        if not _one_of(encoding, ENCODINGS):
            raise protocol_error("bad_config", f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
        language = message.get("language", "en")
        if not _one_of(language, LANGUAGES):
            raise protocol_error("bad_config", f"language must be one of {sorted(LANGUAGES)}, got {language!r}")
        subtitles = message.get("subtitles")
        if subtitles is not None and not _one_of(subtitles, SUBTITLE_FORMATS):
            raise protocol_error("bad_config", f"subtitles must be one of {sorted(SUBTITLE_FORMATS)}, got {subtitles!r}")
        return CaptionConfig(sample_rate_hz=rate, encoding=encoding, language=language, subtitles=subtitles)

    def receive_bytes(self, data: bytes) -> np.ndarray:
        """Decode a binary audio message into float32 samples, or raise ``ProtocolError``."""
        if self._state is _State.AWAIT_CONFIG or self.config is None:
            raise protocol_error("config_required", 'send {"type": "config", ...} before any audio')
        if self._state is _State.ENDED:
            raise protocol_error("unexpected_message", "audio after end")
        if len(data) > self.max_message_bytes:
            raise protocol_error("message_too_big", f"audio messages are limited to {self.max_message_bytes} bytes, got {len(data)}")
        width = ENCODINGS[self.config.encoding]
        if len(data) % width:
            raise protocol_error(
                "bad_audio", f"{self.config.encoding} audio comes in {width}-byte samples; got {len(data)} bytes"
            )
        if width == 2:
            return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.isfinite(samples).all():
            raise protocol_error("bad_audio", "f32le audio contains NaN or infinity")
        return np.clip(samples, -1.0, 1.0)


def _one_of(value: Any, allowed: Collection[str]) -> bool:
    """True when ``value`` is one of the ``allowed`` names (a list or an object is not, rather than a TypeError)."""
    return isinstance(value, str) and value in allowed


def caption_event(frame: TranscriptFrame) -> dict[str, Any]:
    """The JSON object sent to clients for a transcript frame."""
    return {
        "type": "final" if frame.is_final else "partial",
        "utterance": frame.utterance,
        "text": frame.text,
        "start": round(frame.start_s, 3),
        "end": round(frame.end_s, 3),
        "committed": frame.committed,
        "words": [
            {"word": w.text, "start": round(w.start_s, 3), "end": round(w.end_s, 3), "probability": round(w.probability, 3)}
            for w in frame.words
        ],
    }


def error_event(error: ProtocolError) -> dict[str, Any]:
    """The JSON object sent to a client before closing it for ``error``."""
    return {"type": "error", "code": error.code, "message": error.message}
