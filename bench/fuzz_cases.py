"""Seeded generators and mutators for protocol fuzzing (no I/O; shared by bench/fuzz.py and tests).

Every function takes a ``random.Random`` so one seed reproduces one run. What comes out:

- ``mutate_json(rng, value)``: a copy of a JSON value with one structural change
  (a key dropped, a value swapped for junk, an unknown key, nesting, a type renamed).
- ``caption_config`` / ``caption_audio`` / ``caption_terminal``: the ``/v1/captions``
  config, audio messages of valid sizes, and the one message that ends a connection
  with the answer it must get (``Expected``).
- ``mutate_sdp(rng, sdp)`` and ``offer_body(rng, sdp)``: ``POST /v1/webrtc/offer`` bodies.
- ``vc_message(rng)``: a data-channel message and the answer ``_client_message`` owes it.
- ``realtime_event(rng, n)``: one Realtime client message (text or bytes), mostly broken.
- ``redis_entry(rng, seq)``: a stream entry of ``voxline:stream:{id}``, valid or not.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import string
from dataclasses import dataclass
from typing import Any

import numpy as np

JSON = Any
MAX_NESTING = 3000
"""How deep the nesting bombs go; past ~1000 a Python decoder that does not catch ``RecursionError`` fails.
Tests lower it (``monkeypatch``) where a known bug in a file they do not own would mask the rest."""
JUNK_SCALARS: tuple[JSON, ...] = (
    None, True, False, 0, -1, 1, 7, 2**31, 2**63, -(2**63), 10**30, 1.5, -0.0, 1e308, -1e308,
    math.nan, math.inf, -math.inf, "", "x", "NaN", "inf", "\u0000", "\ud7ff\u202e", "é" * 40, "9" * 400,
)


def junk_value(rng: random.Random, depth: int = 0) -> JSON:
    """A JSON value of any type: scalars that break parsers, lists, objects, deep nesting."""
    roll = rng.random()
    if roll < 0.55 or depth > 2:
        return rng.choice(JUNK_SCALARS)
    if roll < 0.7:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 64)))
    if roll < 0.8:
        return [junk_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if roll < 0.93:
        return {junk_key(rng): junk_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}
    levels = min(MAX_NESTING, rng.choice((10, 60, 400)))
    return json.loads("[" * levels + "]" * levels)


def junk_key(rng: random.Random) -> str:
    """An object key nobody expects."""
    return rng.choice(("", "type", "__proto__", "constructor", "x" * 300, "ünï", "0", "null", "event_id")) + (
        str(rng.randrange(100)) if rng.random() < 0.5 else "")


def mutate_json(rng: random.Random, value: JSON, rounds: int = 1) -> JSON:
    """``value`` (left untouched) with ``rounds`` random structural mutations applied."""
    out = copy.deepcopy(value)
    for _ in range(rounds):
        out = _mutate_once(rng, out)
    return out


def _mutate_once(rng: random.Random, value: JSON) -> JSON:
    if isinstance(value, dict) and value and rng.random() < 0.85:
        key = rng.choice(sorted(value))
        op = rng.randrange(6)
        if op == 0:
            del value[key]
        elif op == 1:
            value[key] = junk_value(rng)
        elif op == 2:
            value[junk_key(rng)] = junk_value(rng)
        elif op == 3 and isinstance(value[key], dict | list):
            value[key] = _mutate_once(rng, value[key])
        elif op == 4 and isinstance(value[key], str):
            value[key] = _mutate_string(rng, value[key])
        else:
            value[key] = [value[key]]
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        value[i] = _mutate_once(rng, value[i])
        return value
    return junk_value(rng)


def _mutate_string(rng: random.Random, text: str) -> str:
    op = rng.randrange(5)
    if op == 0:
        return text.upper()
    if op == 1:
        return text + rng.choice((".", " ", "\u0000", "x"))
    if op == 2:
        return text[: rng.randrange(len(text) + 1)]
    if op == 3:
        return text * rng.randrange(2, 50)
    return ""


def dump(rng: random.Random, value: JSON) -> str:
    """``value`` as JSON text; NaN/Infinity stay (Python's decoder takes them), sometimes spaced oddly."""
    text = json.dumps(value, allow_nan=True)
    if rng.random() < 0.05:
        text = " \n\t" + text + "\n"
    return text


def broken_text(rng: random.Random) -> str:
    """Text that is not one JSON object: truncated, trailing garbage, a bare value, a nesting bomb."""
    options = (
        '{"type": "config"', '{"type":', "{", "}", "[]", "null", "42", '"type"', "config", "",
        '{"type": "end"} {"type": "end"}', "\ufeff{}", "[" * MAX_NESTING, '{"a":' * MAX_NESTING,
        "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 200))),
    )
    return rng.choice(options)


def random_bytes(rng: random.Random, n: int) -> bytes:
    """``n`` seeded random bytes."""
    return rng.randbytes(n)


# --- /v1/captions -------------------------------------------------------------------------

CAPTION_ENCODINGS = {"pcm_s16le": 2, "f32le": 4}
CAPTION_CLOSE = {
    "config_required": 4001, "bad_config": 4002, "bad_audio": 4003, "unexpected_message": 4004,
    "idle_timeout": 4008, "message_too_big": 4009, "internal_error": 4500, "server_busy": 1013,
}


@dataclass(frozen=True, slots=True)
class Expected:
    """The answer one message must get: an error ``code`` (None: a normal end) and the close code."""

    codes: frozenset[str | None]
    close: int | None = None
    """The close code; None: the one ``CAPTION_CLOSE`` gives the error code (1000 for a normal end)."""


def caption_config(rng: random.Random) -> dict[str, Any]:
    """A valid config message (any rate the protocol takes, either encoding, maybe subtitles)."""
    config: dict[str, Any] = {"type": "config", "sample_rate": rng.choice((8000, 11025, 16000, 22050, 44100, 48000)),
                              "encoding": rng.choice(sorted(CAPTION_ENCODINGS)), "language": "en"}
    if rng.random() < 0.3:
        config["subtitles"] = rng.choice(("srt", "vtt"))
    return config


def caption_audio(rng: random.Random, encoding: str) -> bytes:
    """One valid audio message: 0 bytes to a few hundred samples, quiet, at the edges of the range."""
    width = CAPTION_ENCODINGS[encoding]
    n = rng.choice((0, 1, 2, 3, 7, 160, 161, 320, 480))
    if encoding == "pcm_s16le":
        values = np.array([rng.choice((0, 1, -1, 32767, -32768, 0, 0)) for _ in range(n)], dtype="<i2")
    else:
        values = np.array([rng.choice((0.0, 1e-4, -1e-4, 1.0, -1.0, 3.4e38, -3.4e38, 1e-45, 0.0)) for _ in range(n)],
                          dtype="<f4")
    data = values.tobytes()
    assert len(data) % width == 0
    return data


def caption_message(rng: random.Random, encoding: str) -> str | bytes:
    """A message a streaming session takes and carries on after: audio, or a subtitles request."""
    if rng.random() < 0.08:
        return json.dumps({"type": "subtitles", "format": rng.choice(("srt", "vtt"))})
    return caption_audio(rng, encoding)


def caption_terminal(rng: random.Random, encoding: str, max_message_bytes: int) -> tuple[str | bytes, Expected]:
    """A message that ends a streaming session, and the answer it must get."""
    width = CAPTION_ENCODINGS[encoding]
    roll = rng.randrange(9)
    if roll == 0:
        return json.dumps({"type": "end"}), Expected(frozenset({None}), 1000)
    if roll == 1 and width > 1:
        return random_bytes(rng, width * rng.randrange(0, 50) + rng.randrange(1, width)), Expected(frozenset({"bad_audio"}))
    if roll == 2:
        n = max_message_bytes + width * rng.choice((1, 2, 1000))
        return bytes(n), Expected(frozenset({"message_too_big"}))
    if roll == 3:
        if encoding == "f32le":
            samples = np.zeros(rng.randrange(1, 400), dtype="<f4")
            samples[rng.randrange(len(samples))] = rng.choice((math.nan, math.inf, -math.inf))
            return samples.tobytes(), Expected(frozenset({"bad_audio"}))
        return bytes(3), Expected(frozenset({"bad_audio"}))
    if roll == 4:
        return dump(rng, mutate_json(rng, caption_config(rng))), Expected(frozenset({"unexpected_message", "message_too_big"}))
    if roll == 5:
        return broken_text(rng), Expected(frozenset({"unexpected_message", "message_too_big"}))
    if roll == 6:
        return json.dumps({"type": rng.choice(("End", "audio", "config", "flush", "", "end "))}), Expected(
            frozenset({"unexpected_message"}))
    if roll == 7:
        bad = rng.choice(("pdf", None, 3, "SRT", ["srt"]))
        return json.dumps({"type": "subtitles", "format": bad}), Expected(frozenset({"unexpected_message"}))
    return "x" * (4097 + rng.randrange(2000)), Expected(frozenset({"message_too_big"}))


def caption_first(rng: random.Random, max_message_bytes: int) -> tuple[str | bytes, Expected | None]:
    """A first message; its answer when it must end the session (None: it may be a config the server takes)."""
    roll = rng.randrange(6)
    if roll == 0:
        return rng.choice((b"", bytes(2), random_bytes(rng, 33))), Expected(frozenset({"config_required"}))
    if roll == 1:
        return json.dumps({"type": "end"}), Expected(frozenset({"config_required"}))
    if roll == 2:
        return broken_text(rng), Expected(frozenset({"config_required", "unexpected_message", "message_too_big"}))
    if roll == 3:
        config = caption_config(rng)
        config[rng.choice(("sample_rate", "encoding", "language", "subtitles"))] = rng.choice(
            (math.nan, math.inf, 7999, 48001, 10**40, True, "16000", 16000.0, "pcm_s24le", "fr", "txt", [], {}))
        return json.dumps(config), Expected(frozenset({"bad_config"}))
    if roll == 4:
        return bytes(max_message_bytes + 2), Expected(frozenset({"config_required", "message_too_big"}))
    return dump(rng, mutate_json(rng, caption_config(rng), rounds=rng.randrange(1, 3))), None


# --- POST /v1/webrtc/offer ---------------------------------------------------------------------

MAX_OFFER_BYTES = 64 * 1024


def mutate_sdp(rng: random.Random, sdp: str) -> str:
    """``sdp`` with lines deleted, duplicated or swapped, bytes flipped, or cut short."""
    lines = sdp.split("\r\n")
    op = rng.randrange(6)
    if op == 0 and len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    elif op == 1:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif op == 2 and len(lines) > 2:
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 3:
        raw = bytearray(sdp.encode())
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(32, 127)
        return raw.decode("ascii", "replace")
    elif op == 4:
        return sdp[: rng.randrange(len(sdp))]
    else:
        i = rng.randrange(len(lines))
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)] + rng.choice(("", "x", " 99999999999", "=", ":"))
    return "\r\n".join(lines)


def offer_session(rng: random.Random) -> dict[str, Any] | None:
    """A ``session`` option object, valid or not."""
    base: dict[str, Any] = {"mode": rng.choice(("voice_changer", "anonymizer", "agent"))}
    if base["mode"] == "voice_changer" and rng.random() < 0.5:
        base["vc"] = {"preset": "deeper"}
    if rng.random() < 0.5:
        return mutate_json(rng, base, rounds=rng.randrange(1, 3))  # type: ignore[no-any-return]
    return base


def offer_body(rng: random.Random, sdp: str) -> tuple[bytes, set[int]]:
    """One offer request body and the HTTP statuses it may get (413 for any body over ``MAX_OFFER_BYTES``)."""
    body, statuses = _offer_body(rng, sdp)
    return body, ({413} if len(body) > MAX_OFFER_BYTES else statuses)


def _offer_body(rng: random.Random, sdp: str) -> tuple[bytes, set[int]]:
    roll = rng.randrange(10)
    ok_or_refused = {200, 400, 503}
    if roll < 5:
        body: Any = {"sdp": mutate_sdp(rng, sdp), "type": "offer", "session": {"mode": "voice_changer"}}
        return json.dumps(body).encode(), ok_or_refused
    if roll == 5:
        body = {"sdp": sdp, "type": "offer", "session": offer_session(rng)}
        return json.dumps(body, allow_nan=True).encode(), ok_or_refused
    if roll == 6:
        body = mutate_json(rng, {"sdp": sdp, "type": "offer", "session": {"mode": "voice_changer"}})
        return json.dumps(body, allow_nan=True).encode(), ok_or_refused
    if roll == 7:
        whole = json.dumps({"sdp": sdp, "type": "offer"}).encode()
        return whole[: rng.randrange(len(whole))], {400}
    if roll == 8:
        pad = "a=x-fuzz:" + "y" * (MAX_OFFER_BYTES + rng.randrange(1, 4096)) + "\r\n"
        return json.dumps({"sdp": sdp + pad, "type": "offer"}).encode(), {413}
    return broken_text(rng).encode(), {400}


# --- the call's data channel ---------------------------------------------------------------------

VC_KEYS = ("preset", "semitones", "formant", "monotone_hz")
VC_VALUES: dict[str, tuple[Any, ...]] = {
    "preset": ("deeper", "higher", "robot", "nope", "", None, 3, ["deeper"]),
    "semitones": (-12, 12, 0, 3.5, -13, 12.01, math.nan, math.inf, "3", True, None, 10**30),
    "formant": (0.7, 1.4, 1.0, 0.69, 9, math.nan, -math.inf, "1", False, None),
    "monotone_hz": (None, 60, 400, 120.5, 59, 401, math.nan, "100", [], {}),
}


def vc_message(rng: random.Random) -> str | bytes:
    """One client → server data-channel message: a ``vc.update`` (valid or not), another shape, junk."""
    roll = rng.random()
    if roll < 0.6:
        event: dict[str, Any] = {"type": "vc.update"}
        for key in rng.sample(VC_KEYS, rng.randrange(0, 4)):
            event[key] = rng.choice(VC_VALUES[key])
        if rng.random() < 0.3:
            event = mutate_json(rng, event)
        return dump(rng, event)
    if roll < 0.72:
        return json.dumps({"type": rng.choice(("vc.updated", "hello", "", "response.create", "VC.UPDATE")), "x": 1})
    if roll < 0.84:
        return broken_text(rng)
    if roll < 0.94:
        return rng.choice((random_bytes(rng, rng.randrange(1, 300)), b'{"type": "vc.update", "semitones": 2}', b"\xff\xfe"))
    return json.dumps({"type": "vc.update", "preset": "x" * rng.randrange(1000, 50000)})


# --- WS /v1/realtime ---------------------------------------------------------------------------

REALTIME_TYPES = (
    "session.update", "transcription_session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
    "input_audio_buffer.clear", "conversation.item.create", "conversation.item.retrieve",
    "conversation.item.truncate", "conversation.item.delete", "response.create", "response.cancel",
    "output_audio_buffer.clear",
)


def _pcm_b64(rng: random.Random) -> str:
    n = rng.choice((0, 1, 2, 3, 480, 481, 960, 4800))
    return base64.b64encode(bytes(n)).decode()


def realtime_valid(rng: random.Random, kind: str) -> dict[str, Any]:
    """A well-formed client event of ``kind`` (which may still be refused in the session's state)."""
    item = rng.choice(("item_nope", "root", "", "item_" + "0" * 12))
    events: dict[str, dict[str, Any]] = {
        "session.update": {"session": rng.choice((
            {"type": "transcription"}, {"type": "realtime", "instructions": "Be brief."},
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 300}}}},
            {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, {"output_modalities": ["text"]},
            {"max_output_tokens": "inf"}, {"audio": {"input": {"turn_detection": None}}},
        ))},
        "transcription_session.update": {"session": {"input_audio_format": "pcm16"}},
        "input_audio_buffer.append": {"audio": _pcm_b64(rng)},
        "input_audio_buffer.commit": {}, "input_audio_buffer.clear": {}, "output_audio_buffer.clear": {},
        "conversation.item.create": {"previous_item_id": rng.choice((None, "root", item)), "item": rng.choice((
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be kind."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
            {"type": "function_call", "name": "f", "arguments": "{}"},
            {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": _pcm_b64(rng)}]},
        ))},
        "conversation.item.retrieve": {"item_id": item},
        "conversation.item.truncate": {"item_id": item, "content_index": 0, "audio_end_ms": rng.choice((0, 10, 10**9))},
        "conversation.item.delete": {"item_id": item},
        "response.create": {"response": rng.choice(({}, {"instructions": "Say hi."}, {"output_modalities": ["text"]}))},
        "response.cancel": {},
    }
    return {"type": kind, **events[kind]}


def realtime_event(rng: random.Random, number: int, *, agent: bool, max_message_bytes: int = 1 << 20) -> str | bytes:
    """One Realtime client message, its ``event_id`` ``fuzz-{number}`` when it has one.

    The largest append is 16 s of audio or, when that would not fit, a bit over
    ``max_message_bytes`` (uvicorn drops frames over 4 × that before voxline sees them).

    ``agent`` False leaves out ``response.create`` (a transcription session refuses it
    anyway, and an agent reply per message would be a load test, not a fuzz).
    """
    roll = rng.random()
    if roll < 0.04:
        return rng.choice((b"\x00\x01", random_bytes(rng, rng.randrange(1, 64)), b'{"type": "response.cancel"}'))
    if roll < 0.1:
        return broken_text(rng)
    kinds = REALTIME_TYPES if agent else tuple(k for k in REALTIME_TYPES if k != "response.create")
    kind = rng.choice(kinds) if roll < 0.95 else rng.choice(("session.created", "error", "", "x" * 80, "response.done"))
    event = realtime_valid(rng, kind) if kind in REALTIME_TYPES else {"type": kind}
    event["event_id"] = f"fuzz-{number}"
    if rng.random() < 0.6:
        event = mutate_json(rng, event, rounds=rng.randrange(1, 3))
    if kind == "input_audio_buffer.append" and rng.random() < 0.3:
        event = {"type": kind, "event_id": f"fuzz-{number}", "audio": rng.choice((
            "!!!", "AAA", "A" * 7, base64.b64encode(bytes(min(48000 * 16, max_message_bytes))).decode(), 5, None,
            "QUJD\nREVG"))}
    return dump(rng, event)


# --- voxline:stream:{id} ----------------------------------------------------------------------------


def redis_entry(rng: random.Random, seq: int) -> tuple[dict[str, str], bool]:
    """Fields of one stream entry written at id ``{seq}-0``, and whether a node wrote it (well-formed)."""
    good = {"type": rng.choice(("partial", "final")), "utterance": 1, "text": "fuzz words", "seq": seq,
            "emitted_at": 1.0}
    roll = rng.randrange(10)
    if roll < 4:
        return {"e": json.dumps(good)}, True
    if roll == 4:
        return {"x": json.dumps(good)}, False
    if roll == 5:
        return {"e": broken_text(rng)}, False
    if roll == 6:
        return {"e": json.dumps(rng.choice(([good], "final", 3, None)))}, False
    if roll == 7:
        bad = dict(good)
        bad["seq"] = rng.choice(("abc", None, -5, 1.5, 10**18, seq + 1, [], seq * 1000))
        return {"e": json.dumps(bad)}, False
    if roll == 8:
        bad = mutate_json(rng, good)
        return {"e": dump(rng, bad)}, isinstance(bad, dict) and bad.get("seq") == seq and isinstance(bad.get("type"), str)
    return {"e": json.dumps({**good, "text": junk_value(rng), "type": rng.choice(("partial", "final", 3, None))})}, False


def redis_session_fields(rng: random.Random, session_id: str, *, malformed: bool) -> dict[str, str]:
    """A ``voxline:session:{id}`` hash; ``malformed``: fields missing, wrong ids, times that are not numbers."""
    fields = {"id": session_id, "kind": "captions", "node": "fuzz-node", "started_at": "1700000000.0", "owner": "",
              "ended": "0"}
    for _ in range(rng.randrange(1, 3) if malformed else 0):
        key = rng.choice(sorted(fields))
        if rng.random() < 0.5:
            del fields[key]
        else:
            fields[key] = rng.choice(("", "nan", "inf", "x", "1e999", "-1", "other-id", "ünï"))
        if not fields:
            break
    return fields


def redis_node_fields(rng: random.Random, node_id: str) -> dict[str, str]:
    """A ``voxline:node:{id}`` hash, maybe malformed (no id, a report that is not a JSON object)."""
    fields = {"node_id": node_id, "url": "http://127.0.0.1:9", "seen_at": "1.0",
              "report": json.dumps({"headroom": True, "call_headroom": True, "sessions": 0, "max_sessions": 4})}
    roll = rng.randrange(6)
    if roll == 0:
        del fields["node_id"]
    elif roll == 1:
        fields["report"] = broken_text(rng)
    elif roll == 2:
        fields["report"] = json.dumps(rng.choice(([1], "x", 3, None, {"sessions": "x", "max_sessions": 0})))
    elif roll == 3:
        fields["report"] = json.dumps({"headroom": True, "sessions": math.nan, "cpu_load": "high"}, allow_nan=True)
    elif roll == 4:
        del fields["url"]
    return fields


# --- WS /v1/telephony/twilio and /telnyx ------------------------------------------------------

PHONE_CLOSE_CODES = frozenset({1000, 1003, 1008})
"""What a carrier socket may be closed with for its frames: a hang-up, a format voxline cannot take, a protocol breach."""


def phone_start(carrier: str, encoding: str = "PCMU") -> dict[str, Any]:
    """A valid ``start`` frame of ``carrier``."""
    if carrier == "twilio":
        return {"event": "start", "sequenceNumber": "1", "streamSid": "MZfuzz", "start": {
            "accountSid": "ACfuzz", "streamSid": "MZfuzz", "callSid": "CAfuzz", "tracks": ["inbound"],
            "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    return {"event": "start", "sequence_number": "1", "stream_id": "fuzz-stream", "start": {
        "user_id": "u", "call_control_id": "v3:fuzz", "call_session_id": "s", "from": "+1", "to": "+2",
        "custom_parameters": {}, "media_format": {"encoding": encoding, "sample_rate": 8000, "channels": 1}}}


def phone_media(carrier: str, chunk: int, payload: bytes) -> dict[str, Any]:
    """A valid ``media`` frame of ``carrier``: chunk ``chunk`` (from 1), 20 ms per chunk."""
    media = {"track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * 20),
             "payload": base64.b64encode(payload).decode()}
    if carrier == "twilio":
        return {"event": "media", "sequenceNumber": str(chunk + 1), "media": media, "streamSid": "MZfuzz"}
    return {"event": "media", "sequence_number": str(chunk + 1), "media": media, "stream_id": "fuzz-stream"}


def phone_frame(rng: random.Random, carrier: str, chunk: int) -> tuple[str | bytes, bool]:
    """One frame for a started stream, and whether it is surely valid: mostly quiet media, else junk of every kind."""
    quiet = bytes(0xFF - rng.randrange(0, 3) for _ in range(160))  # μ-law near silence: no one speaks
    roll = rng.random()
    if roll < 0.6:
        return json.dumps(phone_media(carrier, chunk, quiet)), True
    if roll < 0.7:
        return dump(rng, mutate_json(rng, phone_media(carrier, chunk, quiet), rounds=rng.randrange(1, 4))), False
    if roll < 0.75:
        return broken_text(rng), False
    if roll < 0.8:
        return random_bytes(rng, rng.randrange(1, 400)), False
    if roll < 0.85:
        return json.dumps({"event": rng.choice(["hello", "clear", "MEDIA", "", "start"]), "x": 1}), False
    if roll < 0.9:
        bad = phone_media(carrier, chunk, quiet)
        bad["media"]["payload"] = rng.choice(["@@@", "AAA", "=" * 8, "\u00e9" * 10])
        return json.dumps(bad), False
    if roll < 0.95:
        return json.dumps({"event": "dtmf", "dtmf": {"digit": rng.choice(["1", "#", "x", "", 7])}}), False
    return json.dumps({"event": "mark", "mark": {"name": rng.choice(["vx1", "", None, "n" * 300])}}), False
