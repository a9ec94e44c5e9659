"""The /v1/captions protocol without sockets: what a client may send and is told."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxline.errors import ProtocolError
from voxline.stream.captions.protocol import (
    CaptionConfig,
    CaptionProtocol,
    EndOfAudio,
    SubtitlesRequest,
)
from voxline.stream.sessions.subtitles import SubtitleTrack, subtitles


def configured(**extra: object) -> CaptionProtocol:
    protocol = CaptionProtocol(max_message_bytes=1000)
    protocol.receive_text(json.dumps({"type": "config", "sample_rate": 16000, "encoding": "pcm_s16le", **extra}))
    return protocol


def code_of(action) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        action()
    return info.value.code, info.value.close_code


def test_a_config_then_pcm16_audio_decodes_to_float_samples() -> None:
    protocol = configured()
    assert isinstance(protocol.config, CaptionConfig)
    samples = protocol.receive_bytes(np.array([0, 16384, -32768], "<i2").tobytes())
    assert samples.dtype == np.float32
    assert samples.tolist() == [0.0, 0.5, -1.0]


def test_audio_before_config_is_refused_with_4001() -> None:
    assert code_of(lambda: CaptionProtocol().receive_bytes(b"\0\0")) == ("config_required", 4001)


@pytest.mark.parametrize(
    "config",
    [
        {"sample_rate": 4000},
        {"sample_rate": 96000},
        {"sample_rate": "16000"},
        {"encoding": "mulaw"},
        {"language": "xx"},
        {"subtitles": "ass"},
    ],
)
def test_a_bad_config_is_refused_with_4002(config: dict[str, object]) -> None:
    message = json.dumps({"type": "config", **config})
    assert code_of(lambda: CaptionProtocol().receive_text(message)) == ("bad_config", 4002)


def test_an_odd_byte_count_is_bad_audio() -> None:
    assert code_of(lambda: configured().receive_bytes(b"\0\0\0")) == ("bad_audio", 4003)


def test_f32_with_nan_is_bad_audio() -> None:
    protocol = CaptionProtocol()
    protocol.receive_text(json.dumps({"type": "config", "encoding": "f32le"}))
    assert code_of(lambda: protocol.receive_bytes(np.array([0.1, np.nan], "<f4").tobytes()))[0] == "bad_audio"


def test_an_oversized_message_is_refused_with_4009() -> None:
    assert code_of(lambda: configured().receive_bytes(b"\0" * 2000)) == ("message_too_big", 4009)


def test_text_where_audio_belongs_is_an_unexpected_message() -> None:
    assert code_of(lambda: configured().receive_text("hello")) == ("unexpected_message", 4004)


def test_end_and_subtitle_requests_are_commands() -> None:
    protocol = configured()
    assert isinstance(protocol.receive_text('{"type": "subtitles", "format": "vtt"}'), SubtitlesRequest)
    assert isinstance(protocol.receive_text('{"type": "end"}'), EndOfAudio)
    assert code_of(lambda: protocol.receive_bytes(b"\0\0"))[0] == "unexpected_message"


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_no_input_makes_the_protocol_raise_anything_but_a_protocol_error(data: bytes | str) -> None:
    protocol = CaptionProtocol()
    for _ in range(2):
        try:
            if isinstance(data, bytes):
                protocol.receive_bytes(data)
            else:
                protocol.receive_text(data)
        except ProtocolError:
            pass


def test_deeply_nested_json_is_an_unexpected_message_not_a_crash() -> None:
    assert code_of(lambda: configured().receive_text("[" * 4000))[0] == "unexpected_message"


def test_a_subtitle_track_keeps_a_bounded_number_of_cues() -> None:
    track = SubtitleTrack(max_cues=3)
    for i in range(10):
        track.add(float(i), i + 0.5, f"cue {i}")
    srt = track.render("srt")
    assert srt.startswith("8\n00:00:07,000") and "cue 9" in srt and "cue 6" not in srt


def test_finals_render_as_srt_and_webvtt() -> None:
    finals = [{"text": "Hello there.", "start": 0.5, "end": 1.25}, {"text": "", "start": 2, "end": 3}, {"text": "Bye.", "start": 61.0, "end": 3723.5}]
    assert subtitles(finals, "srt") == "1\n00:00:00,500 --> 00:00:01,250\nHello there.\n\n2\n00:01:01,000 --> 01:02:03,500\nBye.\n\n"
    assert subtitles(finals, "vtt").startswith("WEBVTT\n\n00:00:00.500 --> 00:00:01.250\nHello there.\n")


@pytest.mark.parametrize("field", ["encoding", "language", "subtitles"])
@pytest.mark.parametrize("value", [[], ["pcm_s16le"], {}, {"en": 1}])
def test_a_config_naming_its_encoding_language_or_subtitles_with_a_list_or_object_is_a_bad_config(
    field: str, value: object
) -> None:
    message = json.dumps({"type": "config", field: value})
    assert code_of(lambda: CaptionProtocol().receive_text(message)) == ("bad_config", 4002)


def test_a_subtitles_request_naming_its_format_with_a_list_is_an_unexpected_message() -> None:
    protocol = configured()
    request = json.dumps({"type": "subtitles", "format": ["srt"]})
    assert code_of(lambda: protocol.receive_text(request)) == ("unexpected_message", 4004)
