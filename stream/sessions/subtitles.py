"""Subtitles from finals: SRT and WebVTT, for a caption socket's ``subtitles`` and a session's transcript."""

from __future__ import annotations

import collections
import math
from typing import Any

SUBTITLE_FORMATS = {"srt", "vtt"}
MAX_SUBTITLE_CUES = 20_000
"""Cues a session keeps for subtitles (about 40 hours of speech); older ones roll off."""


class SubtitleTrack:
    """The finals of one session as subtitle cues, rendered as they arrive.

    Each final's SRT and WebVTT blocks are made once, when it is added; asking for the
    file only joins them, so a client that asks often costs little. At most
    ``max_cues`` cues are kept (the oldest roll off), so memory per session is bounded.
    """

    def __init__(self, max_cues: int = MAX_SUBTITLE_CUES) -> None:
        self._blocks: collections.deque[tuple[str, str]] = collections.deque(maxlen=max_cues)
        self._count = 0

    def add(self, start_s: float, end_s: float, text: str) -> None:
        """Add one final's cue (ignored when its text is empty)."""
        if not text:
            return
        self._count += 1
        srt = f"{self._count}\n{_timestamp(start_s, ',')} --> {_timestamp(end_s, ',')}\n{text}\n\n"
        vtt = f"{_timestamp(start_s, '.')} --> {_timestamp(end_s, '.')}\n{text}\n\n"
        self._blocks.append((srt, vtt))

    def render(self, fmt: str) -> str:
        """The cues so far as SRT or WebVTT text."""
        if fmt not in SUBTITLE_FORMATS:
            raise ValueError(f"unknown subtitle format {fmt!r}")
        if fmt == "srt":
            return "".join(srt for srt, _ in self._blocks)
        return "WEBVTT\n\n" + "".join(vtt for _, vtt in self._blocks)


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, math.floor(seconds * 1000 + 0.5))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(finals: list[dict[str, Any]], fmt: str) -> str:
    """Render final caption events (dicts with start, end, text) as SRT or WebVTT text."""
    track = SubtitleTrack(max_cues=max(1, len(finals)))
    for cue in finals:
        track.add(cue["start"], cue["end"], cue.get("text", ""))
    return track.render(fmt)
