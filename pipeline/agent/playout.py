"""The playout buffer: agent speech waiting to be played, and where each word of it went out.

Sans I/O. The agent's TTS audio is queued as *segments* (one clause of text and its
audio); a transport pulls fixed-size frames (``next_frame``, e.g. 20 ms) at real-time
pace and gets silence when nothing is queued or playback is paused. Because every
sample that leaves is counted against its segment, the buffer knows at any moment
which words went out, and with its ledger (below) which the listener has heard:

- ``pause`` / ``resume`` hold the position (a backchannel or a cough: the agent goes
  on from the same sample, without repeating or skipping a word);
- ``flush`` drops everything not yet played (a real interruption) and returns the
  words that were heard, cut at the last word played to its end, for the history.

Where each word ended on the playout clock goes to the buffer's ``ledger``
(``PlaybackLedger``), which knows how far the far end has played: for WebRTC what was
pulled, for a phone carrier what its marks confirm, for a Realtime client what it did
not truncate. ``heard`` and ``flush`` ask it, so they cut at what the listener heard,
the same way on every transport.

``recent_words`` lists the words played in the last few seconds, so that the agent can
tell its own voice coming back through the user's speaker from the user's words.

Stopping a waveform mid-cycle is a click, so a pause and a flush fade the audio out
over ``FADE_S`` (the faded samples count as played), and a resume fades back in.

Word positions inside a segment are not known from Piper; they are estimated by
sharing the segment's samples among its words in proportion to their length in
characters (plus one for the gap). That is good to about a syllable, which is what
"cut at the word" needs.

The frames handed out are also the echo canceller's far-end reference: exactly what
went to the speaker, silence included.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from voxline.pipeline.agent.playback_ledger import PlaybackLedger

FloatAudio = npt.NDArray[np.float32]

FADE_S = 0.005
"""Length of the fade at a pause, a resume and a flush (s)."""
RECENT_WORDS_S = 10.0
"""How far back ``recent_words`` can look (s)."""


@dataclass(slots=True)
class _Segment:
    text: str
    turn: int
    audio: FloatAudio
    word_ends: list[int]  # sample index (within audio) where each word ends
    played: int = 0

    @property
    def remaining(self) -> int:
        return len(self.audio) - self.played


@dataclass(frozen=True, slots=True)
class Heard:
    """What the listener heard of a turn: whole words, and whether it was cut short."""

    turn: int
    text: str
    interrupted: bool


def _ramp(n: int) -> FloatAudio:
    """Gains rising from near 0 to near 1 over ``n`` samples (reversed: a fade-out)."""
    return (np.arange(1, n + 1, dtype=np.float32) / np.float32(n + 1)).astype(np.float32)


def estimate_word_ends(text: str, n_samples: int) -> list[int]:
    """Where each word of ``text`` ends among ``n_samples`` of its speech: shared by characters (+1 per gap)."""
    words = text.split()
    if not words:
        return []
    weights = np.array([len(w) + 1 for w in words], dtype=np.float64)
    ends = np.cumsum(weights) / weights.sum() * n_samples
    return [round(e) for e in ends]


@dataclass(slots=True)
class PlayoutBuffer:
    """Queued agent audio at ``sample_rate_hz``, pulled in frames; at most ``max_s`` queued.

    ``ledger`` is the account of what the far end played (by default: all that was
    pulled); a transport whose far end says otherwise swaps in its own (``use_ledger``).
    """

    sample_rate_hz: int
    max_s: float = 60.0
    ledger: PlaybackLedger = field(init=False)
    _segments: deque[_Segment] = field(default_factory=deque)
    _turns: set[int] = field(default_factory=set)  # turns queued since the last flush, not yet forgotten
    _paused: bool = False
    _queued: int = 0
    _started: list[tuple[int, str]] = field(default_factory=list)
    _fade_out: int = 0  # samples still to fade out (after a pause)
    _fade_in: bool = False  # the next audio fades in (after a resume)
    _tail: FloatAudio = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # a flush's fade
    _clock: int = 0  # samples handed out so far, silence included
    _recent: deque[tuple[int, str]] = field(default_factory=deque)  # (clock when it ended, word)

    def __post_init__(self) -> None:
        self.ledger = PlaybackLedger(self.sample_rate_hz)

    def use_ledger(self, ledger: PlaybackLedger) -> None:
        """Account what was heard in ``ledger`` from now on (before any audio is pulled).

        Raises:
            ValueError: audio was already pulled, or ``ledger`` runs at another rate.
        """
        if self._clock or ledger.sent_samples:
            raise ValueError("a playout's ledger is set before any audio is pulled")
        if ledger.rate_hz != self.sample_rate_hz:
            raise ValueError(f"a {ledger.rate_hz} Hz ledger for a {self.sample_rate_hz} Hz playout")
        self.ledger = ledger

    def recent_words(self, within_s: float) -> list[str]:
        """The words played to their end in the last ``within_s``, then the one playing now."""
        since = self._clock - round(within_s * self.sample_rate_hz)
        words = [word for at, word in self._recent if at >= since]
        if self._mid_segment:
            segment = self._segments[0]
            playing = [w for w, end in zip(segment.text.split(), segment.word_ends, strict=True) if end > segment.played]
            words += playing[:1]
        return words

    @property
    def _mid_segment(self) -> bool:
        """True when the head segment has begun playing (stopping now would cut a waveform)."""
        return bool(self._segments) and self._segments[0].played > 0

    @property
    def _fade_samples(self) -> int:
        return max(1, round(FADE_S * self.sample_rate_hz))

    @property
    def queued_s(self) -> float:
        """Seconds of audio waiting to be played."""
        return self._queued / self.sample_rate_hz

    @property
    def playing(self) -> bool:
        """True when audio is queued and playback is not paused."""
        return self._queued > 0 and not self._paused

    @property
    def paused(self) -> bool:
        """True between ``pause`` and ``resume``."""
        return self._paused

    def enqueue(self, text: str, audio: FloatAudio, turn: int) -> bool:
        """Queue one clause's audio; False (nothing queued) if it would pass ``max_s``."""
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        if (self._queued + len(samples)) / self.sample_rate_hz > self.max_s:
            return False
        self._segments.append(_Segment(text, turn, samples, estimate_word_ends(text, len(samples))))
        self._queued += len(samples)
        self._turns.add(turn)
        return True

    def head(self) -> tuple[int, str] | None:
        """(turn, text) of the segment playing or next to play; None when nothing is queued."""
        if not self._segments:
            return None
        segment = self._segments[0]
        return segment.turn, segment.text

    def next_frame(self, n_samples: int) -> FloatAudio:
        """The next ``n_samples`` to play: queued audio, then silence; all silence if paused."""
        frame = self.silence(n_samples)
        if len(self._tail):
            tail, self._tail = self._tail[:n_samples], self._tail[n_samples:]
            frame[: len(tail)] = tail
            return frame
        if self._paused:
            if self._fade_out:
                fade = self._fill(frame, min(n_samples, self._fade_out))
                frame[:fade] *= _ramp(self._fade_out)[::-1][:fade]
                self._fade_out = 0
            return frame
        filled = self._fill(frame, n_samples)
        if self._fade_in and filled:
            fade = min(filled, self._fade_samples)
            frame[:fade] *= _ramp(self._fade_samples)[:fade]
            self._fade_in = False
        return frame

    def silence(self, n_samples: int) -> FloatAudio:
        """``n_samples`` of silence handed out without touching the queue (a reply held back)."""
        self._clock += n_samples
        self.ledger.sent(n_samples)
        return np.zeros(n_samples, dtype=np.float32)

    def _fill(self, frame: FloatAudio, n_samples: int, starts_at: int | None = None) -> int:
        """Copy up to ``n_samples`` of queued audio into ``frame``; the count copied.

        ``starts_at`` is the playout position (clock) of ``frame[0]``: by default the
        start of the frame ``next_frame`` is making.
        """
        at = self._clock - len(frame) if starts_at is None else starts_at
        filled = 0
        while filled < n_samples and self._segments:
            segment = self._segments[0]
            if segment.played == 0:
                self._started.append((segment.turn, segment.text))
            take = min(n_samples - filled, segment.remaining)
            frame[filled : filled + take] = segment.audio[segment.played : segment.played + take]
            self._advance(segment, take, at + filled)
            filled += take
            if segment.remaining == 0:
                self._segments.popleft()
        return filled

    def take_started(self) -> list[tuple[int, str]]:
        """(turn, text) of each segment that began playing since the last call, in order."""
        started, self._started = self._started, []
        return started

    def _advance(self, segment: _Segment, samples: int, starts_at: int) -> None:
        before = segment.played
        segment.played += samples
        self._queued -= samples
        words = segment.text.split()
        for word, end in zip(words, segment.word_ends, strict=True):
            if before < end <= segment.played:
                self.ledger.word_sent(segment.turn, starts_at + end - before, word)
                self._recent.append((self._clock, word))
        keep_from = self._clock - round(RECENT_WORDS_S * self.sample_rate_hz)
        while self._recent and self._recent[0][0] < keep_from:
            self._recent.popleft()

    def pause(self) -> None:
        """Hold playback (silence until ``resume``) after fading out over ``FADE_S``."""
        if not self._paused:
            self._fade_out = self._fade_samples if self._mid_segment else 0
            self._fade_in = False
        self._paused = True

    def resume(self) -> None:
        """Go on from the exact sample where ``pause`` held, fading in over ``FADE_S``."""
        if self._paused:
            self._fade_in = True
            self._fade_out = 0
        self._paused = False

    def heard(self, turn: int) -> Heard:
        """The words of ``turn`` the far end has played to their end so far (its ``ledger`` says)."""
        return Heard(turn, " ".join(self.ledger.heard(turn)), False)

    def flush(self) -> list[Heard]:
        """Drop all audio not yet played; return, per turn that had some, what was heard.

        Playback is un-paused. Turns whose audio was cut short are marked ``interrupted``.
        """
        cut_turns = {s.turn for s in self._segments if s.played < len(s.audio)}
        if not self._paused and self._mid_segment:
            tail = np.zeros(self._fade_samples, dtype=np.float32)
            fade = self._fill(tail, len(tail), starts_at=self._clock)  # played from the next frame on
            self._tail = tail[:fade] * _ramp(len(tail))[::-1][:fade]
        self._segments.clear()
        self._started.clear()
        self._queued = 0
        self._paused = False
        self._fade_out, self._fade_in = 0, False
        heard = [Heard(turn, " ".join(self.ledger.heard(turn)), turn in cut_turns) for turn in sorted(self._turns)]
        self._turns = set()
        return heard

    def forget(self, turn: int) -> Heard:
        """Stop tracking a turn that finished playing; returns what was heard of it.

        A turn that played out uncut counts as heard whole, also where the ``ledger``
        has yet to confirm its last samples (nothing will stop them now).
        """
        self._turns.discard(turn)
        return Heard(turn, " ".join(self.ledger.sent_words(turn)), False)
