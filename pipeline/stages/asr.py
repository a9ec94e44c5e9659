"""The streaming ASR stage: runs the utterance scheduler's decodes on a shared engine.

Input: 16 kHz ``AudioFrame``s and the VAD stage's ``SPEECH_START``/``PAUSE``/
``RESUME``/``STOP`` control frames. Output: the same frames (audio only with
``forward_audio``) plus ``TranscriptFrame`` partials and finals. When to decode and what
to send is decided by ``UtteranceScheduler`` (``pipeline/asr/scheduler.py``, sans I/O);
this stage only moves frames and runs one decode at a time on the engine.

One writer per outbox: only the stage's own loop emits. The decode task hands its
words back and wakes the loop (a private urgent frame), so the order is defined: a
transcript follows every frame that reached the stage before its decode finished,
and a VAD control frame is forwarded before any transcript it causes (a
``SPEECH_STOP`` before its final).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from voxline.errors import GraphClosed, PipelineError, Superseded
from voxline.words import Word, cut_repetition

from ..asr.scheduler import AsrSettings, DecodeJob, Transcript, UtteranceScheduler
from ..asr.utterance import ASR_RATE_HZ
from ..engines import SpeechRecognizer
from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, TranscriptFrame
from ..stage import Stage

__all__ = ["AsrSettings", "StreamingAsrStage"]


class StreamingAsrStage(Stage):
    """Turns speech audio into partial and final ``TranscriptFrame``s (see module doc)."""

    kind = "asr"

    def __init__(self, engine: SpeechRecognizer, settings: AsrSettings | None = None, name: str = "asr") -> None:
        super().__init__(name)
        self.engine = engine
        self.settings = settings or AsrSettings()
        self.scheduler = UtteranceScheduler(self.settings)
        self._wake = ControlFrame(kind=ControlKind.FLUSH)  # identity marks it ours
        self._job: DecodeJob | None = None
        self._job_ready = asyncio.Event()
        self._done: deque[tuple[DecodeJob, list[Word] | None]] = deque()
        self._decode_done = asyncio.Event()
        self._decoder: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        """Start the per-session decode task (owned by this stage)."""
        self._decoder = asyncio.create_task(self._decode_loop(), name=f"{self.name}:decoder")
        self._decoder.add_done_callback(self._on_decoder_done)

    def _on_decoder_done(self, task: asyncio.Task[None]) -> None:
        # A failed decoder must fail the stage now, not at the next frame.
        if not task.cancelled() and task.exception() is not None:
            self._poke()

    def _poke(self) -> None:
        self._decode_done.set()
        if self.inbox is not None:
            with contextlib.suppress(PipelineError, GraphClosed):
                self.inbox.put_nowait(self._wake)

    async def on_close(self) -> None:
        """Cancel and await the decode task."""
        task, self._decoder = self._decoder, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # we are being cancelled too: let it through
            except Exception:
                pass  # a decoder that failed already failed the stage

    def _check_decoder(self) -> None:
        task = self._decoder
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]

    async def process(self, frame: Frame) -> None:
        """Feed the scheduler, forward the frame, then send what it decided."""
        self._check_decoder()
        self._collect()
        scheduler = self.scheduler
        if isinstance(frame, AudioFrame):
            if frame.sample_rate_hz != ASR_RATE_HZ:
                raise ValueError(f"the ASR stage takes {ASR_RATE_HZ} Hz audio, got {frame.sample_rate_hz} Hz")
            scheduler.audio(frame.samples, frame.start_s)
            if self.settings.forward_audio:
                await self.emit(frame)
        elif isinstance(frame, ControlFrame):
            if frame is self._wake:
                pass
            else:
                kind, at_s = frame.kind, frame.media_time_s
                if kind is ControlKind.SPEECH_START:
                    scheduler.speech_start(at_s)
                elif kind is ControlKind.SPEECH_PAUSE:
                    scheduler.speech_pause(at_s)
                elif kind is ControlKind.SPEECH_RESUME:
                    scheduler.speech_resume(at_s)
                elif kind is ControlKind.SPEECH_STOP:
                    scheduler.speech_stop(at_s)
                await self.emit(frame)
        else:
            await self.emit(frame)
        await self._send()

    async def on_end_of_stream(self, frame: ControlFrame) -> None:
        """Finalize the open utterance, wait for every decode, then forward end of stream."""
        self._collect()
        self.scheduler.end_of_stream()
        await self._send()
        while not self.scheduler.finished:
            self._decode_done.clear()
            if not self._done:
                await self._decode_done.wait()
            self._check_decoder()
            self._collect()
            await self._send()
        await self.emit(frame)

    def _collect(self) -> None:
        """Hand finished decodes back to the scheduler."""
        while self._done:
            job, words = self._done.popleft()
            self.scheduler.decoded(job, words)

    async def _send(self) -> None:
        """Emit the scheduler's transcripts and start its next decode."""
        job = self.scheduler.take_job()  # None while one is in flight
        for transcript in self.scheduler.take_transcripts():  # taking a job may split off a final
            await self.emit(_frame(transcript))
        if job is not None:
            self._job = job
            self._job_ready.set()

    async def _decode_loop(self) -> None:
        while True:
            await self._job_ready.wait()
            self._job_ready.clear()
            job = self._job
            if job is None:
                continue
            words = await self._recognise(job)
            self._job = None
            self._done.append((job, words))
            self._poke()

    async def _recognise(self, job: DecodeJob) -> list[Word] | None:
        """The job's words after its prefix in stream time; None when a partial was superseded."""
        try:
            result = await self.engine.transcribe(
                job.audio,
                prefix_words=job.prefix_words,
                context_words=job.context_words,
                final=job.final,
                deadline=time.monotonic() + job.budget_ms / 1000,
                session_key=self,
            )
        except Superseded:
            if job.final:
                raise
            return None
        heard = cut_repetition(job.prefix_words, result.words)
        return [Word(w.text, w.start_s + job.offset_s, w.end_s + job.offset_s, w.probability) for w in heard]


def _frame(t: Transcript) -> TranscriptFrame:
    return TranscriptFrame(
        utterance=t.utterance, is_final=t.is_final, words=t.words,
        committed=t.committed, audio_end_s=t.audio_end_s, made_time=time.monotonic(),
    )
