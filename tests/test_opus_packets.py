"""Joined Opus packets decode to exactly the samples of their parts (aiortc's real codec)."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame

from voxline.stream.webrtc.opus_packets import (
    MAX_PACKET_MS,
    frame_ms,
    is_single_frame,
    join_leading_packets,
    with_lost_frames,
)


def encoded(seconds: float, bit_rate: int) -> list[bytes]:
    """20 ms Opus packets of a chirp, from libopus as aiortc's encoder sets it up."""
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate, codec.format, codec.layout, codec.sample_rate = bit_rate, "s16", "stereo", 48000
    codec.time_base = fractions.Fraction(1, 48000)
    codec.options = {"application": "voip", "frame_duration": "20"}
    t = np.arange(int(seconds * 48000)) / 48000
    pcm = (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) * 32767).astype("<i2")
    packets: list[bytes] = []
    for start in range(0, len(pcm) - 959, 960):
        frame = av.AudioFrame.from_ndarray(np.repeat(pcm[start:start + 960], 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, start
        packets += [bytes(p) for p in codec.encode(frame)]
    return packets


def decoded(packets: list[bytes]) -> np.ndarray:
    decoder = OpusDecoder()
    frames = [f for p in packets for f in decoder.decode(JitterFrame(data=p, timestamp=0))]
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def joined_in_runs(packets: list[bytes], run: int) -> list[bytes]:
    out: list[bytes] = []
    for start in range(0, len(packets), run):
        chunk = packets[start:start + run]
        while chunk:
            packet, used = join_leading_packets(chunk)
            out.append(packet)
            chunk = chunk[used:]
    return out


@pytest.mark.parametrize("bit_rate", [32000, 256000])  # frames under and over 252 bytes (two-byte lengths)
def test_joined_packets_decode_to_the_same_samples_as_their_parts(bit_rate: int) -> None:
    packets = encoded(1.0, bit_rate)
    assert all(is_single_frame(p) and frame_ms(p) == 20.0 for p in packets)
    if bit_rate > 100000:
        assert max(len(p) for p in packets) > 252
    joined = joined_in_runs(packets, 3)
    assert len(joined) == -(-len(packets) // 3)
    assert np.array_equal(decoded(joined), decoded(packets))


def test_no_more_than_120_ms_goes_in_one_packet() -> None:
    packets = encoded(0.2, 32000)[:7]
    first, used = join_leading_packets(packets)
    assert used == int(MAX_PACKET_MS // 20) == 6
    assert len(decoded([first])) == len(decoded(packets[:6]))


def test_packets_of_another_configuration_or_not_single_frame_are_not_joined() -> None:
    packets = encoded(0.1, 32000)[:3]
    other_config = bytes([packets[1][0] ^ 0b1000_0000]) + packets[1][1:]
    assert join_leading_packets([packets[0], other_config, packets[2]]) == (packets[0], 1)
    two_frames = bytes([packets[0][0] | 0b01]) + packets[0][1:]  # code 1: two equal frames
    assert join_leading_packets([two_frames, packets[1]]) == (two_frames, 1)
    assert join_leading_packets([packets[0], two_frames])[1] == 1


@pytest.mark.parametrize("joined", [False, True])
def test_a_lost_packet_goes_in_as_a_frame_the_decoder_conceals_so_the_audio_keeps_its_length(joined: bool) -> None:
    packets = encoded(0.5, 32000)
    lost = 12
    sent = decoded(packets)
    filled = with_lost_frames([None, packets[lost + 1]])
    if joined:
        filled = [join_leading_packets(filled)[0]]
    received = decoded(packets[:lost] + filled + packets[lost + 2:])
    assert len(received) == len(sent), "the lost 20 ms is there, not cut out"
    at = lost * 2 * 960  # stereo s16
    gap, original = received[at:at + 2 * 960].astype(float), sent[at:at + 2 * 960].astype(float)
    assert np.sqrt(np.mean(gap**2)) > 0.3 * np.sqrt(np.mean(original**2)), "filled, not silent"
    assert np.array_equal(received[:at], sent[:at])


def test_lost_packets_take_the_configuration_of_the_packet_after_them() -> None:
    a, b = bytes([0b11111_0_00, 7]), bytes([0b01011_0_00, 9])
    assert with_lost_frames([a, None, b]) == [a, bytes([0b01011_0_00]), b]
    assert with_lost_frames([a, None]) == [a, bytes([0b11111_0_00])]
    assert with_lost_frames([None]) == []
