"""The playout buffer: frames out at a fixed size, pause/resume in place, what was heard."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from voxline.pipeline.agent.playout import FADE_S, PlayoutBuffer

RATE = 16000
FRAME = 320  # 20 ms
FADE = round(FADE_S * RATE)


def ramp(n: int, start: float = 0.0) -> np.ndarray:
    """Audio whose every sample is distinct, so order and gaps show."""
    return (start + np.arange(n, dtype=np.float32)) / 1e6


def drain(buffer: PlayoutBuffer, frames: int) -> np.ndarray:
    return np.concatenate([buffer.next_frame(FRAME) for _ in range(frames)])


def test_frames_are_the_queued_audio_in_order_then_silence() -> None:
    buffer = PlayoutBuffer(RATE)
    buffer.enqueue("one two", ramp(500), turn=1)
    buffer.enqueue("three", ramp(300, 500), turn=1)
    out = drain(buffer, 4)
    assert np.array_equal(out[:800], ramp(800))
    assert not out[800:].any() and buffer.queued_s == 0 and not buffer.playing


def test_pause_fades_to_silence_and_resume_goes_on_from_the_same_sample() -> None:
    buffer = PlayoutBuffer(RATE)
    audio = ramp(2000, 1.0)  # no zero sample: a gap would show
    buffer.enqueue("hello there friend", audio, turn=1)
    first = drain(buffer, 2)
    buffer.pause()
    fading = buffer.next_frame(FRAME)
    assert fading[:FADE].all() and not fading[FADE:].any()
    assert not drain(buffer, 10).any()
    buffer.resume()
    rest = drain(buffer, 5)
    played = np.concatenate([first, fading[:FADE], rest[: 2000 - len(first) - FADE]])
    gain = played / audio
    assert np.all((gain > 0) & (gain <= 1 + 1e-6))  # nothing repeated or skipped, only faded
    assert np.allclose(gain[: len(first)], 1) and np.allclose(gain[len(first) + 2 * FADE :], 1)


def test_stopping_mid_waveform_never_clicks() -> None:
    """A pause, a resume and a flush each ramp a loud tone instead of cutting it."""
    t = np.arange(RATE) / RATE
    tone = (0.8 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    largest_step = float(np.abs(np.diff(tone)).max())
    buffer = PlayoutBuffer(RATE)
    buffer.enqueue("a long tone", tone, turn=1)
    out = [drain(buffer, 3)]
    buffer.pause()
    out.append(drain(buffer, 3))
    buffer.resume()
    out.append(drain(buffer, 3))
    buffer.flush()
    out.append(drain(buffer, 3))
    played = np.concatenate([np.zeros(1, np.float32), *out])
    assert float(np.abs(np.diff(played)).max()) <= largest_step * 1.05


def test_a_flush_keeps_only_the_words_played_to_their_end() -> None:
    buffer = PlayoutBuffer(RATE)
    text = "the weather will stay cool and cloudy"
    buffer.enqueue(text, ramp(RATE), turn=3)  # one second, words spread by length
    drain(buffer, 25)  # half a second played
    heard = buffer.flush()
    assert len(heard) == 1 and heard[0].interrupted and heard[0].turn == 3
    words = heard[0].text.split()
    assert 2 <= len(words) <= 5 and text.startswith(heard[0].text)
    assert buffer.queued_s == 0
    fading, after = buffer.next_frame(FRAME), buffer.next_frame(FRAME)
    assert np.abs(fading[:FADE]).max() > 0 and not fading[FADE:].any() and not after.any()


def test_a_turn_played_to_the_end_is_heard_whole_and_not_interrupted() -> None:
    buffer = PlayoutBuffer(RATE)
    buffer.enqueue("Sure.", ramp(3000), turn=1)
    buffer.enqueue("Here it is.", ramp(3000), turn=1)
    drain(buffer, 20)
    assert buffer.heard(1).text == "Sure. Here it is."
    heard = buffer.flush()
    assert heard[0].text == "Sure. Here it is." and not heard[0].interrupted


def test_audio_past_the_limit_is_refused_not_dropped_silently() -> None:
    buffer = PlayoutBuffer(RATE, max_s=1.0)
    assert buffer.enqueue("a", ramp(RATE // 2), turn=1)
    assert not buffer.enqueue("b", ramp(RATE), turn=1)
    assert buffer.queued_s == 0.5


@given(st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=8), st.integers(1, 400))
def test_whatever_the_sizes_every_queued_sample_comes_out_once_in_order(sizes: list[int], frame: int) -> None:
    buffer = PlayoutBuffer(RATE)
    expected = []
    offset = 0
    for n in sizes:
        audio = ramp(n, offset) + 0.5  # never zero, so silence is told apart
        buffer.enqueue("word " * (n % 4 + 1), audio, turn=1)
        expected.append(audio)
        offset += n
    total = offset
    out = np.concatenate([buffer.next_frame(frame) for _ in range(total // frame + 2)])
    assert np.array_equal(out[:total], np.concatenate(expected)) and not out[total:].any()


def test_recent_words_are_those_played_lately_and_the_one_playing() -> None:
    buffer = PlayoutBuffer(RATE)
    buffer.enqueue("one two three four", ramp(RATE, 1.0), turn=1)  # one second, four words
    drain(buffer, 25)  # half a second: "one" and "two" played, "three" playing
    assert buffer.recent_words(5.0) == ["one", "two", "three"]
    drain(buffer, 25 + 100)  # the rest, then two seconds of silence
    assert buffer.recent_words(5.0) == ["one", "two", "three", "four"]
    assert buffer.recent_words(1.0) == []
