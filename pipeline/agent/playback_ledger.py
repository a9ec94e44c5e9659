"""What the far end has played of the agent's audio, and so which words it heard. Sans I/O.

Every transport keeps this one account; they differ only in what the far end tells:

- **WebRTC** plays what it is sent at once (the browser's jitter buffer is tens of ms):
  what was sent is what was heard (``echoes_marks=False``, the default).
- **Realtime** clients play locally and say nothing while it goes well, so what was
  sent counts as heard, until a ``conversation.item.truncate`` says where the client
  stopped: ``unheard(start, end)`` marks the stretch it never played.
- **A phone carrier** (Twilio, Telnyx) takes the audio into its own buffer and plays it
  later, and says how far it got with *marks* (``echoes_marks=True``): the transport
  puts a named mark after some audio, the carrier echoes the name once everything
  before it has played.

Positions are samples of the agent's playout clock: every sample ``PlayoutBuffer``
hands to the transport, silence included (it calls ``sent`` itself). The buffer also
reports the playout position at which each word of a turn ended (``word_sent``); the
ledger keeps those words for the last ``MAX_TURNS`` turns, so the history can be cut at
what was heard even after a turn's audio is gone (a client's late truncate).

- ``place_mark()``: a mark at the current position (the transport sends it on);
- ``echoed(name)``: the carrier played up to that mark: the *anchor* moves there;
- ``position()``: where the far end is now. Without marks, what was sent; with marks,
  the anchor plus the time since it was echoed (the carrier plays in real time), never
  past what was sent, and nothing before the first echo;
- ``cleared()``: the transport stopped the far end (a barge-in; a carrier's ``clear``):
  the samples between ``position()`` and what was sent were never heard (a *gap*).
  Marks placed before it are void: carriers echo them at once on a clear, which says
  nothing about playback;
- ``heard(turn)``: the turn's words whose end was played and is not inside a gap.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_PENDING_MARKS = 512
"""Marks awaiting their echo; past this the oldest is forgotten (a carrier that never echoes)."""
MAX_GAPS = 32
"""Unheard stretches remembered (only recent words are ever asked about)."""
MAX_TURNS = 32
"""Turns whose words are kept (a client truncates the item playing, not one from long ago)."""


class PlaybackLedger:
    """Samples sent to a far end that plays them in real time, how far it played, and the words in them.

    ``rate_hz`` is the playout clock's rate (the agent's TTS rate); ``echoes_marks``
    says the far end buffers and reports playback by echoing marks (a carrier);
    ``clock`` gives seconds (``time.monotonic``; a test passes its own).
    """

    def __init__(
        self, rate_hz: int, *, echoes_marks: bool = False, clock: Callable[[], float] = time.monotonic,
        prefix: str = "vx",
    ) -> None:
        self.rate_hz = rate_hz
        self.echoes_marks = echoes_marks
        self._clock = clock
        self._prefix = prefix
        self.sent_samples = 0
        self._marks: OrderedDict[str, int] = OrderedDict()  # name -> position, awaiting the echo
        self._count = 0
        self._anchor: tuple[int, float] | None = None  # (position, when the carrier played it)
        self._gaps: deque[tuple[int, int]] = deque(maxlen=MAX_GAPS)  # (start, end] never heard
        self._words: OrderedDict[int, list[tuple[int, str]]] = OrderedDict()  # turn -> (position of its end, word)
        self.echoes = 0
        self.void_echoes = 0

    def sent(self, n_samples: int) -> None:
        """``n_samples`` more went to the far end."""
        self.sent_samples += n_samples

    def word_sent(self, turn: int, at_samples: int, word: str) -> None:
        """A word of ``turn`` whose audio ends at playout position ``at_samples`` went out."""
        words = self._words.get(turn)
        if words is None:
            words = self._words[turn] = []
            while len(self._words) > MAX_TURNS:
                self._words.popitem(last=False)
        words.append((at_samples, word))

    def knows(self, turn: int) -> bool:
        """True while the words of ``turn`` are kept (it is one of the last ``MAX_TURNS``)."""
        return turn in self._words

    def sent_words(self, turn: int) -> list[str]:
        """Every word of ``turn`` that went out, heard or not."""
        return [word for _, word in self._words.get(turn, [])]

    def heard(self, turn: int) -> list[str]:
        """The words of ``turn`` the far end has played to their end (and not lost in a gap)."""
        return [word for at, word in self._words.get(turn, []) if self.has_heard(at)]

    def place_mark(self) -> str:
        """A new mark at the current sent position; its name (send it to the far end after the audio)."""
        self._count += 1
        name = f"{self._prefix}{self._count}"
        self._marks[name] = self.sent_samples
        while len(self._marks) > MAX_PENDING_MARKS:
            self._marks.popitem(last=False)
        return name

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
        if not self.echoes_marks:
            return self.sent_samples
        if self._anchor is None:
            return 0
        at, when = self._anchor
        now = self._clock() if now is None else now
        return min(self.sent_samples, at + max(0, round((now - when) * self.rate_hz)))

    @property
    def queued_s(self) -> float:
        """Seconds of audio sent that the far end has not played yet (its buffer, as far as known)."""
        return (self.sent_samples - self.position()) / self.rate_hz

    def unheard(self, start: int, end: int) -> None:
        """The far end says it stopped at ``start``: what it was sent up to ``end`` it never played."""
        if end > start:
            self._gaps.append((start, end))

    def cleared(self) -> int:
        """The far end dropped its queue now; returns the position heard. Pending marks become void."""
        now = self._clock()
        heard = self.position(now)
        self.unheard(heard, self.sent_samples)
        self._marks.clear()
        self._anchor = (self.sent_samples, now)  # nothing queued: what comes next plays at once
        return heard

    def has_heard(self, at_samples: int) -> bool:
        """True when the sample at playout position ``at_samples`` has been played (and not lost in a gap)."""
        if at_samples > self.position():
            return False
        return not any(start < at_samples <= end for start, end in self._gaps)
