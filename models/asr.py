"""Whisper speech recognition on CTranslate2, shared and batched across sessions.

One ``WhisperEngine`` serves every session of a process. ``transcribe`` puts a
request into a ``BatchScheduler`` (finals first, earliest deadline, length buckets,
latest partial wins per session) and awaits it; ONE worker thread takes batches,
runs them and resolves the callers' futures on their loops. The event loop never
runs model code.

What a batch costs is kept small three ways:

- no padding to 30 s: the log-mel features are padded only to the batch's length
  bucket (``ceil((audio_s + 0.5) / bucket_s) * bucket_s`` s at 100 frames/s);
  CTranslate2's Whisper encoder accepts any length up to 3000 frames. The half
  second of padding after the audio is needed: with the audio running to the very
  end of the features, Whisper does not see where speech stops and repeats the
  transcript until the length limit (measured: 7 of 10 sentences); with 0.2 s or
  more of padding the text matched the 30 s decode on all 10;
- greedy decoding whose length is bounded by the audio length;
- a forced prefix: the committed words of a partial are tokenized into the prompt
  after the start-of-transcript sequence, so the decoder only generates what follows.

Word timings come from cross-attention alignment (``Whisper.align``), batched too.
A hallucination guard drops the text of windows Whisper thinks hold no speech.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.errors import ConfigError, EngineError, Superseded
from voxline.models.batch_scheduler import BatchScheduler
from voxline.models.device import choose_device, default_compute_type
from voxline.models.registry import DEFAULT_ASR_MODEL, resolve_asr_model
from voxline.models.word_timing import words_from_alignment
from voxline.models.worker_pool import WorkerPool, reject, resolve
from voxline.words import Word, cut_repetition

__all__ = [
    "ASR_SAMPLE_RATE_HZ",
    "MAX_AUDIO_S",
    "BatchTiming",
    "Hypothesis",
    "Superseded",
    "WhisperEngine",
]

ASR_SAMPLE_RATE_HZ = 16000
"""Sample rate of the audio ``transcribe`` takes (Hz)."""
MAX_AUDIO_S = 30.0
"""Longest audio one request may carry (s): Whisper's window."""
MIN_AUDIO_S = 0.1
"""Shorter audio returns no words without running the model (s)."""
TAIL_PAD_S = 0.5
"""Padding (s) always left after the audio in the features, so Whisper sees its end."""
MAX_CONTEXT_TOKENS = 48
"""Tokens of earlier text given as Whisper's previous-text prompt (a few sentences)."""
_FRAMES_PER_S = 100  # log-mel frames per second (hop 160 at 16 kHz)
_MAX_FRAMES = 3000
_MAX_DECODE_TOKENS = 448
_TOKENS_PER_S = 6  # generous upper bound on speech's token rate
_CLOSE_TIMEOUT_S = 10.0
_TIMING_HISTORY = 256

FloatAudio = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """What Whisper heard in one request's audio.

    ``words`` are the words after the request's ``prefix_words`` (those are not
    repeated), with times in seconds from the start of the request's audio.
    ``encode_ms``/``decode_ms``/``align_ms`` are the wall times of the whole batch the
    request ran in, ``batch_size`` its number of requests, ``padded_s`` the length (s)
    every request of the batch was padded to. ``no_speech_prob`` and ``avg_logprob``
    are Whisper's own confidence figures for the window.
    """

    words: tuple[Word, ...]
    encode_ms: float
    decode_ms: float
    align_ms: float
    batch_size: int
    padded_s: float
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0

    @property
    def text(self) -> str:
        """The words joined by single spaces."""
        return " ".join(w.text for w in self.words)


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """Costs of one batch run by the worker (ms), for metrics and benchmarks."""

    batch_size: int
    padded_s: float
    audio_s: float
    features_ms: float
    encode_ms: float
    decode_ms: float
    align_ms: float


@dataclass(slots=True, eq=False)
class _Request:
    audio: FloatAudio
    prefix_tokens: list[int]
    final: bool
    deadline: float
    session_key: object
    future: asyncio.Future[Hypothesis]
    abandoned: bool = False
    prefix_words: tuple[str, ...] = ()
    context_tokens: list[int] = field(default_factory=list)
    content_s: float = field(init=False)  # length of the audio (s)
    audio_s: float = field(init=False)  # length the scheduler buckets: audio + tail pad (s)

    def __post_init__(self) -> None:
        self.content_s = len(self.audio) / ASR_SAMPLE_RATE_HZ
        self.audio_s = self.content_s + TAIL_PAD_S


class WhisperEngine:
    """A Whisper model (CTranslate2) shared by all sessions, batching their requests.

    Life cycle: ``await start()`` (loads the model off the loop, starts the worker
    threads), any number of concurrent ``await transcribe(...)``, then
    ``await close()`` (idempotent). ``model`` is ``"tiny.en"``, ``"base"`` or a model
    directory (see ``registry.resolve_asr_model``); ``device`` is ``"auto"``,
    ``"cpu"`` or ``"cuda"``; ``compute_type`` defaults to int8 on CPU, float16 on
    CUDA. ``workers`` batches run at once, each on its own model replica
    (CTranslate2 ``inter_threads``) with ``cpu_threads`` intra-op threads; 0 picks 2
    on a CPU with at least two cores and 1 on CUDA. On the 2-core dev machine two
    single-threaded replicas ran 1.8× the batches per second of one two-threaded
    replica, and a lone 3.5 s request took 53 ms instead of 76 ms. ``max_batch`` and
    ``bucket_s`` (s) shape batches. ``no_speech_threshold`` and
    ``logprob_threshold`` form the hallucination guard: a window whose no-speech
    probability is above the first while its average token log-probability is below
    the second yields no words (Whisper's own rule). ``max_pending`` bounds the queue.
    """

    def __init__(
        self,
        model: str = DEFAULT_ASR_MODEL,
        device: str = "auto",
        compute_type: str | None = None,
        cpu_threads: int = 1,
        max_batch: int = 8,
        bucket_s: float = 1.0,
        beam_size: int = 1,
        language: str = "en",
        *,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
        max_pending: int = 1024,
        workers: int = 0,
    ) -> None:
        self.model_name = model
        self.workers_preference = workers
        self.device_preference = device
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.language = language
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self._compute_type = compute_type
        self._device: str | None = None
        self._frames_per_bucket = max(2, 2 * round(bucket_s * _FRAMES_PER_S / 2))
        self._scheduler: BatchScheduler[_Request] = BatchScheduler(
            max_batch, bucket_s, max_pending=max_pending
        )
        self._pool = WorkerPool("asr", self._scheduler, max_pending=max_pending)
        self._load_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._features: Any = None
        self._workers = 0
        self._timings: collections.deque[BatchTiming] = collections.deque(maxlen=_TIMING_HISTORY)

    # -- properties -------------------------------------------------------------

    @property
    def device(self) -> str:
        """The device the model runs on (``"cpu"``/``"cuda"``); resolved at load."""
        if self._device is None:
            self._device = choose_device(self.device_preference)
        return self._device

    @property
    def compute_type(self) -> str:
        """CTranslate2 compute type in use."""
        return self._compute_type or default_compute_type(self.device)

    @property
    def batch_timings(self) -> list[BatchTiming]:
        """The most recent batches' costs, oldest first (at most 256)."""
        return list(self._timings)

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load the model (in a thread) and start the worker; a second call does nothing.

        Raises:
            ModelNotFoundError: the weights are not installed.
            ConfigError: the device or language is not available.
            EngineError: the engine was closed, or CTranslate2 failed to load the model.

        If cancelled midway, loading finishes in its thread and the worker is not started.
        """
        if self._pool.closing:
            raise EngineError("ASR engine is closed")
        if self._pool.started:
            return
        await asyncio.to_thread(self.load)
        self._pool.start([self._work] * self._workers)

    def _resolve_workers(self) -> int:
        workers = self.workers_preference
        if workers <= 0:
            workers = 1 if self.device == "cuda" else min(2, os.cpu_count() or 1)
        self._workers = workers
        return workers

    @property
    def workers(self) -> int:
        """Batches that run at once (model replicas); known once loaded."""
        return self._workers

    def load(self) -> None:
        """Load model, tokenizer and feature extractor now (blocking; idempotent).

        ``start`` calls it off the loop; benchmarks call it directly.
        """
        with self._load_lock:
            if self._model is not None:
                return
            import ctranslate2
            import tokenizers
            from faster_whisper.feature_extractor import FeatureExtractor
            from faster_whisper.tokenizer import Tokenizer

            path = resolve_asr_model(self.model_name)
            try:
                model = ctranslate2.models.Whisper(
                    path,
                    device=self.device,
                    compute_type=self.compute_type,
                    intra_threads=self.cpu_threads,
                    inter_threads=self._resolve_workers(),
                )
                hf_tokenizer = tokenizers.Tokenizer.from_file(f"{path}/tokenizer.json")
            except Exception as exc:  # CTranslate2 and tokenizers raise assorted types
                raise EngineError(f"cannot load Whisper model from {path}: {exc}") from exc
            try:
                self._tokenizer = Tokenizer(
                    hf_tokenizer,
                    model.is_multilingual,
                    task="transcribe",
                    language=self.language if model.is_multilingual else None,
                )
            except ValueError as exc:
                raise ConfigError(f"ASR language {self.language!r}: {exc}") from exc
            self._features = FeatureExtractor(feature_size=model.n_mels)
            self._model = model

    async def close(self, *, drain: bool = False, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Stop the worker and wait for its thread to end (idempotent).

        With ``drain=False`` queued requests fail at once with ``EngineError`` and only
        the batch already running completes; with ``drain=True`` every accepted request
        is run first. Later ``transcribe`` calls raise ``EngineError``.
        If cancelled while waiting, the worker still stops on its own.

        Raises:
            EngineError: the worker thread did not end within ``timeout_s`` seconds.
        """
        await self._pool.close(
            drain=drain,
            timeout_s=timeout_s,
            dropped=lambda r: reject(r.future, EngineError("ASR engine closed before the request ran")),
        )
        with self._load_lock:
            self._model = None  # frees the weights; a closed engine is never restarted

    # -- requests -----------------------------------------------------------------

    async def transcribe(
        self,
        audio: FloatAudio,
        *,
        prefix_words: Sequence[str] = (),
        context_words: Sequence[str] = (),
        final: bool,
        deadline: float,
        session_key: object = None,
    ) -> Hypothesis:
        """Recognise ``audio`` (mono float32, 16 kHz, at most 30 s) and return its words.

        ``prefix_words`` are words already committed for this audio; they are forced
        as the start of the transcript and only the words after them come back.
        ``context_words`` are earlier words of the stream, given to Whisper as its
        previous-text prompt (the last ``MAX_CONTEXT_TOKENS`` tokens), so a short
        utterance is read as the continuation it is; they never come back.
        ``final`` requests run before partials; ``deadline`` (``time.monotonic()`` s)
        orders requests of the same kind. A partial with a ``session_key`` is
        superseded by the next partial or final of the same key submitted before it
        runs: its caller then gets ``Superseded`` (an ``EngineError``) raised.
        Audio shorter than 0.1 s gives an empty ``Hypothesis`` without running the model.

        If the caller is cancelled, the request leaves the queue (or its result is
        discarded when it is already running) and other requests are unaffected.

        Raises:
            ValueError: ``audio`` is not 1-D or is longer than 30 s.
            Superseded: see above.
            EngineError: the engine is not started, closed, its queue is full, or the
                model failed on this batch.
        """
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"ASR takes mono audio (1-D), got shape {samples.shape}")
        if len(samples) > MAX_AUDIO_S * ASR_SAMPLE_RATE_HZ:
            raise ValueError(f"ASR audio is {len(samples) / ASR_SAMPLE_RATE_HZ:.1f} s; max 30 s")
        if self._pool.closing:
            raise EngineError("ASR engine is closed")
        if not self._pool.started or self._tokenizer is None:
            raise EngineError("ASR engine is not started; await start() first")
        if len(samples) < MIN_AUDIO_S * ASR_SAMPLE_RATE_HZ:
            return Hypothesis((), 0.0, 0.0, 0.0, 0, 0.0, 1.0, 0.0)
        words = [w.strip() for w in prefix_words if w.strip()]
        prefix_tokens = self._tokenizer.encode(" " + " ".join(words)) if words else []
        context = [w.strip() for w in context_words if w.strip()]
        context_tokens = self._tokenizer.encode(" " + " ".join(context))[-MAX_CONTEXT_TOKENS:] if context else []
        request = _Request(
            samples, prefix_tokens, final, deadline, session_key,
            asyncio.get_running_loop().create_future(),
            prefix_words=tuple(words), context_tokens=context_tokens,
        )
        for old in self._pool.submit(request):
            old.abandoned = True
            reject(old.future, Superseded("a newer request from the same session replaced it"))
        try:
            return await request.future
        except asyncio.CancelledError:
            request.abandoned = True
            self._pool.cancel(request)
            raise

    # -- worker -------------------------------------------------------------------

    def _work(self) -> None:
        while (batch := self._pool.take()) is not None:
            batch = [r for r in batch if not r.abandoned]
            if not batch:
                continue
            try:
                results = self._run_batch(batch)
            except Exception as exc:
                error = EngineError(f"ASR batch of {len(batch)} failed: {exc}")
                error.__cause__ = exc
                for request in batch:
                    reject(request.future, error)
                continue
            for request, hypothesis in zip(batch, results, strict=True):
                resolve(request.future, hypothesis)

    def _log_mel(self, audio: FloatAudio) -> npt.NDArray[np.float32]:
        # The extractor emits one frame past the audio; faster-whisper drops it too.
        return np.asarray(self._features(audio)[:, :-1], dtype=np.float32)

    def _padded_frames(self, content_s: float) -> int:
        buckets = self._scheduler.bucket(content_s + TAIL_PAD_S)
        return min(_MAX_FRAMES, buckets * self._frames_per_bucket)

    def _run_batch(self, batch: list[_Request]) -> list[Hypothesis]:
        import ctranslate2

        tokenizer = self._tokenizer
        t0 = time.perf_counter()
        n_frames = max(self._padded_frames(r.content_s) for r in batch)
        features = np.zeros((len(batch), self._model.n_mels, n_frames), dtype=np.float32)
        content_frames: list[int] = []
        for i, request in enumerate(batch):
            mel = self._log_mel(request.audio)[:, :n_frames]
            features[i, :, : mel.shape[1]] = mel
            content_frames.append(mel.shape[1])
        start = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        # CTranslate2 needs <|startoftranscript|> at one position in the whole batch, so
        # every request keeps the same number of context tokens: the latest ones, as many
        # as the shortest context has (none if one request has none).
        n_context = min(len(r.context_tokens) for r in batch)
        prompts = [
            ([tokenizer.sot_prev, *r.context_tokens[len(r.context_tokens) - n_context :]] if n_context else [])
            + start + r.prefix_tokens
            for r in batch
        ]
        max_audio_s = max(r.content_s for r in batch)
        # CTranslate2 4.8's Whisper returns at most max_length // 2 tokens (prefix
        # included; measured), hence the factor 2. The cap only stops repetition
        # loops: greedy decoding ends at end-of-text long before it.
        wanted = n_context + 1 + max(len(r.prefix_tokens) for r in batch) + _TOKENS_PER_S * max_audio_s + 10
        max_length = min(_MAX_DECODE_TOKENS, 2 * math.ceil(wanted))
        t1 = time.perf_counter()
        encoded = self._model.encode(ctranslate2.StorageView.from_array(features))
        t2 = time.perf_counter()
        generated = self._model.generate(
            encoded,
            prompts,
            beam_size=self.beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
        )
        t3 = time.perf_counter()
        texts: list[list[int]] = []
        for result in generated:
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            texts.append([] if self._is_silence(result) else tokens)
        aligned: list[Any] = [None] * len(batch)
        if any(len(t) > len(r.prefix_tokens) for t, r in zip(texts, batch, strict=True)):
            aligned = self._model.align(
                encoded, tokenizer.sot_sequence, texts, content_frames, median_filter_width=7
            )
        t4 = time.perf_counter()
        padded_s = n_frames / _FRAMES_PER_S
        encode_ms, decode_ms, align_ms = (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3
        self._timings.append(
            BatchTiming(
                len(batch),
                padded_s,
                sum(r.content_s for r in batch),
                (t1 - t0) * 1e3,
                encode_ms,
                decode_ms,
                align_ms,
            )
        )
        hypotheses = []
        for request, result, tokens, alignment in zip(
            batch, generated, texts, aligned, strict=True
        ):
            words: tuple[Word, ...] = ()
            if alignment is not None and len(tokens) > len(request.prefix_tokens):
                words = words_from_alignment(
                    self._tokenizer, tokens, alignment, len(request.prefix_tokens), request.content_s
                )
                # Greedy Whisper loops on some sized inputs; cut a tandem repeat.
                words = tuple(cut_repetition(request.prefix_words, words))
            hypotheses.append(
                Hypothesis(
                    words,
                    encode_ms,
                    decode_ms,
                    align_ms,
                    len(batch),
                    padded_s,
                    float(result.no_speech_prob),
                    float(result.scores[0]) if result.scores else 0.0,
                )
            )
        return hypotheses

    def _is_silence(self, result: Any) -> bool:
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        return (
            float(result.no_speech_prob) > self.no_speech_threshold
            and avg_logprob < self.logprob_threshold
        )

    # -- measurement ----------------------------------------------------------------

    def encoder_padding_speedup(self, audio: FloatAudio, repeats: int = 5) -> dict[str, float]:
        """Time the encoder on ``audio`` padded to 30 s and to its bucket (blocking).

        Returns ``{"padded_ms", "sized_ms", "speedup"}``: medians over ``repeats`` runs
        after one warm-up each, and their ratio. Loads the model if needed. It runs
        beside any batch in flight, so measure while the engine is idle. Never call
        it on the loop.
        """
        import ctranslate2

        self.load()
        mel = self._log_mel(np.asarray(audio, dtype=np.float32))
        result: dict[str, float] = {}
        for name, frames in (("padded_ms", _MAX_FRAMES), ("sized_ms", None)):
            n = frames or self._padded_frames(mel.shape[1] / _FRAMES_PER_S)
            features = np.zeros((1, mel.shape[0], n), dtype=np.float32)
            features[0, :, : min(n, mel.shape[1])] = mel[:, :n]
            storage = ctranslate2.StorageView.from_array(features)
            samples = []
            for i in range(repeats + 1):
                t = time.perf_counter()
                self._model.encode(storage, to_cpu=True)
                if i:
                    samples.append((time.perf_counter() - t) * 1e3)
            result[name] = float(np.median(samples))
        result["speedup"] = result["padded_ms"] / result["sized_ms"]
        return result
