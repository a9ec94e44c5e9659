"""The ``real`` test set: human recordings with reference texts (``data/real/SOURCES.md``).

The recordings ship in the repository (2 MB of FLAC), copied from the source archives
of PyPI packages, where they are test data; their wheels do not carry them, so they
could not be loaded from an installed package.

    clips = real_clips()      # tuple[Clip, ...], 16 kHz, sorted by name
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

try:  # run as a script (bench/ on sys.path) or imported as bench.real_speech
    from testset import SAMPLE_RATE_HZ, Clip, make_clip
except ImportError:  # pragma: no cover
    from .testset import SAMPLE_RATE_HZ, Clip, make_clip  # type: ignore[no-redef]

REAL_DIR = Path(__file__).resolve().parent / "data" / "real"
LONG_PASSAGE = "sonnet1_librivox"
"""The 53 s read passage with pauses: one long turn for the agent."""


@functools.lru_cache(maxsize=1)
def real_clips() -> tuple[Clip, ...]:
    """Every ``X.flac`` with its ``X.txt`` reference in ``REAL_DIR``, as 16 kHz clips."""
    import soundfile

    clips = []
    for flac in sorted(REAL_DIR.glob("*.flac")):
        audio, rate = soundfile.read(str(flac), dtype="float32")
        if rate != SAMPLE_RATE_HZ:
            raise ValueError(f"{flac.name} is {rate} Hz; the set is stored at {SAMPLE_RATE_HZ} Hz")
        audio = np.asarray(audio, dtype=np.float32)
        audio.setflags(write=False)
        clips.append(make_clip(flac.stem, flac.with_suffix(".txt").read_text(encoding="utf-8"), audio))
    if not clips:
        raise FileNotFoundError(f"no recordings in {REAL_DIR}")
    return tuple(clips)


def real_clip(name: str) -> Clip:
    """One recording of the set by name (e.g. ``LONG_PASSAGE``)."""
    for clip in real_clips():
        if clip.name == name:
            return clip
    raise KeyError(name)
