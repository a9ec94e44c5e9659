"""Synthesized speech and text helpers shared by the model tests (not a conftest).

Audio is spoken by Piper (``voxline.testing.speech_synth``) at 16 kHz and cached per
text for the whole test run, so each sentence is synthesized once.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import numpy.typing as npt

from voxline.testing.speech_synth import synthesize

SAMPLE_RATE_HZ = 16000

FOX = "The quick brown fox jumps over the lazy dog."
STELLA = "Please call Stella and ask her to bring these things with her from the store."
COFFEE = "I would like a cup of coffee with milk, please."
TRAIN = "We will meet at the train station at half past nine."
WINDOW = "Open the window, it is getting warm in here."


@functools.lru_cache(maxsize=64)
def _cached(text: str) -> npt.NDArray[np.float32]:
    audio = synthesize(text, SAMPLE_RATE_HZ)
    audio.setflags(write=False)
    return audio


def speech(text: str) -> npt.NDArray[np.float32]:
    """Piper speaking ``text`` at 16 kHz (float32, mono); a fresh writable copy."""
    return _cached(text).copy()


def silence(seconds: float) -> npt.NDArray[np.float32]:
    """Digital silence of ``seconds`` at 16 kHz."""
    return np.zeros(round(seconds * SAMPLE_RATE_HZ), dtype=np.float32)


def white_noise(seconds: float, rms: float = 0.1, seed: int = 0) -> npt.NDArray[np.float32]:
    """Gaussian white noise of ``seconds`` at 16 kHz with the given RMS level."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * SAMPLE_RATE_HZ)) * rms).astype(np.float32)


_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; the numbers 0–12 spelled out (Whisper writes
    "9" or "nine" depending on the text before it, as it was prompted with)."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()
    return [_NUMBER_WORDS[int(w)] if w.isdigit() and int(w) < len(_NUMBER_WORDS) else w for w in words]


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level edit distance (substitutions + insertions + deletions), normalized."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]
