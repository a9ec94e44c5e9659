"""Puts inbound audio packets back in sequence order, waiting a few packets at most.

An Opus RTP packet is one whole 20 ms frame, so a packet can be decoded as soon as
every packet before it has been released. On a jittery path packets overtake each
other: with 0-60 ms of jitter about a quarter of them arrive behind a later one.
Releasing on arrival and dropping the ones that come late loses that quarter of the
caller's speech. ``ReorderWindow`` holds a packet that arrived early until the gap
before it fills, or until ``window`` packets after the gap have arrived, then gives
the gap up as lost. In order and without loss nothing waits.

It is sans-I/O: ``add`` takes a sequence number and a payload and returns the payloads
that may leave now, in order: none while a gap waits, then every packet up to the next
gap at once, so no standing delay is left behind a wait. A short gap given up comes out
as ``None`` in its place, so the decoder can conceal it and the audio keeps its timing.
A packet that comes after its place was given up is dropped.
"""

from __future__ import annotations

from typing import Generic, TypeVar

SEQUENCE_MODULUS = 1 << 16
REORDER_WINDOW_PACKETS = 3
"""How many packets after a gap arrive before the gap is given up (60 ms of Opus)."""
MAX_CONCEALED_PACKETS = 5
"""The longest gap handed on as lost packets to conceal (100 ms of Opus); a longer one is left out."""
RESTART_BEHIND_PACKETS = 100
"""A packet this far behind the expected one means the sender restarted (as aiortc's MAX_MISORDER)."""

Payload = TypeVar("Payload")


def sequence_distance(later: int, earlier: int) -> int:
    """How far ``later`` is ahead of ``earlier`` in 16-bit RTP sequence space (negative: behind)."""
    delta = (later - earlier) % SEQUENCE_MODULUS
    return delta - SEQUENCE_MODULUS if delta >= SEQUENCE_MODULUS // 2 else delta


class ReorderWindow(Generic[Payload]):
    """Sequence numbers and payloads in, payloads out in sequence order, each once.

    Counts what it ``released``, ``dropped_late`` (came after their place was given up,
    or twice) and ``skipped`` (gaps given up as lost). ``first`` is the sequence number
    the sender starts from, when its protocol says (else the first packet to arrive
    starts the count, and one that overtook it is late).
    """

    def __init__(self, window: int = REORDER_WINDOW_PACKETS, first: int | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 packet, got {window}")
        self.window = window
        self._next: int | None = None if first is None else first % SEQUENCE_MODULUS
        self._held: dict[int, Payload] = {}
        self.released = self.dropped_late = self.skipped = 0

    @property
    def held(self) -> int:
        """How many packets wait for a gap before them to fill."""
        return len(self._held)

    def add(self, sequence: int, payload: Payload) -> list[Payload | None]:
        """Take the packet ``sequence``; the payloads that may leave now, in sequence order.

        A gap given up of at most ``MAX_CONCEALED_PACKETS`` comes out as that many
        ``None`` before the packet after it, for the decoder to conceal; a longer one is
        left out.
        """
        sequence %= SEQUENCE_MODULUS
        expected = sequence if self._next is None else self._next
        ahead = sequence_distance(sequence, expected)
        if ahead < -RESTART_BEHIND_PACKETS:  # far behind: the sender restarted its sequence
            self.skipped += len(self._held)
            self._held.clear()
            expected, ahead = sequence, 0
        self._next = expected
        if ahead < 0 or sequence in self._held:
            self.dropped_late += 1
            return []
        self._held[sequence] = payload
        return self._release(expected)

    def _release(self, expected: int) -> list[Payload | None]:
        released: list[Payload | None] = []
        if expected not in self._held:
            if max(sequence_distance(s, expected) for s in self._held) < self.window:
                return []  # the gap may still fill
            first = min(self._held, key=lambda s: sequence_distance(s, expected))
            gap = sequence_distance(first, expected)
            self.skipped += gap
            if gap <= MAX_CONCEALED_PACKETS:
                released += [None] * gap
            expected = first
        while expected in self._held:
            released.append(self._held.pop(expected))
            expected = (expected + 1) % SEQUENCE_MODULUS
        self._next = expected
        self.released += sum(payload is not None for payload in released)
        return released
