"""Realtime wire audio: formats in both shapes, base64 both ways, G.711 against its tables."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.speech_fixtures import FOX, speech
from voxline.stream.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from voxline.stream.realtime.audio import RealtimeAudioError, RealtimeAudioFormat


def test_both_shapes_name_the_same_formats() -> None:
    for beta, ga in (("pcm16", {"type": "audio/pcm", "rate": 24000}), ("g711_ulaw", {"type": "audio/pcmu"}),
                     ("g711_alaw", {"type": "audio/pcma"})):
        fmt = RealtimeAudioFormat.from_beta(beta)
        assert fmt == RealtimeAudioFormat.from_ga(ga) and fmt.as_ga() == ga and fmt.beta_name == beta
    assert RealtimeAudioFormat.from_ga({"type": "audio/pcm"}).rate_hz == 24000
    assert RealtimeAudioFormat("audio/pcmu").rate_hz == 8000


@pytest.mark.parametrize(("call", "value", "says"), [
    (RealtimeAudioFormat.from_ga, {"type": "audio/pcm", "rate": 16000}, "24000"),
    (RealtimeAudioFormat.from_ga, {"type": "audio/opus"}, "audio/pcmu"),
    (RealtimeAudioFormat.from_ga, "pcm16", "an audio format is"),
    (RealtimeAudioFormat.from_beta, "opus", "pcm16"),
])
def test_an_unknown_format_is_refused_with_what_is_known(call, value, says) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RealtimeAudioError, match=says):
        call(value)


def test_pcm_goes_out_and_comes_back_at_16_bits() -> None:
    audio = np.interp(np.arange(24000), np.arange(0, 24000, 1.5), speech(FOX)[:16000]).astype(np.float32)
    fmt = RealtimeAudioFormat()
    back = fmt.decode(fmt.encode(audio))
    assert back.dtype == np.float32 and len(back) == len(audio)
    assert np.abs(back - audio).max() < 2 / 32768
    assert base64.b64decode(fmt.encode(np.array([0.5, -0.5], np.float32))) == bytes([0xFF, 0x3F, 0x01, 0xC0])


def test_g711_matches_its_tables_and_round_trips() -> None:
    # Known values of the ITU-T tables (g711.c): silence, the extremes.
    assert list(ulaw_decode(bytes([0xFF, 0x7F, 0x00, 0x80]))) == [0, 0, -32124, 32124]
    assert list(alaw_decode(bytes([0xD5, 0x55, 0x2A, 0xAA]))) == [8, -8, -32256, 32256]
    every = np.arange(256, dtype=np.uint8).tobytes()
    assert ulaw_encode(ulaw_decode(every)) == every.replace(b"\x7f", b"\xff")  # -0 and +0 meet
    assert alaw_encode(alaw_decode(every)) == every
    audio = speech(FOX)
    for kind in ("audio/pcmu", "audio/pcma"):
        fmt = RealtimeAudioFormat(kind)
        back = fmt.decode(fmt.encode(audio))
        loud = np.abs(audio) > 0.05
        assert np.median(np.abs(back[loud] - audio[loud]) / np.abs(audio[loud])) < 0.05, kind  # ~3 % steps


@pytest.mark.parametrize(("audio", "says"), [
    ("not base64!", "not valid base64"),
    (base64.b64encode(b"\x00\x01\x02").decode(), "odd number"),
    (12345, "base64 text"),
    (base64.b64encode(bytes(2 * 24000 * 16)).decode(), "at most 15 s"),
])
def test_bad_audio_is_refused_with_a_reason(audio: object, says: str) -> None:
    with pytest.raises(RealtimeAudioError, match=says):
        RealtimeAudioFormat().decode(audio)
