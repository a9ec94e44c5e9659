"""The streaming ASR stage's own logic, around a scripted recogniser (a unit test fake).

The real Whisper path is covered end to end in tests/e2e; here the recogniser "hears"
one word per 0.3 s of audio so that pauses, resumes and early finals are exact.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable, Sequence

import numpy as np

from voxline.pipeline.frames import (
    AudioFrame,
    ControlFrame,
    ControlKind,
    Frame,
    TranscriptFrame,
    Word,
)
from voxline.pipeline.graph import Graph
from voxline.pipeline.stages.asr import AsrSettings, StreamingAsrStage

RATE = 16000
SCRIPT = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten."]


class Result:
    def __init__(self, words: tuple[Word, ...]) -> None:
        self.words = words


WORD_S = 0.3


def word_at(t_s: float) -> float:
    """The sample value that encodes which SCRIPT word is spoken at stream time ``t_s``."""
    return (int(t_s / WORD_S) % len(SCRIPT) + 1) / 100


class ScriptedRecognizer:
    """Hears SCRIPT[k] wherever the audio holds the value (k + 1) / 100 for >= 0.2 s.

    The words are written into the audio itself (see ``audio``), so windows that start
    anywhere in the stream are heard correctly.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool, tuple[str, ...]]] = []

    async def transcribe(self, audio: np.ndarray, *, prefix_words: Sequence[str] = (), context_words: Sequence[str] = (),
                         final: bool, deadline: float,
                         session_key: Hashable | None = None) -> Result:
        seconds = len(audio) / RATE
        self.calls.append((seconds, final, tuple(prefix_words)))
        await asyncio.sleep(0.001)
        heard = []
        edges = [0, *(np.flatnonzero(np.diff(audio)) + 1).tolist(), len(audio)]
        for lo, hi in itertools.pairwise(edges):
            if (hi - lo) / RATE >= 0.2 and audio[lo] > 0:
                heard.append(Word(SCRIPT[round(audio[lo] * 100) - 1], lo / RATE, hi / RATE, 0.9))
        return Result(tuple(heard[len(prefix_words):]))


async def run(frames: list[Frame], settings: AsrSettings | None = None) -> tuple[list[TranscriptFrame], ScriptedRecognizer]:
    recognizer = ScriptedRecognizer()
    graph = Graph("asr-test")
    stage = StreamingAsrStage(recognizer, settings or AsrSettings(partial_interval_ms=300))
    inbox = graph.input_to(stage, maxsize=1000)
    out = graph.output_from(stage, maxsize=1000)
    await graph.start()
    for frame in frames:
        if inbox.closed:
            raise AssertionError("the stage failed") from graph.error
        await inbox.put(frame)
        await asyncio.sleep(0.002)  # let the worker run as it would between live frames
    assert await graph.drain(5), graph.error
    transcripts = []
    while (frame := out.get_nowait()) is not None:
        if isinstance(frame, TranscriptFrame):
            transcripts.append(frame)
    return transcripts, recognizer


def audio(start_s: float, seconds: float, step: int = 320, speech: tuple[tuple[float, float], ...] = ((0, 1e9),)) -> list[Frame]:
    """Frames of ``step`` samples whose values spell SCRIPT words inside ``speech`` spans (s)."""
    first = round(start_s * RATE)
    n = round(seconds * RATE)
    times = (first + np.arange(n)) / RATE
    values = np.array([word_at(t) for t in times], dtype=np.float32)
    values[~np.any([(a <= times) & (times < b) for a, b in speech], axis=0)] = 0.0
    return [AudioFrame(samples=values[i : i + step], sample_rate_hz=RATE, pts_samples=first + i)
            for i in range(0, n, step)]


def control(kind: ControlKind, at_s: float) -> ControlFrame:
    return ControlFrame(kind=kind, media_time_s=at_s)


def finals(transcripts: list[TranscriptFrame]) -> list[str]:
    return [t.text for t in transcripts if t.is_final]


async def test_an_utterance_starts_where_the_vad_says_even_in_the_past() -> None:
    frames = [*audio(0, 1.0), control(ControlKind.SPEECH_START, 0.4), *audio(1.0, 0.6), control(ControlKind.SPEECH_STOP, 1.6)]
    transcripts, _recognizer = await run(frames)
    assert finals(transcripts) == ["two three four five"]  # 1.2 s of audio from 0.4 s
    assert transcripts[-1].words[0].start_s == 0.4


async def test_a_pause_that_becomes_the_end_is_finalized_without_a_second_decode() -> None:
    frames = [control(ControlKind.SPEECH_START, 0), *audio(0, 0.9), control(ControlKind.SPEECH_PAUSE, 0.9),
              *audio(0.9, 0.05), control(ControlKind.SPEECH_STOP, 0.95)]
    # late_tail_ms=0: "three" ends no sentence, which would otherwise wait for more audio.
    transcripts, recognizer = await run(frames, AsrSettings(partial_interval_ms=10_000, late_tail_ms=0))
    assert finals(transcripts) == ["one two three"]
    assert sum(1 for _, final, _ in recognizer.calls if final) == 1


async def test_speech_that_resumes_after_a_pause_throws_the_speculative_final_away() -> None:
    frames = [control(ControlKind.SPEECH_START, 0), *audio(0, 0.6), control(ControlKind.SPEECH_PAUSE, 0.6),
              *audio(0.6, 0.06), control(ControlKind.SPEECH_RESUME, 0.66), *audio(0.66, 0.9),
              control(ControlKind.SPEECH_STOP, 1.56)]
    transcripts, _ = await run(frames, AsrSettings(partial_interval_ms=10_000))
    assert finals(transcripts) == ["one two three four five"]


async def test_a_complete_sentence_is_final_before_the_hangover_and_speech_after_it_is_a_new_utterance() -> None:
    recognizer = ScriptedRecognizer()
    graph = Graph("asr-test")
    stage = StreamingAsrStage(recognizer, AsrSettings(partial_interval_ms=10_000, early_final_ms=100))
    inbox = graph.input_to(stage, maxsize=1000)
    out = graph.output_from(stage, maxsize=1000)
    await graph.start()
    for frame in [control(ControlKind.SPEECH_START, 0), *audio(0, 3.0), control(ControlKind.SPEECH_PAUSE, 3.0), *audio(3.0, 0.2)]:
        await inbox.put(frame)
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.05)
    early = [f for f in iter(out.get_nowait, None) if isinstance(f, TranscriptFrame)]
    assert [f.text for f in early if f.is_final] == ["one two three four five six seven eight nine ten."]
    for frame in [control(ControlKind.SPEECH_RESUME, 3.3), *audio(3.2, 0.7), control(ControlKind.SPEECH_STOP, 3.9)]:
        await inbox.put(frame)
    assert await graph.drain(5)
    late = [f for f in iter(out.get_nowait, None) if isinstance(f, TranscriptFrame) and f.is_final]
    assert len(late) == 1 and late[0].utterance == early[-1].utterance + 1
    assert late[0].words[0].start_s >= 3.0  # the new utterance starts after the early final


async def test_speech_that_starts_in_the_frame_where_the_last_utterance_ended_keeps_its_first_word() -> None:
    half_second = 8000  # the server cuts client messages into frames of up to 0.5 s
    speech = ((0.0, 0.9), (1.2, 2.1))

    def frames(a: float, b: float) -> list[Frame]:
        return audio(a, b - a, step=half_second, speech=speech)

    sequence = [
        control(ControlKind.SPEECH_START, 0.0), *frames(0, 1.0), *frames(1.0, 1.5),
        control(ControlKind.SPEECH_STOP, 1.1), control(ControlKind.SPEECH_START, 1.1),  # both decided in one frame
        *frames(1.5, 2.5), control(ControlKind.SPEECH_STOP, 2.3),
    ]
    transcripts, _ = await run(sequence, AsrSettings(partial_interval_ms=10_000, early_final_ms=0))
    assert finals(transcripts) == ["one two three", "five six seven"]


async def test_end_of_stream_mid_speech_still_gives_the_final() -> None:
    transcripts, _ = await run([control(ControlKind.SPEECH_START, 0), *audio(0, 0.7)])
    assert finals(transcripts) == ["one two"]


async def test_committed_words_never_change_and_long_speech_is_split_into_bounded_utterances() -> None:
    settings = AsrSettings(partial_interval_ms=300, max_window_s=1.2, commit_min_tail_s=0.2)
    transcripts, recognizer = await run([control(ControlKind.SPEECH_START, 0), *audio(0, 3.0)], settings)
    by_utterance: dict[int, list[TranscriptFrame]] = {}
    for t in transcripts:
        by_utterance.setdefault(t.utterance, []).append(t)
    assert len(by_utterance) >= 2  # split while speaking, no pause needed
    for seq in by_utterance.values():
        assert seq[-1].is_final and sum(t.is_final for t in seq) == 1
        for i, earlier in enumerate(seq):
            for later in seq[i + 1 :]:
                assert [w.text for w in later.words[: earlier.committed]] == [w.text for w in earlier.words[: earlier.committed]]
    assert " ".join(finals(transcripts)) == " ".join(SCRIPT)  # nothing lost or doubled at the cuts
    assert max(seconds for seconds, _, _ in recognizer.calls) <= 1.2 + 0.4  # bounded re-decoding
