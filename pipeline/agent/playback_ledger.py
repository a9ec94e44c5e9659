"""What the far end has actually played of the agent's audio, from the marks it echoes. Sans I/O.

A WebRTC call plays what the agent pulls at once (the browser's jitter buffer is tens
of ms), so there "pulled" is "heard". A phone carrier (Twilio, Telnyx) takes the audio
into its own buffer and plays it later; what the caller heard is what the carrier says
it played. The carrier says so with *marks*: the transport puts a named mark after
some audio, the carrier echoes the name once everything before it has played.

``PlaybackLedger`` keeps that account, in samples of the agent's playout clock (every
sample handed to the transport, silence included, as ``PlayoutBuffer`` counts them):

- ``sent(n)``: ``n`` more samples went to the carrier;
- ``place_mark()``: a mark at the current position (the transport sends it on);
- ``echoed(name)``: the carrier played up to that mark: the *anchor* moves there;
- ``position()``: where the carrier is now: the anchor plus the time since it was
  echoed (the carrier plays in real time), never past what was sent. Before the first
  echo nothing counts as played;
- ``cleared()``: the transport sent ``clear`` (a barge-in): the carrier dropped what it
  had queued, so the samples between ``position()`` and what was sent were never heard
  (a *gap*). Marks placed before the clear are void: carriers echo them at once on a
  clear, which says nothing about playback.

``has_heard(at)`` is the question ``PlayoutBuffer`` asks of every word end: played and
not inside a gap. So the history after an interruption holds the words the caller
heard, cut at the carrier's acknowledged position, not at what was sent.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_PENDING_MARKS = 512
"""Marks awaiting their echo; past this the oldest is forgotten (a carrier that never echoes)."""
MAX_GAPS = 32
"""Cleared stretches remembered (only recent words are ever asked about)."""


class PlaybackLedger:
    """Samples sent to a far end that plays them in real time, and how far it has played (see module doc).

    ``rate_hz`` is the playout clock's rate (the agent's TTS rate); ``clock`` gives
    seconds (``time.monotonic``; a test passes its own).
    """

    def __init__(self, rate_hz: int, *, clock: Callable[[], float] = time.monotonic, prefix: str = "vx") -> None:
        self.rate_hz = rate_hz
        self._clock = clock
        self._prefix = prefix
        self.sent_samples = 0
        self._marks: OrderedDict[str, int] = OrderedDict()  # name -> position, awaiting the echo
        self._count = 0
        self._anchor: tuple[int, float] | None = None  # (position, when the carrier played it)
        self._gaps: deque[tuple[int, int]] = deque(maxlen=MAX_GAPS)  # [start, end) never heard
        self.echoes = 0
        self.void_echoes = 0

    def sent(self, n_samples: int) -> None:
        """``n_samples`` more went to the far end."""
        self.sent_samples += n_samples

    def place_mark(self) -> str:
        """A new mark at the current sent position; its name (send it to the far end after the audio)."""
        self._count += 1
        name = f"{self._prefix}{self._count}"
        self._marks[name] = self.sent_samples
        while len(self._marks) > MAX_PENDING_MARKS:
            self._marks.popitem(last=False)
        return name

    @property
    def pending_marks(self) -> int:
        """Marks sent and not echoed yet."""
        return len(self._marks)

    def echoed(self, name: str) -> bool:
        """The far end played everything before mark ``name``; False for a name not pending (void, unknown)."""
        at = self._marks.pop(name, None)
        if at is None:
            self.void_echoes += 1
            return False
        while self._marks and next(iter(self._marks.values())) <= at:  # earlier marks are played too
            self._marks.popitem(last=False)
        self.echoes += 1
        now = self._clock()
        if self._anchor is None or at >= self.position(now):
            self._anchor = (at, now)
        return True

    def position(self, now: float | None = None) -> int:
        """Samples the far end has played by ``now`` (default: the clock's now), at most those sent."""
        if self._anchor is None:
            return 0
        at, when = self._anchor
        now = self._clock() if now is None else now
        return min(self.sent_samples, at + max(0, round((now - when) * self.rate_hz)))

    @property
    def queued_s(self) -> float:
        """Seconds of audio sent that the far end has not played yet (its buffer, as far as known)."""
        return (self.sent_samples - self.position()) / self.rate_hz

    def cleared(self) -> int:
        """The far end dropped its queue now; returns the position heard. Pending marks become void."""
        now = self._clock()
        heard = self.position(now)
        if heard < self.sent_samples:
            self._gaps.append((heard, self.sent_samples))
        self._marks.clear()
        self._anchor = (self.sent_samples, now)  # nothing queued: what comes next plays at once
        return heard

    def has_heard(self, at_samples: int) -> bool:
        """True when the sample at playout position ``at_samples`` has been played (and not cleared)."""
        if at_samples > self.position():
            return False
        return not any(start < at_samples <= end for start, end in self._gaps)
