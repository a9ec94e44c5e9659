"""The named speech test sets every benchmark reports: ``real``, ``hard`` and ``piper``.

- ``piper``: Piper reading ``testset.SENTENCES`` one sentence per clip (clean speech,
  its own ~0.2 s edges; the stream puts 0.8–1.2 s of silence between clips).
- ``hard``: passages of several sentences spoken as one clip, the way people read:
  150–350 ms pauses between sentences and 200–600 ms at commas, by Piper at varied
  ``length_scale`` and by espeak-ng (a second synthesizer, other voices), with noise at
  20 dB SNR over the whole stream (``HARD_SNR_DB``). Needs Debian's ``espeak-ng``.
- ``real``: human recordings with their reference texts, read from installed PyPI
  packages (``real_speech.py`` says which and under what licence).

Every clip of a set is one "recording": for captions the stream lays them out with
silences between; the agent benchmark speaks each as one user turn, pauses included.

    clips = load_set("hard")          # tuple[Clip, ...] at 16 kHz
    noise_db = SET_NOISE_SNR_DB["hard"]
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

try:  # run as a script (bench/ on sys.path) or imported as bench.speech_sets
    from real_speech import real_clips
    from testset import SAMPLE_RATE_HZ, Clip, FloatAudio, make_clip, speech_bounds, synthesize_clips
except ImportError:  # pragma: no cover
    from .real_speech import real_clips  # type: ignore[no-redef]
    from .testset import (  # type: ignore[no-redef]
        SAMPLE_RATE_HZ,
        Clip,
        FloatAudio,
        make_clip,
        speech_bounds,
        synthesize_clips,
    )

SET_NAMES = ("real", "hard", "piper")
HARD_SNR_DB = 20.0
SET_NOISE_SNR_DB: dict[str, float | None] = {"real": None, "hard": HARD_SNR_DB, "piper": None}
"""Noise added over a set's whole stream, in dB below the speech level (None: none)."""

PASSAGES: tuple[str, ...] = (
    "Stand up. Look around. Take a breath. Now begin again. Go slowly this time.",
    "When the rain finally stopped, we walked down to the harbor, where the fishing boats "
    "were coming in. The air smelled of salt and wet rope. Nobody spoke for a while.",
    "I think the problem is not the price, but the time it takes to arrive. If the parcel "
    "comes late, the whole week is lost. So we need a better plan.",
    "First, open the box. Then, take out the small white cable, and plug it into the back "
    "of the machine. Wait until the green light comes on.",
    "Yes. No. Maybe later. I really am not sure. Ask me again tomorrow, after lunch.",
    "The garden was quiet in the early morning, with dew on the grass, and birds in the "
    "hedges. An old cat sat by the gate, watching everything, and saying nothing.",
)
"""Passages of the ``hard`` set (no digits, no proper nouns: one obvious spelling)."""

SENTENCE_PAUSES_S = (0.15, 0.25, 0.35, 0.2, 0.3)
COMMA_PAUSES_S = (0.2, 0.45, 0.6, 0.3, 0.5, 0.25)
PIPER_LENGTH_SCALES = (0.85, 1.0, 1.15, 1.3)
ESPEAK_VOICES = (("en-us", 165), ("en-gb", 155), ("en-gb-scotland", 170), ("en-029", 160))
EDGE_MARGIN_S = 0.03
"""Audio kept around each phrase's speech when phrases are joined with exact pauses (s)."""


def phrases(passage: str) -> list[tuple[str, str]]:
    """``passage`` cut into (phrase, what follows it: "comma", "sentence" or "end")."""
    out: list[tuple[str, str]] = []
    current: list[str] = []
    for word in passage.split():
        current.append(word)
        if word.endswith((".", "?", "!")):
            out.append((" ".join(current), "sentence"))
            current = []
        elif word.endswith(","):
            out.append((" ".join(current), "comma"))
            current = []
    if current:
        out.append((" ".join(current), "sentence"))
    if out:
        out[-1] = (out[-1][0], "end")
    return out


def _trim(audio: FloatAudio) -> FloatAudio:
    first, last = speech_bounds(audio)
    if last < first:
        return audio[:0]
    margin = round(EDGE_MARGIN_S * SAMPLE_RATE_HZ)
    return audio[max(0, first - margin) : last + 1 + margin]


def join_phrases(passage: str, speak: Callable[[str], FloatAudio], index: int) -> FloatAudio:
    """``passage`` spoken phrase by phrase by ``speak(text) -> 16 kHz audio``, with the
    set's pauses between sentences and at commas (picked in a fixed pattern by ``index``)."""
    parts: list[FloatAudio] = []
    k = index
    for text, after in phrases(passage):
        parts.append(_trim(speak(text)))
        if after == "end":
            break
        pattern = SENTENCE_PAUSES_S if after == "sentence" else COMMA_PAUSES_S
        parts.append(np.zeros(round(pattern[k % len(pattern)] * SAMPLE_RATE_HZ), np.float32))
        k += 1
    return np.concatenate(parts).astype(np.float32)


def espeak(text: str, voice: str, words_per_minute: int) -> FloatAudio:
    """espeak-ng speaking ``text`` at 16 kHz (float32 mono)."""
    import soundfile
    import soxr

    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("the hard set needs espeak-ng: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(
            [binary, "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text],
            check=True, capture_output=True, timeout=60,
        )
        audio, rate = soundfile.read(str(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, SAMPLE_RATE_HZ).astype(np.float32) if rate != SAMPLE_RATE_HZ else audio


@functools.lru_cache(maxsize=1)
def hard_clips() -> tuple[Clip, ...]:
    """Every passage by Piper (varied ``length_scale``) and by espeak-ng (varied voice)."""
    from voxline.testing.speech_synth import synthesize

    clips = []
    for i, passage in enumerate(PASSAGES):
        scale = PIPER_LENGTH_SCALES[i % len(PIPER_LENGTH_SCALES)]
        audio = join_phrases(passage, lambda t, s=scale: synthesize(t, SAMPLE_RATE_HZ, length_scale=s), i)
        clips.append(make_clip(f"piper{i}-x{scale}", passage, audio))
    for i, passage in enumerate(PASSAGES):
        voice, wpm = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        audio = join_phrases(passage, lambda t, v=voice, w=wpm: espeak(t, v, w), i + 1)
        clips.append(make_clip(f"espeak{i}-{voice}", passage, audio))
    return tuple(clips)


def load_set(name: str) -> tuple[Clip, ...]:
    """The clips of the named set (``SET_NAMES``)."""
    if name == "piper":
        return synthesize_clips()
    if name == "hard":
        return hard_clips()
    if name == "real":
        return real_clips()
    raise ValueError(f"unknown test set {name!r}; one of {', '.join(SET_NAMES)}")


def add_noise(audio: FloatAudio, snr_db: float, speech_rms: float, seed: int = 0) -> FloatAudio:
    """``audio`` with white noise ``snr_db`` below ``speech_rms`` added (clipped to [-1, 1])."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(audio)).astype(np.float32) * speech_rms * 10 ** (-snr_db / 20)
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def speech_rms(clips: tuple[Clip, ...] | list[Clip]) -> float:
    """RMS of the clips' speech (inside their speech bounds), for setting noise levels."""
    parts = [c.audio[c.speech_start : c.speech_end + 1] for c in clips]
    joined = np.concatenate(parts) if parts else np.zeros(1, np.float32)
    active = joined[np.abs(joined) > 0.01 * float(np.abs(joined).max() or 1.0)]
    return float(np.sqrt(np.mean(np.square(active)))) if active.size else 0.0
