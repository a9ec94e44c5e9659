"""The benches' phone line: half the samples, speech band kept cleanly, above 4 kHz gone, silence silent."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from narrowband import PHONE_RATE_HZ, WIDE_RATE_HZ, telephone, to_listen_rate

EDGE = 400  # samples at 8 kHz left out at each end (the resampler's filter edges)
KHZ_TONE_HZ = 997  # "1 kHz" as audio test gear plays it: exactly 1000 Hz at 8 kHz repeats 8 sample
# values, so the codec's error would be a few fixed harmonics instead of noise (34 vs 38 dB for μ-law)


def tone(hz: float, rate_hz: int = WIDE_RATE_HZ, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def snr_db(audio: np.ndarray, hz: float, rate_hz: int) -> float:
    """The tone at ``hz`` (any phase, least squares) against everything else in ``audio``."""
    t = np.arange(len(audio)) / rate_hz
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, audio.astype(np.float64), rcond=None)
    fitted = basis @ coef
    return float(10 * np.log10(np.sum(fitted**2) / np.sum((audio - fitted) ** 2)))


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_a_phone_line_returns_half_as_many_float32_samples(law: str) -> None:
    out = telephone(tone(KHZ_TONE_HZ), law=law)  # type: ignore[arg-type]
    assert out.dtype == np.float32
    assert len(out) == WIDE_RATE_HZ // 2 == PHONE_RATE_HZ


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_a_1khz_tone_comes_through_with_more_than_30_db_snr(law: str) -> None:
    out = telephone(tone(KHZ_TONE_HZ), law=law)[EDGE:-EDGE]  # type: ignore[arg-type]
    assert snr_db(out, KHZ_TONE_HZ, PHONE_RATE_HZ) > 30
    assert np.sqrt(np.mean(out**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_the_tone_stays_in_step_with_the_input() -> None:
    audio = tone(KHZ_TONE_HZ)
    out = telephone(audio)
    assert np.max(np.abs(out[EDGE:-EDGE] - audio[::2][EDGE:-EDGE])) < 0.02


def test_a_5khz_tone_is_outside_the_phone_band_and_gone() -> None:
    out = telephone(tone(5000))[EDGE:-EDGE]
    assert np.sqrt(np.mean(out**2)) < 0.5 / np.sqrt(2) * 10 ** (-50 / 20)


def test_silence_stays_exact_silence() -> None:
    assert not telephone(np.zeros(WIDE_RATE_HZ, np.float32)).any()


def test_samples_beyond_full_scale_are_clipped_not_wrapped() -> None:
    out = telephone(tone(500, amplitude=1.5))
    assert np.max(np.abs(out)) <= 1.0
    assert np.max(out) > 0.9 and np.min(out) < -0.9


def test_back_at_16khz_the_tone_is_unchanged_and_twice_as_long() -> None:
    narrow = telephone(tone(KHZ_TONE_HZ))
    wide = to_listen_rate(narrow)
    assert abs(len(wide) - 2 * len(narrow)) <= 1
    assert snr_db(wide[2 * EDGE : -2 * EDGE], KHZ_TONE_HZ, WIDE_RATE_HZ) > 30
