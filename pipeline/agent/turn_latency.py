"""Where one turn's milliseconds went: the voice-to-voice waterfall.

Every mark is a ``time.monotonic()`` wall time, set once, by the part of the agent
that saw it happen:

``speech_end``       the user's last word ended (media time mapped to wall time
                     through the capture times of the audio that carried it);
``asr_final``        the recogniser's final transcript of that speech was made;
``endpoint``         the agent decided the user's turn was over;
``llm_first_token``  the language model produced the reply's first text;
``tts_first_audio``  the synthesizer produced the reply's first audio;
``audio_out``        the first non-silent sample of the reply left for the speaker.

``breakdown_ms`` gives the consecutive spans (each stage's share, summing to
``v2v_ms``); ``waterfall_ms`` gives each mark's offset from ``speech_end``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MARKS = ("speech_end", "asr_final", "endpoint", "llm_first_token", "tts_first_audio", "audio_out")


@dataclass(slots=True)
class TurnTimeline:
    """The marks of one agent reply (wall times in seconds, ``time.monotonic()``)."""

    reply: int
    user_text: str = ""
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, at: float) -> None:
        """Record ``name`` at ``at`` unless already recorded (the first time counts)."""
        if name not in MARKS:
            raise ValueError(f"unknown latency mark {name!r}; one of {MARKS}")
        self.marks.setdefault(name, at)

    @property
    def complete(self) -> bool:
        """True once every mark is set."""
        return all(m in self.marks for m in MARKS)

    def v2v_ms(self) -> float | None:
        """Voice to voice: end of the user's speech to the reply's first audio out."""
        if "speech_end" not in self.marks or "audio_out" not in self.marks:
            return None
        return (self.marks["audio_out"] - self.marks["speech_end"]) * 1000

    def waterfall_ms(self) -> dict[str, float]:
        """Each recorded mark's offset (ms) from ``speech_end``."""
        start = self.marks.get("speech_end")
        if start is None:
            return {}
        return {m: round((self.marks[m] - start) * 1000, 1) for m in MARKS if m in self.marks}

    def breakdown_ms(self) -> dict[str, float]:
        """Span (ms) ending at each mark, from the previous recorded mark."""
        spans: dict[str, float] = {}
        previous: float | None = None
        for name in MARKS:
            at = self.marks.get(name)
            if at is None:
                continue
            if previous is not None:
                spans[name] = round((at - previous) * 1000, 1)
            previous = at
        return spans

    def as_event(self) -> dict[str, Any]:
        """The ``turn_latency`` event sent to clients."""
        v2v = self.v2v_ms()
        return {
            "type": "turn_latency",
            "reply": self.reply,
            "v2v_ms": None if v2v is None else round(v2v, 1),
            "waterfall_ms": self.waterfall_ms(),
            "breakdown_ms": self.breakdown_ms(),
        }
