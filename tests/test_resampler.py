"""The streaming resampler: aligned, joins invisible, aliasing kept out, latency small."""

from __future__ import annotations

import numpy as np
import pytest

from voxline.resampler import StreamResampler


def tone(hz: float, rate_hz: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def chunked(resampler: StreamResampler, audio: np.ndarray, chunk: int) -> np.ndarray:
    parts = [resampler.process(audio[i : i + chunk]) for i in range(0, len(audio), chunk)]
    return np.concatenate([*parts, resampler.flush()])


def level_db(audio: np.ndarray, reference: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(audio**2)) / np.sqrt(np.mean(reference**2))))


def test_a_decimated_tone_lines_up_sample_for_sample_with_the_input() -> None:
    audio = tone(1000, 48000)
    out = chunked(StreamResampler(48000, 16000), audio, 960)
    assert len(out) == len(audio) // 3
    assert np.max(np.abs(out[100:-100] - audio[::3][100:-100])) < 1e-3


def test_an_interpolated_tone_lines_up_sample_for_sample_with_the_input() -> None:
    """8 → 16 kHz (a phone caller): every other output sample is the input, the rest lie between."""
    audio = tone(1000, 8000)
    out = chunked(StreamResampler(8000, 16000), audio, 160)
    assert len(out) == 2 * len(audio)
    assert np.max(np.abs(out[::2][100:-100] - audio[100:-100])) < 2e-3
    assert np.max(np.abs(out[200:-200] - tone(1000, 16000)[200:-200])) < 2e-3


def test_interpolation_leaves_no_image_above_the_phone_band() -> None:
    """A 3 kHz tone at 8 kHz comes back at 3 kHz, with its 5 kHz mirror image gone."""
    audio = tone(3000, 8000)
    out = chunked(StreamResampler(8000, 16000), audio, 160)[200:-200]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    hz = np.fft.rfftfreq(len(out), 1 / 16000)
    at = lambda f: spectrum[np.argmin(np.abs(hz - f))]  # noqa: E731
    assert 20 * np.log10(at(5000) / at(3000)) < -60
    assert abs(level_db(out, audio)) < 0.1


@pytest.mark.parametrize(
    ("rates", "chunk"),
    [((48000, 16000), 960), ((48000, 16000), 7), ((22050, 48000), 441), ((8000, 16000), 160), ((8000, 16000), 7)],
)
def test_chunk_joins_leave_no_trace(rates: tuple[int, int], chunk: int) -> None:
    audio = tone(440, rates[0]) * np.linspace(0, 1, rates[0], dtype=np.float32)
    whole = chunked(StreamResampler(*rates), audio, len(audio))
    pieces = chunked(StreamResampler(*rates), audio, chunk)
    assert len(pieces) == len(whole)
    assert np.max(np.abs(pieces - whole)) < 1e-5


def test_tones_that_would_alias_into_speech_are_removed() -> None:
    for hz in (8500, 12000, 20000):
        audio = tone(hz, 48000)
        out = chunked(StreamResampler(48000, 16000), audio, 960)
        assert level_db(out[200:-200], audio) < -70, hz
    speech_band = tone(3000, 48000)
    assert abs(level_db(chunked(StreamResampler(48000, 16000), speech_band, 960)[200:-200], speech_band)) < 0.1


@pytest.mark.parametrize(("rates", "max_ms"), [((48000, 16000), 2.0), ((22050, 48000), 2.0), ((8000, 16000), 5.0)])
def test_a_click_comes_out_within_a_few_milliseconds(rates: tuple[int, int], max_ms: float) -> None:
    """What a 20 ms chunk holds comes out with it, give or take the filter's delay."""
    rate_in, rate_out = rates
    resampler = StreamResampler(rate_in, rate_out)
    chunk = rate_in // 50
    produced = 0
    for i in range(20):
        audio = np.zeros(chunk, np.float32)
        audio[chunk // 2] = 1.0 if i == 10 else 0.0
        out = resampler.process(audio)
        if i == 10:
            assert np.abs(out).max() > 0.1, "the click was held back past its chunk"
        produced += len(out)
        owed = (i + 1) * chunk * rate_out / rate_in - produced
        assert owed / rate_out * 1000 <= max_ms


def test_equal_rates_pass_through() -> None:
    audio = tone(440, 16000, 0.1)
    resampler = StreamResampler(16000, 16000)
    assert np.array_equal(resampler.process(audio), audio)
    assert len(resampler.flush()) == 0
