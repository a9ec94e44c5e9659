"""The streaming ASR stage: utterance buffers, partial scheduling, stable prefix, finals.

Input: 16 kHz ``AudioFrame``s, and ``SPEECH_START``/``SPEECH_STOP`` control frames from
the VAD stage (whose ``media_time_s`` may lie in the past: the VAD needs a moment to be
sure, so this stage keeps a short ring of recent audio and starts the utterance where
the VAD says speech began; no first word is cut).

Output: ``TranscriptFrame``s. While an utterance is spoken, a partial at most every
``partial_interval_ms`` of audio (only one decode in flight per session, so a loaded
engine lowers the partial rate instead of queueing); at ``SPEECH_STOP`` (or end of
stream) one final. Committed words (``StablePrefix``) never change: they are passed
to the recogniser as a forced decoder prefix and kept verbatim in the final.

Finals come fast. At ``SPEECH_PAUSE`` (quiet began, the end is not yet sure) a
speculative final is decoded at once; if speech resumes it is thrown away, if the
pause becomes ``SPEECH_STOP`` it is the final, with no decode left to wait for. And
when that speculative text ends a sentence (. ? !) and the quiet has lasted
``early_final_ms``, the final goes out before the VAD hangover ends; speech that
resumes after it starts a new utterance.

Bounded work and memory: when an utterance's window passes ``max_window_s`` (a long
run of speech with no pause), its committed words go out as a final and the rest of
the speech continues as a new utterance, with the audio before the cut released; an
utterance with nothing committed is cut with a final at ``max_utterance_s``. So a
partial re-decodes at most about ``max_window_s`` of audio and carries only its own
utterance's words, however long the speaker goes on.
All other stages' frames pass through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

from voxline.errors import PipelineError, Superseded

from ..engines import SpeechRecognizer
from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, TranscriptFrame, Word
from ..stable_prefix import StablePrefix, cut_repetition
from ..stage import Stage
from .utterance import ASR_RATE_HZ, Continuation, Utterance

PRE_ROLL_S = 1.5


@dataclass(frozen=True, slots=True)
class AsrSettings:
    """Tuning of the streaming recogniser (times in ms or s as named)."""

    partial_interval_ms: float = 500.0
    min_partial_audio_ms: float = 300.0
    max_window_s: float = 12.0
    max_utterance_s: float = 25.0
    final_deadline_ms: float = 100.0
    early_final_ms: float = 100.0
    resume_pre_roll_s: float = 0.2
    commit_min_probability: float = 0.6
    commit_min_tail_s: float = 1.0
    forward_audio: bool = False

SENTENCE_END = (".", "?", "!")
PAUSE_COVER_S = 0.05
"""A partial that heard this far past a pause's start may stand in for its final (s)."""


@dataclass(frozen=True, slots=True)
class _Job:
    utterance: Utterance
    upto_samples: int
    final: bool
    speculative: bool = False


class StreamingAsrStage(Stage):
    """Turns speech audio into partial and final ``TranscriptFrame``s (see module doc)."""

    kind = "asr"

    def __init__(self, engine: SpeechRecognizer, settings: AsrSettings | None = None, name: str = "asr") -> None:
        super().__init__(name)
        self.engine = engine
        self.settings = settings or AsrSettings()
        self._ring: deque[AudioFrame] = deque()
        self._utterance: Utterance | None = None
        self._utterance_count = 0
        self._last_partial_samples = 0
        self._jobs: deque[_Job] = deque()
        self._job_ready = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._stream_end_s = 0.0
        self._closed_early = False
        self._last_final_end_s = 0.0

    async def on_start(self) -> None:
        """Start the per-session decode worker (owned by this stage)."""
        self._worker = asyncio.create_task(self._work(), name=f"{self.name}:worker")
        self._worker.add_done_callback(self._on_worker_done)

    def _on_worker_done(self, worker: asyncio.Task[None]) -> None:
        # A failed worker must fail the stage now, not at the next frame: wake the loop
        # with an urgent frame so that process() re-raises the worker's error.
        if not worker.cancelled() and worker.exception() is not None and self.inbox is not None:
            with contextlib.suppress(PipelineError):
                self.inbox.put_nowait(ControlFrame(turn=0, kind=ControlKind.FLUSH))

    async def on_close(self) -> None:
        """Cancel and await the decode worker."""
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # we are being cancelled too: let it through
            except Exception:
                pass  # a worker that failed already failed the stage (see _on_worker_done)

    def _check_worker(self) -> None:
        worker = self._worker
        if worker is not None and worker.done() and not worker.cancelled() and worker.exception():
            raise worker.exception()  # type: ignore[misc]

    async def process(self, frame: Frame) -> None:
        """Buffer audio, react to VAD control frames, schedule decodes; forward other frames."""
        self._check_worker()
        if isinstance(frame, AudioFrame):
            self._on_audio(frame)
            if self.settings.forward_audio:
                await self.emit(frame)
        elif isinstance(frame, ControlFrame):
            kind = frame.kind
            if kind is ControlKind.SPEECH_START:
                self._start_utterance(frame.turn, frame.media_time_s)
            elif kind is ControlKind.SPEECH_PAUSE:
                self._on_pause(frame.media_time_s)
            elif kind is ControlKind.SPEECH_RESUME:
                self._on_resume(frame)
            elif kind is ControlKind.SPEECH_STOP:
                if self._closed_early:
                    self._closed_early = False
                else:
                    self._stop_utterance(frame.media_time_s)
            await self.emit(frame)
        else:
            await self.emit(frame)

    def _on_audio(self, frame: AudioFrame) -> None:
        if frame.sample_rate_hz != ASR_RATE_HZ:
            raise ValueError(f"the ASR stage takes {ASR_RATE_HZ} Hz audio, got {frame.sample_rate_hz} Hz")
        self._stream_end_s = frame.end_s
        # Every frame goes to the ring, open utterance or not: the VAD decides after the
        # audio, so an utterance that starts right after another one ended (or after an
        # early final) inside this very frame still finds its first syllables here.
        ring = self._ring
        ring.append(frame)
        while ring and ring[0].end_s < frame.end_s - PRE_ROLL_S:
            ring.popleft()
        utterance = self._utterance
        if utterance is None:
            return
        utterance.append(frame.samples)
        settings = self.settings
        heard_ms = (utterance.samples - self._last_partial_samples) * 1000 / ASR_RATE_HZ
        window_s = (utterance.samples - utterance.trim_samples) / ASR_RATE_HZ
        if window_s >= settings.max_utterance_s and not utterance.stable.committed:
            self._stop_utterance(utterance.start_s + utterance.samples / ASR_RATE_HZ)
            self._start_utterance(frame.turn, frame.end_s)
            return
        if utterance.paused_at_s is not None:
            self._maybe_finish_early()
            return
        if (
            heard_ms >= settings.partial_interval_ms
            and utterance.samples * 1000 / ASR_RATE_HZ >= settings.min_partial_audio_ms
            and not self._jobs
        ):
            self._last_partial_samples = utterance.samples
            self._enqueue(_Job(utterance, utterance.samples, final=False))

    def _on_pause(self, at_s: float) -> None:
        utterance = self._utterance
        if utterance is None:
            return
        utterance.paused_at_s = at_s
        self._jobs = deque(j for j in self._jobs if j.final or j.utterance is not utterance)
        if self._adopt_partial_as_speculative(utterance):
            self._maybe_finish_early()
        else:
            self._enqueue(_Job(utterance, utterance.samples, final=True, speculative=True))

    def _adopt_partial_as_speculative(self, utterance: Utterance) -> bool:
        """Use the last partial as the speculative final when it already heard past the pause.

        The audio after the pause start is quiet, so decoding it again would say the same.
        """
        partial = utterance.last_partial
        if utterance.paused_at_s is None or partial is None or partial.epoch != utterance.epoch:
            return False
        heard_until_s = utterance.start_s + partial.upto_samples / ASR_RATE_HZ
        if heard_until_s < utterance.paused_at_s + PAUSE_COVER_S or partial.committed != len(utterance.stable.committed):
            return False
        utterance.speculative = partial
        return True

    def _on_resume(self, frame: ControlFrame) -> None:
        utterance = self._utterance
        if utterance is not None:
            utterance.paused_at_s = None
            utterance.epoch += 1
            utterance.speculative = None
        elif self._closed_early:
            # Speech went on after an early final: it is a new utterance.
            self._closed_early = False
            start_s = max(self._last_final_end_s, frame.media_time_s - self.settings.resume_pre_roll_s)
            self._start_utterance(frame.turn, start_s)

    def _maybe_finish_early(self) -> None:
        """Close the utterance now if its speculative final ends a sentence and the pause is long enough."""
        utterance = self._utterance
        if utterance is None or utterance.paused_at_s is None or self.settings.early_final_ms <= 0:
            return
        speculative = utterance.speculative
        if speculative is None or speculative.epoch != utterance.epoch:
            return
        words = utterance.stable.committed + speculative.continuation
        if not words or not words[-1].text.endswith(SENTENCE_END):
            return
        # The pause is counted from the end of the last word heard when that is earlier
        # than where the VAD turned quiet: its probability trails the speech by 40-150 ms.
        quiet_from_s = min(utterance.paused_at_s, words[-1].end_s)
        if (self._stream_end_s - quiet_from_s) * 1000 < self.settings.early_final_ms:
            return
        self._stop_utterance(-1.0)
        self._closed_early = True

    def _start_utterance(self, turn: int, start_s: float) -> None:
        if self._utterance is not None:
            return
        start_s = start_s if start_s >= 0 else self._stream_end_s
        self._utterance_count += 1
        utterance = Utterance(
            self._utterance_count, start_s=start_s, turn=turn,
            stable=StablePrefix(
                min_probability=self.settings.commit_min_probability, min_tail_s=self.settings.commit_min_tail_s
            ),
        )
        first = True
        for old in self._ring:
            if old.end_s <= start_s:
                continue
            skip = max(0, round((start_s - old.start_s) * ASR_RATE_HZ))
            if first:
                utterance.start_s = old.start_s + skip / ASR_RATE_HZ
                first = False
            utterance.append(old.samples[skip:])
        if first:
            utterance.start_s = self._stream_end_s
        self._utterance = utterance
        self._last_partial_samples = 0

    def _stop_utterance(self, end_s: float) -> None:
        utterance, self._utterance = self._utterance, None
        if utterance is None:
            return
        upto = utterance.samples
        if end_s >= 0:
            upto = min(upto, max(0, round((end_s - utterance.start_s) * ASR_RATE_HZ)))
        # A pending partial of this utterance is pointless once its final is queued.
        self._jobs = deque(j for j in self._jobs if j.final or j.utterance is not utterance)
        self._enqueue(_Job(utterance, upto, final=True))

    def _enqueue(self, job: _Job) -> None:
        self._jobs.append(job)
        self._job_ready.set()

    async def on_end_of_stream(self, frame: ControlFrame) -> None:
        """Finalize the open utterance, wait for every queued decode, then forward."""
        if self._utterance is not None and self._utterance.paused_at_s is None:
            self._utterance.epoch += 1  # audio may have been added since a speculative final
        self._stop_utterance(-1.0)
        self._enqueue(_Job(Utterance(-1, 0.0, 0), 0, final=True))  # sentinel: worker exits
        worker = self._worker
        if worker is not None:
            await worker
        await self.emit(frame)

    async def _work(self) -> None:
        while True:
            while not self._jobs:
                self._job_ready.clear()
                await self._job_ready.wait()
            job = self._jobs.popleft()
            if job.utterance.index < 0:
                return
            await self._decode(job)

    async def _split_if_long(self, utterance: Utterance, upto_samples: int) -> None:
        """Past ``max_window_s`` of window, send the committed words as a final of their own.

        The speech after them goes on as a new utterance (new index), so partials stay
        short and the audio before the cut is released.
        """
        window_s = (upto_samples - utterance.trim_samples) / ASR_RATE_HZ
        committed = list(utterance.stable.committed)
        if window_s <= self.settings.max_window_s or not committed:
            return
        cut = round((committed[-1].end_s - utterance.start_s) * ASR_RATE_HZ)
        await self._emit_final(utterance, [], upto_samples, words=committed)
        utterance.cut_before(max(utterance.trim_samples, min(cut, upto_samples)))
        self._utterance_count += 1
        utterance.index = self._utterance_count
        utterance.partials_sent = 0
        utterance.last_text = ""

    async def _decode(self, job: _Job) -> None:
        utterance = job.utterance
        speculative = utterance.speculative
        if job.final and not job.speculative and speculative is not None and speculative.epoch == utterance.epoch \
                and speculative.committed == len(utterance.stable.committed):
            await self._emit_final(utterance, speculative.continuation, speculative.upto_samples)
            return
        continuation = await self._recognise(job)
        if continuation is None:
            return
        if job.speculative:
            if utterance.paused_at_s is not None:
                utterance.speculative = Continuation(
                    utterance.epoch, len(utterance.stable.committed), job.upto_samples, continuation
                )
                if self._utterance is utterance:
                    self._maybe_finish_early()
        elif job.final:
            await self._emit_final(utterance, continuation, job.upto_samples)
        else:
            await self._emit_partial(utterance, continuation, job.upto_samples)

    async def _recognise(self, job: _Job) -> list[Word] | None:
        """Decode the job's window; its words after the committed prefix, in stream time.

        None when a newer request of this session superseded a partial.
        """
        utterance = job.utterance
        settings = self.settings
        if not job.final:
            await self._split_if_long(utterance, job.upto_samples)
        audio = utterance.window(job.upto_samples)
        offset_s = utterance.window_start_s
        prefix = [w.text for w in utterance.stable.committed]
        budget_ms = settings.final_deadline_ms if job.final else settings.partial_interval_ms
        if len(audio) < ASR_RATE_HZ // 10:
            return []
        try:
            result = await self.engine.transcribe(
                audio,
                prefix_words=prefix,
                final=job.final,
                deadline=time.monotonic() + budget_ms / 1000,
                session_key=self,
            )
        except Superseded:
            if job.final:
                raise
            return None
        heard = cut_repetition(prefix, result.words)
        return [Word(w.text, w.start_s + offset_s, w.end_s + offset_s, w.probability) for w in heard]

    async def _emit_final(
        self, utterance: Utterance, continuation: list[Word], upto_samples: int, words: list[Word] | None = None
    ) -> None:
        if words is None:
            words = utterance.stable.finish(continuation)
        else:
            utterance.stable.reset()
        audio_end_s = utterance.start_s + upto_samples / ASR_RATE_HZ
        if words:
            self._last_final_end_s = max(self._last_final_end_s, words[-1].end_s)
        if not words and utterance.partials_sent == 0:
            return
        await self.emit(TranscriptFrame(
            turn=utterance.turn, utterance=utterance.index, is_final=True, words=tuple(words),
            committed=len(words), audio_end_s=audio_end_s, made_time=time.monotonic(),
        ))

    async def _emit_partial(self, utterance: Utterance, continuation: list[Word], upto_samples: int) -> None:
        utterance.stable.update(continuation, audio_end_s=utterance.start_s + upto_samples / ASR_RATE_HZ)
        utterance.last_partial = Continuation(
            utterance.epoch, len(utterance.stable.committed), upto_samples, list(utterance.stable.tentative)
        )
        if utterance.speculative is None and self._utterance is utterance and self._adopt_partial_as_speculative(utterance):
            self._maybe_finish_early()
        committed = list(utterance.stable.committed)
        words = committed + utterance.stable.tentative
        text = " ".join(w.text for w in words)
        if not words or text == utterance.last_text:
            return
        utterance.last_text = text
        utterance.partials_sent += 1
        await self.emit(TranscriptFrame(
            turn=utterance.turn, utterance=utterance.index, is_final=False, words=tuple(words),
            committed=len(committed), audio_end_s=utterance.start_s + upto_samples / ASR_RATE_HZ,
            made_time=time.monotonic(),
        ))
