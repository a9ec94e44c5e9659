"""Joins consecutive Opus packets into one multi-frame packet (RFC 6716, section 3.2.5).

aiortc's receiver hands its decoder one packet per arriving RTP packet. When packets
that waited for a gap (``ReorderWindow``) are released together, joining them lets
them all be decoded now instead of one per later arrival, so the wait does not stay
as a standing delay. Decoding the joined packet gives exactly the samples decoding its
parts one by one would.

A lost packet can go in as an empty frame (``with_lost_frames``), which libopus
conceals (packet loss concealment) so the audio keeps its timing.

Only single-frame packets (frame count code 0, what WebRTC senders send) with the same
configuration and channel flag (the TOC byte's upper six bits) are joined, at most
``MAX_PACKET_MS`` of audio in one; anything else is passed on as it came.
"""

from __future__ import annotations

MAX_PACKET_MS = 120.0
"""The longest audio one Opus packet may carry."""
MAX_FRAMES = 48

_FRAME_MS_BY_CONFIG = (
    [10.0, 20.0, 40.0, 60.0] * 3  # SILK NB, MB, WB
    + [10.0, 20.0] * 2  # hybrid SWB, FB
    + [2.5, 5.0, 10.0, 20.0] * 4  # CELT NB, WB, SWB, FB
)


def frame_ms(packet: bytes) -> float:
    """The duration of one frame of ``packet`` (from its TOC byte's configuration), in ms."""
    return _FRAME_MS_BY_CONFIG[packet[0] >> 3]


def is_single_frame(packet: bytes) -> bool:
    """Whether ``packet`` is a code 0 packet: a TOC byte and one frame."""
    return len(packet) >= 1 and packet[0] & 0b11 == 0


def with_lost_frames(packets: list[bytes | None]) -> list[bytes]:
    """``packets`` with each ``None`` (a lost packet) made an empty frame the decoder conceals.

    The empty frame (a TOC byte alone, as Opus DTX sends) takes the configuration of
    the next packet, or of the last one when none follows; with no packet at all
    there is nothing to conceal and nothing comes back.
    """
    filled: list[bytes] = []
    toc: int | None = None
    for packet in reversed(packets):
        if packet is not None:
            toc = packet[0] & 0b11111100
            filled.append(packet)
        elif toc is not None:
            filled.append(bytes([toc]))
    filled.reverse()
    trailing = len(packets) - len(filled)  # lost ones with no packet after them
    last = next((p for p in reversed(packets) if p is not None), None)
    if trailing and last is not None:
        filled += [bytes([last[0] & 0b11111100])] * trailing
    return filled


def join_leading_packets(packets: list[bytes]) -> tuple[bytes, int]:
    """One packet made of the longest joinable run at the start of ``packets``, and how many it took.

    ``packets`` must not be empty; a first packet that cannot be joined comes back alone.
    """
    run = [packets[0]]
    if is_single_frame(packets[0]):
        for packet in packets[1:]:
            if not _joins(run, packet):
                break
            run.append(packet)
    return _join(run), len(run)


def _joins(run: list[bytes], packet: bytes) -> bool:
    return (
        is_single_frame(packet)
        and packet[0] >> 2 == run[0][0] >> 2
        and len(run) < MAX_FRAMES
        and (len(run) + 1) * frame_ms(packet) <= MAX_PACKET_MS
    )


def _join(run: list[bytes]) -> bytes:
    if len(run) == 1:
        return run[0]
    frames = [packet[1:] for packet in run]
    toc = (run[0][0] & 0b11111100) | 0b11  # code 3: an arbitrary number of frames
    header = bytearray([toc, 0b10000000 | len(frames)])  # VBR, no padding, M frames
    for frame in frames[:-1]:  # each frame's length but the last's
        header += _frame_length(len(frame))
    return bytes(header) + b"".join(frames)


def _frame_length(length: int) -> bytes:
    if length < 252:
        return bytes([length])
    first = 252 + (length & 0b11)
    return bytes([first, (length - first) >> 2])
