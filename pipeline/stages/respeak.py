"""The respeak stage: each final transcript spoken again by Piper, in the order heard.

This is the anonymizer's voice: the caller's words survive (the streaming ASR heard
them), their voice does not (Piper speaks them). Finals come in as the recogniser
closes each utterance; one task owned by the stage speaks them one after another
into the session's ``LiveOutput``, so phrases never overlap. Audio frames that pass
through are only read for their arrival times, which turn the end of a phrase
(media time) into the wall time the caller finished it.

Each phrase is reported as ``{"type": "anon.phrase", "text", "latency_ms"}``:
``latency_ms`` runs from the end of the phrase's last word, as the caller spoke it,
to the start of its re-spoken audio (the first chunk ready, plus whatever audio was
still queued ahead of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from ..engines import SpeechSynthesizer
from ..event_channel import EventChannel
from ..frames import AudioFrame, ControlFrame, Frame, TranscriptFrame
from ..live_output import LiveOutput
from ..stage import Stage

MAX_PHRASES_WAITING = 8
"""Phrases heard but not yet spoken; the recogniser waits past this (back-pressure)."""


class RespeakStage(Stage):
    """Speaks every final's text with ``tts`` into ``output``; reports each phrase's latency."""

    kind = "respeak"

    def __init__(self, tts: SpeechSynthesizer, output: LiveOutput, events: EventChannel, name: str = "respeak") -> None:
        super().__init__(name)
        self.tts = tts
        self.output = output
        self.events = events
        self._phrases: asyncio.Queue[tuple[str, float]] = asyncio.Queue(MAX_PHRASES_WAITING)
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=256)  # (media end_s, capture_time)
        self._speaker: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        """Start the task that speaks the phrases."""
        self._speaker = asyncio.create_task(self._speak(), name=f"voxline-{self.name}")

    async def process(self, frame: Frame) -> None:
        """Note audio arrival times; queue each non-empty final for speaking.

        Raises what stopped the speaking task (a TTS failure), failing the session.
        """
        self._raise_if_speaker_failed()
        if isinstance(frame, AudioFrame):
            if frame.capture_time:
                self._arrivals.append((frame.end_s, frame.capture_time))
        elif isinstance(frame, TranscriptFrame) and frame.is_final and frame.text.strip():
            await self._phrases.put((frame.text, self._wall_time_of(frame.end_s)))

    def _wall_time_of(self, media_s: float) -> float:
        """When the caller's audio at ``media_s`` arrived (the frame that held it); now if unknown."""
        for end_s, captured in self._arrivals:
            if end_s >= media_s:
                return captured - (end_s - media_s)
        return time.monotonic()

    def _raise_if_speaker_failed(self) -> None:
        speaker = self._speaker
        if speaker is not None and speaker.done() and not speaker.cancelled() and speaker.exception():
            raise speaker.exception()  # type: ignore[misc]

    async def _speak(self) -> None:
        while True:
            text, spoken_at = await self._phrases.get()
            try:
                await self._speak_one(text, spoken_at)
            finally:
                self._phrases.task_done()

    async def _speak_one(self, text: str, spoken_at: float) -> None:
        first = True
        chunks = self.tts.stream(text)
        try:
            async for chunk in chunks:
                if first:
                    first = False
                    ready = time.monotonic() + self.output.delay_s
                    self.events.publish({
                        "type": "anon.phrase", "text": text, "latency_ms": round((ready - spoken_at) * 1000, 1),
                    })
                self.output.write(chunk)
        finally:
            await chunks.aclose()

    async def on_end_of_stream(self, frame: ControlFrame) -> None:
        """Speak every phrase heard, then forward end of stream."""
        if self._speaker is not None:
            done = asyncio.ensure_future(self._phrases.join())
            await asyncio.wait([done, self._speaker], return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
        self._raise_if_speaker_failed()
        await self.emit(frame)

    async def on_close(self) -> None:
        """Stop speaking; end the session's events."""
        if self._speaker is not None:
            self._speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._speaker
        self.events.close()
