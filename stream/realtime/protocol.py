"""The OpenAI-Realtime protocol's shapes: session settings, and server events in GA or beta form. Sans I/O.

A client speaks one of two dialects, fixed when it connects: **GA** (the default), or
**beta** (it sent ``OpenAI-Beta: realtime=v1``). They carry the same conversation
with different names and shapes:

| GA | beta |
|---|---|
| ``session.update`` ``{"type": "realtime"|"transcription", "audio": {"input": {...}, "output": {...}}}`` | flat ``input_audio_format: "pcm16"``, ``turn_detection``, ``voice``; ``transcription_session.update`` |
| ``conversation.item.added`` / ``.done`` | ``conversation.item.created`` |
| ``response.output_audio.delta``, ``response.output_audio_transcript.delta``, ``response.output_text.delta`` | ``response.audio.delta``, ``response.audio_transcript.delta``, ``response.text.delta`` |
| assistant content ``output_audio`` / ``output_text`` | ``audio`` / ``text`` |

``SessionSettings`` holds what a client may set, reads a ``session.update`` in either
shape (``RealtimeProtocolError`` names the field that is wrong) and renders itself for
``session.created`` / ``session.updated``. ``ServerEvents`` makes every server event
in the connection's dialect, with a fresh ``event_id`` each. Every shape here
validates against the ``openai`` SDK's own models (``tests/test_realtime_protocol.py``).

Settings that voxline accepts but does not act on (tools, tracing, noise reduction,
the voice's name and speed, temperature, ``prefix_padding_ms``) are kept and echoed
back, so clients that set them work; the README lists them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voxline.errors import VoxlineError
from voxline.stream.realtime.audio import RealtimeAudioError, RealtimeAudioFormat

__all__ = [
    "RealtimeProtocolError", "ServerEvents", "SessionSettings", "TurnDetection", "new_id", "parse_client_event",
]

MAX_INSTRUCTIONS_CHARS = 16000
MAX_OUTPUT_TOKENS = 1024
"""The most tokens one reply may take here, whatever a client asks."""
EAGERNESS = ("low", "medium", "high", "auto")
_BETA_EVENT_NAMES = {
    "conversation.item.added": "conversation.item.created",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}
_GA_ONLY_EVENTS = frozenset({"conversation.item.done"})
_BETA_TRANSCRIPTION_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
_ids = itertools.count(1)


class RealtimeProtocolError(VoxlineError):
    """A client event voxline will not take: ``code`` and ``message`` for its ``error`` event, ``param`` the field."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def new_id(prefix: str) -> str:
    """A fresh id in the API's style (``item_…``, ``resp_…``, ``sess_…``, ``event_…``)."""
    return f"{prefix}_{secrets.token_hex(6)}{next(_ids):04x}"


def parse_client_event(text: str | bytes) -> dict[str, Any]:
    """The JSON object of one client message, with a string ``type``.

    Raises:
        RealtimeProtocolError: not JSON (or nested too deep to decode), not an object, or no ``type``.
    """
    try:
        event = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise RealtimeProtocolError("invalid_json", f"a client event is one JSON object: {exc}") from None
    except RecursionError:  # "[[[[..." nested deeper than the decoder recurses
        raise RealtimeProtocolError("invalid_json", "a client event is one JSON object, not nested this deep") from None
    if not isinstance(event, dict):
        raise RealtimeProtocolError("invalid_event", "a client event is one JSON object")
    if not isinstance(event.get("type"), str):
        raise RealtimeProtocolError("invalid_event", "a client event needs a string 'type'", "type")
    return event


def _object(value: Any, param: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RealtimeProtocolError("invalid_value", f"'{param}' must be an object", param)
    return value


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise RealtimeProtocolError("invalid_value", f"'{param}' must be true or false", param)
    return value


def _number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RealtimeProtocolError("invalid_value", f"'{param}' must be a number from {low:g} to {high:g}", param)
    return float(value)


def _format(value: Any, param: str, *, beta: bool) -> RealtimeAudioFormat:
    try:
        return RealtimeAudioFormat.from_beta(value) if beta else RealtimeAudioFormat.from_ga(value)
    except RealtimeAudioError as exc:
        raise RealtimeProtocolError("invalid_value", f"'{param}': {exc}", param) from None


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """How the end of the user's turn is found: ``server_vad`` (silence), ``semantic_vad`` (voxline's end of turn)."""

    type: str = "semantic_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    eagerness: str = "auto"
    create_response: bool = True
    interrupt_response: bool = True

    @classmethod
    def read(cls, value: Any, param: str) -> TurnDetection | None:
        """A ``turn_detection`` object (either dialect); None for ``null`` (push to talk)."""
        if value is None:
            return None
        value = _object(value, param)
        kind = value.get("type", "server_vad")
        if kind not in ("server_vad", "semantic_vad"):
            raise RealtimeProtocolError(
                "invalid_value", f"'{param}.type' must be 'server_vad' or 'semantic_vad', not {kind!r}", f"{param}.type"
            )
        changes: dict[str, Any] = {}
        if value.get("threshold") is not None:
            changes["threshold"] = _number(value["threshold"], f"{param}.threshold", 0.0, 1.0)
        for key in ("prefix_padding_ms", "silence_duration_ms"):
            if value.get(key) is not None:
                changes[key] = int(_number(value[key], f"{param}.{key}", 0, 10000))
        for key in ("create_response", "interrupt_response"):
            if value.get(key) is not None:
                changes[key] = _bool(value[key], f"{param}.{key}")
        turn = cls(type=kind, **changes)
        eagerness = value.get("eagerness")
        if eagerness is not None:
            if eagerness not in EAGERNESS:
                raise RealtimeProtocolError(
                    "invalid_value", f"'{param}.eagerness' must be one of {list(EAGERNESS)}", f"{param}.eagerness"
                )
            turn = dataclasses.replace(turn, eagerness=eagerness)
        return turn

    def as_dict(self) -> dict[str, Any]:
        """The object as ``session.updated`` reports it."""
        if self.type == "semantic_vad":
            return {
                "type": "semantic_vad", "eagerness": self.eagerness,
                "create_response": self.create_response, "interrupt_response": self.interrupt_response,
            }
        return {
            "type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response, "interrupt_response": self.interrupt_response,
        }


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a Realtime client has set for its session (defaults: voxline's agent, voxline's end of turn)."""

    kind: str = "realtime"
    model: str = "voxline"
    instructions: str = ""
    input_format: RealtimeAudioFormat = field(default_factory=RealtimeAudioFormat)
    output_format: RealtimeAudioFormat = field(default_factory=RealtimeAudioFormat)
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    transcription: dict[str, Any] | None = None
    voice: str = "alloy"
    output_modalities: tuple[str, ...] = ("audio",)
    max_output_tokens: int | str = "inf"
    echoed: dict[str, Any] = field(default_factory=dict)
    """Fields accepted and reported back but not acted on (tools, tracing, noise reduction, ...)."""

    @property
    def speaks(self) -> bool:
        """True when replies are audio (with a transcript), False for text replies."""
        return "audio" in self.output_modalities

    def reply_tokens(self, default: int) -> int:
        """The token budget of one reply: ``default`` (the server's ``agent.max_reply_tokens``) for "inf"."""
        return default if self.max_output_tokens == "inf" else min(MAX_OUTPUT_TOKENS, int(self.max_output_tokens))

    # -- reading -------------------------------------------------------------------

    def update_ga(self, session: Any) -> SessionSettings:
        """These settings with a GA ``session.update``'s ``session`` applied."""
        session = _object(session, "session")
        changes: dict[str, Any] = {}
        kind = session.get("type", self.kind)
        if kind not in ("realtime", "transcription"):
            raise RealtimeProtocolError(
                "invalid_value", f"'session.type' must be 'realtime' or 'transcription', not {kind!r}", "session.type"
            )
        changes["kind"] = kind
        self._read_common(session, changes, prefix="session")
        if "output_modalities" in session:
            changes["output_modalities"] = _modalities(session["output_modalities"], "session.output_modalities")
        audio = _object(session.get("audio") or {}, "session.audio")
        audio_in = _object(audio.get("input") or {}, "session.audio.input")
        audio_out = _object(audio.get("output") or {}, "session.audio.output")
        _read_fields(audio_in, "session.audio.input", changes, (
            ("format", "input_format", _ga_format), ("turn_detection", "turn_detection", TurnDetection.read),
            ("transcription", "transcription", _transcription),
        ))
        _read_fields(audio_out, "session.audio.output", changes, (
            ("format", "output_format", _ga_format), ("voice", "voice", _voice),
        ))
        echoed = dict(self.echoed)
        for key in ("noise_reduction",):
            if key in audio_in:
                echoed[f"input.{key}"] = audio_in[key]
        if "speed" in audio_out:
            echoed["output.speed"] = _number(audio_out["speed"], "session.audio.output.speed", 0.25, 1.5)
        for key in ("tools", "tool_choice", "tracing", "truncation", "include"):
            if key in session:
                echoed[key] = session[key]
        changes["echoed"] = echoed
        return dataclasses.replace(self, **changes)

    def update_beta(self, session: Any, *, transcription: bool = False) -> SessionSettings:
        """These settings with a beta ``session.update`` (or ``transcription_session.update``) applied."""
        session = _object(session, "session")
        changes: dict[str, Any] = {"kind": "transcription" if transcription else self.kind}
        self._read_common(session, changes, prefix="session")
        _read_fields(session, "session", changes, (
            ("modalities", "output_modalities", _beta_modalities),
            ("input_audio_format", "input_format", _beta_format), ("output_audio_format", "output_format", _beta_format),
            ("turn_detection", "turn_detection", TurnDetection.read),
            ("input_audio_transcription", "transcription", _transcription), ("voice", "voice", _voice),
            ("max_response_output_tokens", "max_output_tokens", _max_tokens),
        ))
        echoed = dict(self.echoed)
        for key in ("tools", "tool_choice", "temperature", "input_audio_noise_reduction", "include", "tracing"):
            if key in session:
                echoed[key] = session[key]
        changes["echoed"] = echoed
        return dataclasses.replace(self, **changes)

    def _read_common(self, session: Mapping[str, Any], changes: dict[str, Any], *, prefix: str) -> None:
        if "instructions" in session:
            text = session["instructions"]
            if not isinstance(text, str) or len(text) > MAX_INSTRUCTIONS_CHARS:
                raise RealtimeProtocolError(
                    "invalid_value", f"'{prefix}.instructions' must be text of at most {MAX_INSTRUCTIONS_CHARS} characters",
                    f"{prefix}.instructions",
                )
            changes["instructions"] = text
        if "max_output_tokens" in session:
            changes["max_output_tokens"] = _max_tokens(session["max_output_tokens"], f"{prefix}.max_output_tokens")
        if isinstance(session.get("model"), str):
            changes["model"] = session["model"]

    # -- rendering ---------------------------------------------------------------------

    def as_ga(self, session_id: str) -> dict[str, Any]:
        """The GA ``session`` object of ``session.created`` / ``session.updated``."""
        turn = self.turn_detection.as_dict() if self.turn_detection else None
        audio_in: dict[str, Any] = {
            "format": self.input_format.as_ga(), "transcription": self.transcription,
            "turn_detection": turn, "noise_reduction": self.echoed.get("input.noise_reduction"),
        }
        if self.kind == "transcription":
            return {
                "type": "transcription", "id": session_id, "object": "realtime.transcription_session",
                "audio": {"input": audio_in}, "include": self.echoed.get("include"),
            }
        return {
            "type": "realtime", "id": session_id, "object": "realtime.session", "model": self.model,
            "output_modalities": list(self.output_modalities), "instructions": self.instructions,
            "audio": {
                "input": audio_in,
                "output": {
                    "format": self.output_format.as_ga(), "voice": self.voice, "speed": self.echoed.get("output.speed", 1.0),
                },
            },
            "max_output_tokens": self.max_output_tokens,
            "tools": self.echoed.get("tools", []), "tool_choice": self.echoed.get("tool_choice", "auto"),
            "tracing": self.echoed.get("tracing"), "truncation": self.echoed.get("truncation", "auto"),
        }

    def as_beta(self, session_id: str) -> dict[str, Any]:
        """The beta ``session`` object (of ``session.*`` or ``transcription_session.updated``)."""
        turn = self.turn_detection.as_dict() if self.turn_detection else None
        transcription = self.transcription
        if self.kind == "transcription":
            if transcription is not None and transcription.get("model") not in _BETA_TRANSCRIPTION_MODELS:
                transcription = {**transcription, "model": "whisper-1"}
            if turn is not None:
                turn = {k: v for k, v in turn.items() if k in ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")}
            return {
                "id": session_id, "object": "realtime.transcription_session",
                "client_secret": {"value": "", "expires_at": 0}, "modalities": ["text"],
                "input_audio_format": self.input_format.beta_name, "input_audio_transcription": transcription,
                "turn_detection": turn,
            }
        # The beta schema allows only OpenAI's model names, so the model is left out.
        return {
            "id": session_id, "object": "realtime.session",
            "modalities": ["text", "audio"] if self.speaks else ["text"], "instructions": self.instructions,
            "voice": self.voice, "input_audio_format": self.input_format.beta_name,
            "output_audio_format": self.output_format.beta_name, "input_audio_transcription": transcription,
            "turn_detection": turn, "tools": self.echoed.get("tools", []),
            "tool_choice": self.echoed.get("tool_choice", "auto"), "temperature": self.echoed.get("temperature", 0.8),
            "max_response_output_tokens": self.max_output_tokens,
        }


Reader = Callable[[Any, str], Any]


def _read_fields(
    source: Mapping[str, Any], prefix: str, changes: dict[str, Any], fields: tuple[tuple[str, str, Reader], ...]
) -> None:
    """For each (key, setting, reader) present in ``source``: ``changes[setting] = reader(value, param)``."""
    for key, setting, reader in fields:
        if key in source:
            changes[setting] = reader(source[key], f"{prefix}.{key}")


def _ga_format(value: Any, param: str) -> RealtimeAudioFormat:
    return _format(value, param, beta=False)


def _beta_format(value: Any, param: str) -> RealtimeAudioFormat:
    return _format(value, param, beta=True)


def _modalities(value: Any, param: str) -> tuple[str, ...]:
    if value not in (["audio"], ["text"]):
        raise RealtimeProtocolError("invalid_value", f"'{param}' must be [\"audio\"] or [\"text\"]", param)
    return tuple(value)


def _beta_modalities(value: Any, param: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(m in ("audio", "text") for m in value):
        raise RealtimeProtocolError("invalid_value", f"'{param}' must be [\"text\", \"audio\"] or [\"text\"]", param)
    return ("audio",) if "audio" in value else ("text",)


def _transcription(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _object(value, param)
    for key in ("model", "language", "prompt"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise RealtimeProtocolError("invalid_value", f"'{param}.{key}' must be text", f"{param}.{key}")
    return {"model": value.get("model") or "whisper-1", "language": value.get("language"), "prompt": value.get("prompt")}


def _voice(value: Any, param: str) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    if not isinstance(value, str) or not value:
        raise RealtimeProtocolError("invalid_value", f"'{param}' must be a voice name", param)
    return value


def _max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    return int(_number(value, param, 1, 4096))


class ServerEvents:
    """Makes server events in one connection's dialect (GA unless ``beta``)."""

    def __init__(self, *, beta: bool = False) -> None:
        self.beta = beta

    def event(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        """The event ``kind`` (GA name) with ``fields``; None when the dialect has no such event."""
        if self.beta:
            if kind in _GA_ONLY_EVENTS:
                return None
            kind = _BETA_EVENT_NAMES.get(kind, kind)
        return {"type": kind, "event_id": new_id("event"), **fields}

    def session(self, kind: str, settings: SessionSettings, session_id: str) -> dict[str, Any]:
        """``session.created`` or ``session.updated`` (beta transcription: ``transcription_session.updated``)."""
        if not self.beta:
            return {"type": kind, "event_id": new_id("event"), "session": settings.as_ga(session_id)}
        if settings.kind == "transcription" and kind == "session.updated":
            kind = "transcription_session.updated"
        return {"type": kind, "event_id": new_id("event"), "session": settings.as_beta(session_id)}

    def error(self, code: str, message: str, *, param: str | None = None, event_id: str | None = None,
              kind: str = "invalid_request_error") -> dict[str, Any]:
        """An ``error`` event; ``event_id`` names the client event that caused it."""
        return {
            "type": "error", "event_id": new_id("event"),
            "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
        }

    # -- items and parts -----------------------------------------------------------------

    def user_item(self, item_id: str, *, text: str | None = None, transcript: str | None = None,
                  audio: bool = False) -> dict[str, Any]:
        """A user message item: typed text, or audio with its transcript (None while unknown)."""
        content = {"type": "input_audio", "transcript": transcript} if audio else {"type": "input_text", "text": text or ""}
        return {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                "content": [content]}

    def system_item(self, item_id: str, text: str) -> dict[str, Any]:
        """A system message item."""
        return {"id": item_id, "object": "realtime.item", "type": "message", "role": "system", "status": "completed",
                "content": [{"type": "input_text", "text": text}]}

    def assistant_item(self, item_id: str, *, audio: bool, text: str | None, status: str) -> dict[str, Any]:
        """An assistant message item: audio with a transcript, or text; ``text`` None for an empty in-progress one."""
        if text is None:
            content: list[dict[str, Any]] = []
        elif audio:
            content = [{"type": "audio" if self.beta else "output_audio", "transcript": text}]
        else:
            content = [{"type": "text" if self.beta else "output_text", "text": text}]
        return {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": status,
                "content": content}

    @staticmethod
    def part(*, audio: bool, text: str = "") -> dict[str, Any]:
        """A content part of a response (``content_part.added`` / ``.done``)."""
        return {"type": "audio", "transcript": text} if audio else {"type": "text", "text": text}

    def response(self, response_id: str, settings: SessionSettings, *, status: str, output: list[dict[str, Any]],
                 reason: str | None = None, audio: bool | None = None) -> dict[str, Any]:
        """The ``response`` object of ``response.created`` / ``response.done``."""
        audio = settings.speaks if audio is None else audio
        details = None if status in ("in_progress", "completed") else {"type": status, "reason": reason}
        body: dict[str, Any] = {
            "id": response_id, "object": "realtime.response", "status": status, "status_details": details,
            "output": output, "usage": None, "metadata": None,
        }
        if self.beta:
            body.update({
                "modalities": ["text", "audio"] if audio else ["text"], "voice": settings.voice,
                "output_audio_format": settings.output_format.beta_name,
                "max_output_tokens": settings.max_output_tokens,
            })
        else:
            body.update({
                "conversation_id": None, "output_modalities": ["audio"] if audio else ["text"],
                "audio": {"output": {"format": settings.output_format.as_ga(), "voice": settings.voice}},
                "max_output_tokens": settings.max_output_tokens,
            })
        return body
