"""Scripted users for ``PacedAgentLoop``: a clip then silence, and a user who talks over the agent.

For tests and benches (``clients/agent_runner.py`` holds the loop and the turn-taking
user the demo uses).
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from voxline.clients.agent_runner import PacedAgentLoop
from voxline.pipeline.recipes.agent import LISTEN_RATE_HZ

FloatAudio = npt.NDArray[np.float32]


class AudioClip:
    """A ``UserSource`` that plays one clip (16 kHz) and then silence."""

    def __init__(self, audio: FloatAudio) -> None:
        self.audio = np.asarray(audio, dtype=np.float32)
        self.position = 0

    @property
    def done(self) -> bool:
        """True once the whole clip has been sent."""
        return self.position >= len(self.audio)

    def __call__(self, n_samples: int, loop: PacedAgentLoop) -> FloatAudio:
        """The clip's next ``n_samples``, padded with silence."""
        chunk = np.zeros(n_samples, dtype=np.float32)
        part = self.audio[self.position : self.position + n_samples]
        chunk[: len(part)] = part
        self.position += n_samples
        return chunk


class SpeakOverAgent:
    """A ``UserSource`` that asks a question, then talks over the agent's answer.

    For each clip in ``barges``: say ``question``; once the agent's answer starts
    playing (its first ``agent_text`` event), wait ``delay_s`` and say the clip over
    it; when the answer ends (``agent_done`` or ``interrupted``) and the agent is
    idle for ``gap_s``, go on with the next clip. ``onsets`` holds the wall time of
    each clip's first loud sample, ``reply_ids`` the reply each clip was said over.
    """

    def __init__(self, question: FloatAudio, barges: list[FloatAudio], *, delay_s: float = 1.0, gap_s: float = 0.8) -> None:
        self.question = np.asarray(question, dtype=np.float32)
        self.barges = [np.asarray(b, dtype=np.float32) for b in barges]
        self.delay_s = delay_s
        self.gap_s = gap_s
        self.trial = 0
        self.onsets: list[float] = []
        self.reply_ids: list[int] = []
        self._clip: FloatAudio = self.question
        self._pos = 0
        self._state = "asking"
        self._since = 0.0
        self._events_seen = 0

    @property
    def done(self) -> bool:
        """True after every clip was said over an answer that has since ended."""
        return self.trial >= len(self.barges)

    def __call__(self, n_samples: int, loop: PacedAgentLoop) -> FloatAudio:
        """The next frame of the script."""
        chunk = np.zeros(n_samples, np.float32)
        now = time.monotonic()
        new = loop.events[self._events_seen :]
        self._events_seen = len(loop.events)
        if self.done:
            return chunk
        if self._state == "waiting_audio":
            started = [e for e in new if e["type"] == "agent_text"]
            if started:
                self._state, self._since = "waiting_delay", now
                self.reply_ids.append(started[0]["reply"])
        elif self._state == "waiting_delay" and now - self._since >= self.delay_s:
            self._clip, self._pos, self._state = self.barges[self.trial], 0, "barging"
        elif self._state == "waiting_end":
            if any(e["type"] in ("agent_done", "interrupted") for e in new) or now - self._since > 30:
                self._state, self._since = "gap", now
        elif self._state == "gap" and now - self._since >= self.gap_s and loop.session.agent.idle:
            self.trial += 1
            self._clip, self._pos, self._state = self.question, 0, "asking"
        if self._state in ("asking", "barging") and not self.done:
            part = self._clip[self._pos : self._pos + n_samples]
            chunk[: len(part)] = part
            if self._state == "barging" and self._pos == 0:
                loud = np.flatnonzero(np.abs(self._clip) > 0.01)
                self.onsets.append(now + (int(loud[0]) if len(loud) else 0) / LISTEN_RATE_HZ)
            self._pos += n_samples
            if self._pos >= len(self._clip):
                self._state = "waiting_audio" if self._state == "asking" else "waiting_end"
                self._since = now
        return chunk
