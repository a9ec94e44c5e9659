"""Silero VAD on onnxruntime and the speech segmenter, on real and synthetic audio."""

from __future__ import annotations

import numpy as np
import pytest
from speech_fixtures import FOX, SAMPLE_RATE_HZ, STELLA, silence, speech, white_noise

from voxline.models.vad import (
    VAD_WINDOW_SAMPLES,
    SileroVadModel,
    SileroVadStream,
    SpeechEnded,
    SpeechEvent,
    SpeechSegmenter,
    SpeechStarted,
    VadProbability,
)


def run_vad(audio: np.ndarray, chunk: int = 320) -> tuple[list[VadProbability], list[SpeechEvent]]:
    stream = SileroVadStream()
    segmenter = SpeechSegmenter()
    probs: list[VadProbability] = []
    for i in range(0, len(audio), chunk):
        probs += stream.feed(audio[i : i + chunk])
    return probs, segmenter.push_many(probs) + segmenter.flush()


def segments(events: list[SpeechEvent]) -> list[tuple[int, int]]:
    starts = [e.start_samples for e in events if isinstance(e, SpeechStarted)]
    ends = [e.end_samples for e in events if isinstance(e, SpeechEnded)]
    assert len(starts) == len(ends)
    return list(zip(starts, ends, strict=True))


def speech_span(audio: np.ndarray, offset: int) -> tuple[int, int]:
    """First and last sample of ``audio`` louder than -40 dBFS, shifted by ``offset``."""
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return offset + int(loud[0]), offset + int(loud[-1])


def test_the_model_is_shared_by_the_whole_process() -> None:
    assert SileroVadModel.shared() is SileroVadModel.shared()


def test_probabilities_come_one_per_512_samples_stamped_with_their_window() -> None:
    probs, _ = run_vad(silence(1.0), chunk=700)
    assert len(probs) == SAMPLE_RATE_HZ // VAD_WINDOW_SAMPLES
    assert [p.pts_samples for p in probs] == [i * VAD_WINDOW_SAMPLES for i in range(len(probs))]


def test_chunk_size_does_not_change_the_probabilities() -> None:
    audio = np.concatenate([silence(0.3), speech(FOX)])
    small, _ = run_vad(audio, chunk=160)
    whole, _ = run_vad(audio, chunk=len(audio))
    assert [p.pts_samples for p in small] == [p.pts_samples for p in whole]
    np.testing.assert_allclose(
        [p.probability for p in small], [p.probability for p in whole], atol=1e-5
    )


@pytest.mark.parametrize(
    "audio",
    [silence(3.0), white_noise(3.0, rms=0.1), white_noise(3.0, rms=0.01, seed=1)],
    ids=["silence", "loud-white-noise", "quiet-white-noise"],
)
def test_silence_and_white_noise_hold_no_speech(audio: np.ndarray) -> None:
    probs, events = run_vad(audio)
    assert events == []
    assert max(p.probability for p in probs) < 0.35


def test_one_sentence_gives_exactly_one_segment_covering_it() -> None:
    lead = silence(0.5)
    voice = speech(FOX)
    audio = np.concatenate([lead, voice, silence(0.8)])
    _, events = run_vad(audio)
    [(start, end)] = segments(events)
    first, last = speech_span(voice, len(lead))
    assert start <= first
    assert end >= last
    assert end - start < len(voice) + 0.5 * SAMPLE_RATE_HZ


def test_two_sentences_a_second_apart_give_two_segments() -> None:
    lead, gap = silence(0.5), silence(1.0)
    one, two = speech(FOX), speech(STELLA)
    audio = np.concatenate([lead, one, gap, two, silence(0.8)])
    _, events = run_vad(audio)
    [(s1, e1), (s2, e2)] = segments(events)
    f1, l1 = speech_span(one, len(lead))
    f2, l2 = speech_span(two, len(lead) + len(one) + len(gap))
    assert s1 <= f1 and e1 >= l1
    assert s2 <= f2 and e2 >= l2
    assert e1 <= s2


def test_speech_open_at_end_of_stream_is_closed_by_flush() -> None:
    audio = np.concatenate([silence(0.3), speech(FOX)])
    _, events = run_vad(audio)
    assert isinstance(events[0], SpeechStarted)
    assert isinstance(events[-1], SpeechEnded)


def test_segmenter_needs_min_speech_before_an_onset_and_the_hangover_before_an_offset() -> None:
    seg = SpeechSegmenter(min_speech_ms=96, min_silence_ms=96, speech_pad_ms=32)
    w = VAD_WINDOW_SAMPLES
    probs = [0.9, 0.1, 0.9, 0.9, 0.9, 0.4, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]
    events = [(i, e) for i, p in enumerate(probs) for e in seg.push(i * w, p)]
    # 2..4 is the first run of three loud windows; 0.4 (between thresholds) keeps speech,
    # the quiet run 6..7 is broken by 8, the run 9..11 closes it.
    assert events == [(4, SpeechStarted(2 * w - w)), (11, SpeechEnded(9 * w + w))]


def test_mono_audio_only() -> None:
    with pytest.raises(ValueError):
        SileroVadStream().feed(np.zeros((2, 512), dtype=np.float32))
