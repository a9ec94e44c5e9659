"""The utterance scheduler alone (sans I/O): events in, decode jobs and transcripts out.

The "recogniser" here reads words written into the audio itself: sample value
(k + 1) / 100 held for at least 0.2 s is SCRIPT[k]. So what a job's audio window holds
is exactly what it hears, and lost or doubled audio shows as lost or doubled words.
"""

from __future__ import annotations

import itertools

import numpy as np

from voxline.pipeline.asr.scheduler import AsrSettings, DecodeJob, UtteranceScheduler
from voxline.words import Word

RATE = 16000
SCRIPT = ["ever", "tried.", "ever", "failed.", "no", "matter.", "try", "again."]


def speech(words: list[int], word_s: float = 0.3) -> np.ndarray:
    """Audio spelling SCRIPT[k] for each k, ``word_s`` each."""
    return np.concatenate([np.full(round(word_s * RATE), (k + 1) / 100, np.float32) for k in words])


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def hear(job: DecodeJob) -> list[Word]:
    """The words in the job's window after its prefix, in stream time."""
    audio = job.audio
    heard = []
    edges = [0, *(np.flatnonzero(np.diff(audio)) + 1).tolist(), len(audio)]
    for lo, hi in itertools.pairwise(edges):
        if (hi - lo) / RATE >= 0.2 and audio[lo] > 0:
            heard.append(Word(SCRIPT[round(audio[lo] * 100) - 1], job.offset_s + lo / RATE, job.offset_s + hi / RATE, 0.9))
    return heard[len(job.prefix_words):]


class Driver:
    """Feeds a scheduler 20 ms chunks and runs its jobs at once (an idle engine)."""

    def __init__(self, settings: AsrSettings) -> None:
        self.scheduler = UtteranceScheduler(settings)
        self.position = 0
        self.jobs: list[DecodeJob] = []
        self.finals: list[str] = []
        self.partials: list[str] = []

    def run_jobs(self) -> None:
        while (job := self.scheduler.take_job()) is not None:
            self.jobs.append(job)
            self.scheduler.decoded(job, hear(job))
        for t in self.scheduler.take_transcripts():
            (self.finals if t.is_final else self.partials).append(" ".join(w.text for w in t.words))

    def feed(self, audio: np.ndarray) -> None:
        for i in range(0, len(audio), 320):
            chunk = audio[i : i + 320]
            self.scheduler.audio(chunk, self.position / RATE)
            self.position += len(chunk)
            self.run_jobs()

    @property
    def now_s(self) -> float:
        return self.position / RATE

    def event(self, name: str, at_s: float) -> None:
        s = self.scheduler
        {"start": lambda: s.speech_start(at_s), "pause": lambda: s.speech_pause(at_s),
         "resume": lambda: s.speech_resume(at_s), "stop": lambda: s.speech_stop(at_s)}[name]()
        self.run_jobs()


NO_PARTIALS = AsrSettings(partial_interval_ms=60_000, early_final_ms=100, final_tail_ms=120)


def test_speech_resuming_after_an_early_final_loses_nothing_even_when_the_vad_is_late() -> None:
    d = Driver(NO_PARTIALS)
    d.event("start", 0.0)
    d.feed(speech([0, 1]))                      # "ever tried." 0.0-0.6
    d.event("pause", 0.6)
    d.feed(quiet(0.25))                         # early final after 100 ms of quiet
    assert d.finals == ["ever tried."]
    d.feed(speech([2, 3]))                      # "ever failed." from 0.85 s
    d.event("resume", 0.85 + 0.35)              # the VAD noticed 350 ms late
    d.event("pause", 1.45)
    d.feed(quiet(0.4))
    d.event("stop", 1.65)
    d.scheduler.end_of_stream()
    d.run_jobs()
    assert d.finals == ["ever tried.", "ever failed."]


def test_a_final_hears_past_the_point_where_the_vad_turned_quiet() -> None:
    d = Driver(NO_PARTIALS)
    d.event("start", 0.0)
    d.feed(speech([0, 1]))
    d.event("pause", 0.5)                       # quiet reported inside the soft end of "tried."
    d.feed(quiet(0.3))
    speculative = [j for j in d.jobs if j.speculative]
    assert speculative and speculative[0].offset_s + len(speculative[0].audio) / RATE >= 0.5 + 0.12
    assert d.finals == ["ever tried."]


def test_each_decode_gets_the_earlier_finals_as_context() -> None:
    d = Driver(NO_PARTIALS)
    for k, start in enumerate((0.0, 1.2)):
        d.event("start", start)
        d.feed(speech([2 * k, 2 * k + 1]))
        d.event("pause", d.now_s)
        d.feed(quiet(0.6))
        d.event("stop", d.now_s - 0.4)
    assert d.finals == ["ever tried.", "ever failed."]
    last = d.jobs[-1]
    assert last.context_words == ("ever", "tried.")
    assert d.jobs[0].context_words == ()


def test_one_decode_in_flight_and_a_stream_end_during_a_pause_still_finishes() -> None:
    s = UtteranceScheduler(AsrSettings(partial_interval_ms=100, min_partial_audio_ms=100, final_tail_ms=120))
    s.speech_start(0.0)
    s.audio(speech([0, 1]), 0.0)
    job = s.take_job()
    assert job is not None and not job.final
    assert s.take_job() is None                 # one at a time
    s.speech_pause(0.6)                         # the speculative final waits for its tail audio
    s.decoded(job, hear(job))
    assert s.take_job() is None
    s.end_of_stream()                           # no more audio will come
    final = s.take_job()
    assert final is not None and final.final and not final.speculative
    s.decoded(final, hear(final))
    assert s.finished
    assert [" ".join(w.text for w in t.words) for t in s.take_transcripts() if t.is_final] == ["ever tried."]


def test_a_stop_after_an_early_final_closes_nothing_and_the_next_start_is_new_speech() -> None:
    d = Driver(NO_PARTIALS)
    d.event("start", 0.0)
    d.feed(speech([4, 5]))                      # "no matter."
    d.event("pause", 0.6)
    d.feed(quiet(0.4))
    d.event("stop", 0.8)
    d.feed(quiet(0.5))
    d.event("start", 1.5)
    d.feed(speech([6, 7]))
    d.event("pause", d.now_s)
    d.feed(quiet(0.5))
    assert d.finals == ["no matter.", "try again."]


def test_long_speech_is_split_without_losing_or_doubling_words() -> None:
    d = Driver(AsrSettings(partial_interval_ms=300, max_window_s=1.2, commit_min_tail_s=0.2))
    d.event("start", 0.0)
    d.feed(speech([0, 1, 2, 3, 4, 5, 6, 7]))
    d.scheduler.end_of_stream()
    d.run_jobs()
    assert len(d.finals) >= 2
    assert " ".join(d.finals) == " ".join(SCRIPT)


def test_a_stop_inside_the_last_word_waits_for_the_late_tail_unless_new_speech_starts() -> None:
    # SCRIPT[4] "no" is spoken 0.0-0.3; "matter." 0.3-0.9 but the VAD stops at 0.5.
    d = Driver(AsrSettings(partial_interval_ms=60_000, early_final_ms=100, final_tail_ms=50, late_tail_ms=500))
    d.event("start", 0.0)
    d.feed(np.concatenate([speech([4]), speech([5], word_s=0.6)])[: round(0.55 * RATE)])
    d.event("pause", 0.35)                      # quiet reported inside "matter."
    d.event("stop", 0.55)
    assert d.finals == []                       # "no" ends no sentence: wait for the tail
    d.feed(np.concatenate([speech([4]), speech([5], word_s=0.6), quiet(1.0)])[round(0.55 * RATE) :])
    assert d.finals == ["no matter."]
    # With the next utterance starting right away, the tail stops where it starts.
    d = Driver(AsrSettings(partial_interval_ms=60_000, early_final_ms=0, late_tail_ms=500))
    d.event("start", 0.0)
    d.feed(speech([6]))
    d.event("pause", 0.3)
    d.event("stop", 0.3)
    d.event("start", 0.3)
    d.feed(np.concatenate([speech([7]), quiet(0.6)]))
    d.event("pause", 0.6)
    d.event("stop", 0.8)
    d.feed(quiet(0.6))
    assert d.finals == ["try", "again."]
