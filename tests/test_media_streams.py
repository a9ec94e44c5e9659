"""The carriers' media-stream protocols and the caller's audio put back in order, without sockets."""

from __future__ import annotations

import base64
import json
import random

import numpy as np
import pytest

from voxline.stream.g711 import alaw_encode, ulaw_decode, ulaw_encode
from voxline.stream.telephony.inbound_audio import InboundAudio
from voxline.stream.telephony.media_streams import (
    CarrierProtocolError,
    DigitPressed,
    MarkPlayed,
    MediaChunk,
    StreamStarted,
    StreamStopped,
    TelnyxMediaStream,
    TwilioMediaStream,
)
from voxline.stream.telephony.twilio_signature import signature_valid, signed_urls, twilio_signature

TWILIO_START = {
    "event": "start", "sequenceNumber": "1", "streamSid": "MZ123",
    "start": {
        "accountSid": "AC1", "streamSid": "MZ123", "callSid": "CA9", "tracks": ["inbound"],
        "customParameters": {"system_prompt": "Be brief."},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}
TELNYX_START = {
    "event": "start", "sequence_number": "1", "stream_id": "32DE0DEA",
    "start": {
        "user_id": "u", "call_control_id": "v3:abc", "call_session_id": "s", "from": "+1", "to": "+2",
        "custom_parameters": {"customer": "7"}, "media_format": {"encoding": "PCMA", "sample_rate": 8000, "channels": 1},
    },
}


def media(payload: bytes, chunk: int, timestamp_ms: int, track: str = "inbound") -> str:
    body = {"track": track, "chunk": str(chunk), "timestamp": str(timestamp_ms),
            "payload": base64.b64encode(payload).decode()}
    return json.dumps({"event": "media", "sequenceNumber": str(chunk + 1), "media": body, "streamSid": "MZ123"})


def test_a_twilio_stream_reads_start_media_dtmf_mark_and_stop() -> None:
    stream = TwilioMediaStream()
    assert stream.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})) is None
    started = stream.receive(json.dumps(TWILIO_START))
    assert started == StreamStarted("MZ123", "CA9", "PCMU", {"system_prompt": "Be brief."})
    chunk = stream.receive(media(b"\xff" * 160, 1, 0))
    assert chunk == MediaChunk(b"\xff" * 160, 1, 0)
    assert stream.receive(media(b"\xff" * 160, 2, 20, track="outbound")) is None  # the agent's own track
    dtmf = {"event": "dtmf", "streamSid": "MZ123", "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "7"}}
    assert stream.receive(json.dumps(dtmf)) == DigitPressed("7")
    assert stream.receive(json.dumps({"event": "mark", "streamSid": "MZ123", "mark": {"name": "vx3"}})) == MarkPlayed("vx3")
    assert isinstance(stream.receive(json.dumps({"event": "stop", "streamSid": "MZ123", "stop": {}})), StreamStopped)


def test_frames_to_twilio_carry_the_stream_sid_and_base64_audio() -> None:
    stream = TwilioMediaStream()
    stream.receive(json.dumps(TWILIO_START))
    frame = json.loads(stream.media(b"\x01\x02"))
    assert frame == {"event": "media", "streamSid": "MZ123", "media": {"payload": "AQI="}}
    assert json.loads(stream.mark("vx1")) == {"event": "mark", "streamSid": "MZ123", "mark": {"name": "vx1"}}
    assert json.loads(stream.clear()) == {"event": "clear", "streamSid": "MZ123"}


def test_a_telnyx_stream_takes_pcma_and_its_frames_carry_no_stream_sid() -> None:
    stream = TelnyxMediaStream()
    assert stream.receive(json.dumps({"event": "connected", "version": "1.0.0"})) is None
    started = stream.receive(json.dumps(TELNYX_START))
    assert started == StreamStarted("32DE0DEA", "v3:abc", "PCMA", {"customer": "7"})
    assert json.loads(stream.clear()) == {"event": "clear"}
    assert json.loads(stream.mark("a")) == {"event": "mark", "mark": {"name": "a"}}
    dtmf = {"event": "dtmf", "stream_id": "32DE0DEA", "occurred_at": "x", "sequence_number": "9", "dtmf": {"digit": "#"}}
    assert stream.receive(json.dumps(dtmf)) == DigitPressed("#")


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "must be an object"),
        (json.dumps({"event": "hello"}), "unknown event 'hello'"),
        (media(b"\xff", 1, 0), "'media' before 'start'"),
    ],
)
def test_bad_frames_get_a_clear_error_and_the_stream_goes_on(frame: str, says: str) -> None:
    stream = TwilioMediaStream()
    with pytest.raises(CarrierProtocolError, match=says) as caught:
        stream.receive(frame)
    assert not caught.value.fatal
    assert stream.receive(json.dumps(TWILIO_START)) is not None  # still usable


def test_bad_media_after_start_names_the_field() -> None:
    stream = TwilioMediaStream()
    stream.receive(json.dumps(TWILIO_START))
    bad_base64 = {"event": "media", "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "@@@"}}
    with pytest.raises(CarrierProtocolError, match="not valid base64"):
        stream.receive(json.dumps(bad_base64))
    no_chunk = {"event": "media", "media": {"track": "inbound", "timestamp": "0", "payload": ""}}
    with pytest.raises(CarrierProtocolError, match=r"media\.chunk"):
        stream.receive(json.dumps(no_chunk))
    with pytest.raises(CarrierProtocolError, match="second 'start'"):
        stream.receive(json.dumps(TWILIO_START))
    with pytest.raises(CarrierProtocolError, match="not a key"):
        stream.receive(json.dumps({"event": "dtmf", "dtmf": {"digit": "x"}}))


def test_an_audio_format_voxline_cannot_decode_is_fatal_with_close_1003() -> None:
    start = json.loads(json.dumps(TELNYX_START))
    start["start"]["media_format"] = {"encoding": "OPUS", "sample_rate": 16000, "channels": 1}
    with pytest.raises(CarrierProtocolError, match="unsupported media format 'OPUS'") as caught:
        TelnyxMediaStream().receive(json.dumps(start))
    assert caught.value.fatal and caught.value.close_code == 1003


def tone_bytes(n: int, encode=ulaw_encode) -> bytes:  # type: ignore[no-untyped-def]
    t = np.arange(n) / 8000
    return encode((np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16))


def test_frames_out_of_order_come_out_in_order_with_nothing_lost() -> None:
    audio = tone_bytes(160 * 30)
    chunks = [MediaChunk(audio[i * 160:(i + 1) * 160], i + 1, i * 20) for i in range(30)]
    shuffled = chunks[:]
    rng = random.Random(3)
    for i in range(0, 28, 3):  # neighbours swap: what 0-60 ms of jitter does to 20 ms frames
        j = i + rng.randrange(1, 3)
        shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    inbound = InboundAudio("PCMU")
    out = np.concatenate([inbound.add(c) for c in shuffled])
    expected = ulaw_decode(audio).astype(np.float32) / 32768
    assert inbound.order.skipped == 0 and inbound.order.dropped_late == 0
    np.testing.assert_array_equal(out, expected)


def test_a_lost_frame_leaves_silence_of_its_length_so_pauses_keep_their_timing() -> None:
    audio = tone_bytes(160 * 10, alaw_encode)
    inbound = InboundAudio("PCMA")
    out = [inbound.add(MediaChunk(audio[i * 160:(i + 1) * 160], i + 1, i * 20)) for i in range(10) if i != 4]
    # Telnyx may also send bigger chunks: one of 60 ms after them
    out.append(inbound.add(MediaChunk(tone_bytes(480, alaw_encode), 11, 200)))
    samples = np.concatenate(out)
    assert len(samples) == 160 * 10 + 480  # the lost 20 ms came back as silence
    gap = samples[4 * 160:5 * 160]
    assert np.all(gap == 0) and np.abs(samples[:640]).max() > 0.2


def test_twilio_signature_matches_twilios_own_example() -> None:
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675310", "Digits": "1234",
              "From": "+14158675310", "To": "+18005551212"}
    signature = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params.items())
    assert signature == "GvWf1cFY/Q7PnoempGyD5oXAezc="  # twilio's api-snippets, signature_validation


def test_a_signature_for_the_public_url_is_valid_with_or_without_the_default_port() -> None:
    signed = twilio_signature("tok", "wss://voice.example.com:443/v1/telephony/twilio?x=1")
    urls = signed_urls("wss://voice.example.com", "ws", "127.0.0.1:8000", "/v1/telephony/twilio", "x=1")
    assert signature_valid("tok", signed, urls)
    assert not signature_valid("other", signed, urls)
    assert not signature_valid("tok", signed, signed_urls("", "ws", "127.0.0.1:8000", "/v1/telephony/twilio", "x=1"))
    assert not signature_valid("tok", "", urls)
