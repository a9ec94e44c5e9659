"""Live captions end to end: accuracy, latency and real-time capacity for S sessions.

Each session streams its own audio: the clips of a named test set (``--set``, see
``bench/speech_sets.py``: ``real`` human recordings, the ``hard`` synthetic set, or
``piper`` sentences; or ``--wavs DIR`` of X.wav + X.txt), separated by 0.8–1.2 s of
silence, order rotated and start staggered per session (``bench/testset.py``) in 100 ms chunks at real-time pace, all sessions at once, either
through the caption graph in this process (engines loaded once, shared) or to a running
server (``--url ws://127.0.0.1:8000``). A chunk covering samples [a, b) is sent at
``t0 + b / rate`` (when a live microphone would have it); how late each send is against
that schedule is the send lag. ``t0`` is the wall time of sample 0 of every session.

Every event's arrival is stamped with ``time.monotonic()``. Figures:

- ``wer``: jiwer over all sessions, finals vs references (lowercase, no punctuation);
- ``offline_wer``: the same engine decoding each whole clip at once (in pieces of at
  most 28 s cut at the quietest point), in the same run: what streaming should match;
- ``partial_lag_ms``: arrival of a partial minus ``t0 + end`` of its newest word;
- ``final_latency_ms``: per sentence, arrival of the final that carries its last words
  (of the finals overlapping the sentence's speech, the one ending last) minus
  ``t0 + speech_end`` (speech_end: the last sample above 1 % of the clip's peak);
  none → ``finals_missing``;
- ``committed_changes``: committed words of a partial that a later partial/final of the
  same utterance changed (must be 0);
- ``realtime_ok``: max send lag <= 0.5 s, no final missing, final latency max <= 3 s;
- ``rss_mb``: resident memory of the recognising process (this one, or the server via
  ``/metrics``) before and after the run: repeated runs show whether sessions leak.

The last line of stdout is one JSON object.

    python bench/captions.py --json --set real,hard,piper [--sessions 4] [--url ws://...]
    python bench/captions.py --json --set piper --seconds 45 --sweep 1,2,4,8
    python bench/captions.py --json --set real,piper --telephone both [--law alaw]

``--telephone`` puts every session's stream through a phone line first
(``bench/narrowband.py``: soxr to 8 kHz, G.711 μ-law or A-law and back; noise, where a
set has it, is added before the line, as a room's would be) and streams the 8 kHz
audio to the caption graph at 8 kHz (``caption_locally`` and ``caption_remote`` carry
the rate; the graph's resample stage takes it to 16 kHz, as on a phone call). The
offline decode gets the same line's audio, taken back to 16 kHz by the graph's own
resampler. Sentence bounds stay those measured on the 16 kHz clip: latency counts from
when the caller stopped speaking. ``--telephone both`` runs each set at 16 kHz, then
through the line, in the same process: the set's object holds the 16 kHz figures, its
``telephone`` object the line's, and ``telephone_delta`` the differences (line minus
16 kHz). Each result's ``input`` says what the graph was fed.

Every set named runs in the same process, one after another; ``real`` always runs
too. ``--seconds 0`` (the default) streams every clip of the set once per session.
The JSON has one object per set under ``sets``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:  # run as a script (bench/ on sys.path) or imported as bench.captions
    from narrowband import PHONE_RATE_HZ, telephone, to_listen_rate
    from speech_sets import SET_NAMES, SET_NOISE_SNR_DB, add_noise, load_set, speech_rms
    from testset import (
        SAMPLE_RATE_HZ,
        Stream,
        build_stream,
        load_wav_clips,
        synthesize_clips,
        utterance_audio,
    )
except ImportError:  # pragma: no cover
    from .narrowband import PHONE_RATE_HZ, telephone, to_listen_rate  # type: ignore[no-redef]
    from .speech_sets import (  # type: ignore[no-redef]
        SET_NAMES,
        SET_NOISE_SNR_DB,
        add_noise,
        load_set,
        speech_rms,
    )
    from .testset import (  # type: ignore[no-redef]
        SAMPLE_RATE_HZ,
        Stream,
        build_stream,
        load_wav_clips,
        synthesize_clips,
        utterance_audio,
    )

CHUNK_S = 0.100
MAX_SEND_LAG_S = 0.5
MAX_FINAL_LATENCY_MS = 3000.0
LINES = ("ulaw", "alaw")


@dataclass(frozen=True, slots=True)
class Line:
    """What the sessions' audio goes through before the graph: nothing (16 kHz) or a phone line."""

    law: str | None = None  # "ulaw" / "alaw": G.711 at 8 kHz; None: the 16 kHz recording

    @property
    def rate_hz(self) -> int:
        """The rate the graph (and the offline decode, before resampling) gets (Hz)."""
        return PHONE_RATE_HZ if self.law else SAMPLE_RATE_HZ

    def stream(self, audio: np.ndarray) -> np.ndarray:
        """A session's 16 kHz audio as the graph is fed it, at ``rate_hz``."""
        return telephone(audio, self.law) if self.law else audio  # type: ignore[arg-type]

    def for_recognizer(self, audio: np.ndarray) -> np.ndarray:
        """A 16 kHz clip as the recogniser hears it after the line (16 kHz)."""
        return to_listen_rate(telephone(audio, self.law)) if self.law else audio  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        """The ``input`` entry of a result."""
        return {"rate_hz": self.rate_hz, "g711": self.law}


# -- text ---------------------------------------------------------------------------


_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()
_SPELLING = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize(text: str) -> str:
    """Lowercase, punctuation stripped (hyphens become spaces), whitespace collapsed; the
    numbers 0–12 and Mr/Mrs/Dr spelled out, as references write them and Whisper does not."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s]", "", text)
    words = []
    for word in text.split():
        if word.isdigit() and int(word) < len(_NUMBER_WORDS):
            word = _NUMBER_WORDS[int(word)]
        words.append(_SPELLING.get(word, word))
    return " ".join(words)


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
    }


# -- one session ----------------------------------------------------------------------


@dataclass
class SessionRun:
    """What one session sent and received."""

    index: int
    stream: Stream  # its audio at ``rate_hz``; the sentences' bounds in seconds
    t0: float = 0.0
    chunk_s: float = CHUNK_S
    rate_hz: int = SAMPLE_RATE_HZ
    send_lags_s: list[float] = field(default_factory=list)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (arrival, event)
    error: str | None = None
    done_at: float = 0.0


async def _paced_chunks(run: SessionRun) -> AsyncIterator[np.ndarray]:
    audio = run.stream.audio
    step = round(run.chunk_s * run.rate_hz)
    for a in range(0, len(audio), step):
        b = min(a + step, len(audio))
        due = run.t0 + b / run.rate_hz
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        run.send_lags_s.append(max(0.0, time.monotonic() - due))
        yield audio[a:b]


async def _run_session(run: SessionRun, engines: Any, config: Any, url: str | None) -> None:
    if url:
        from voxline.clients.caption_client import caption_remote

        events = caption_remote(url, _paced_chunks(run), run.rate_hz)
    else:
        from voxline.clients.caption_runner import caption_locally

        events = caption_locally(_paced_chunks(run), run.rate_hz, config, engines=engines)
    try:
        async for event in events:
            run.events.append((time.monotonic(), event))
    except Exception as exc:  # one failed session is reported, not fatal to the run
        run.error = f"{type(exc).__name__}: {exc}"
    run.done_at = time.monotonic()


# -- analysis -------------------------------------------------------------------------


def _committed_changes(events: list[tuple[float, dict[str, Any]]]) -> int:
    by_utt: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for _, ev in events:
        if ev.get("type") in ("partial", "final"):
            by_utt[ev.get("utterance")].append(ev)
    changes = 0
    for evs in by_utt.values():
        committed: list[str] = []
        for ev in evs:
            words = [normalize(w["word"]) for w in ev.get("words", [])]
            for k, word in enumerate(committed):
                if k >= len(words) or words[k] != word:
                    changes += 1
            if ev["type"] == "partial":
                n = int(ev.get("committed", 0))
                if n > len(committed):
                    committed.extend(words[len(committed) : n])
    return changes


def _analyse(runs: list[SessionRun], wall_s: float, cpu_util: float | None) -> dict[str, Any]:
    import jiwer

    refs, hyps, wer_per_session = [], [], []
    partial_lags: list[float] = []
    final_lat: list[float] = []
    finals_missing = 0
    partials = finals = committed_changes = 0
    unmatched_finals = 0
    send_lags: list[float] = []
    per_session_max_lag: list[float] = []
    errors = []
    for run in runs:
        if run.error:
            errors.append({"session": run.index, "error": run.error})
        send_lags += run.send_lags_s
        per_session_max_lag.append(max(run.send_lags_s, default=0.0))
        caption_events = [(t, e) for t, e in run.events if e.get("type") in ("partial", "final")]
        fin = [(t, e) for t, e in caption_events if e["type"] == "final"]
        partials += len(caption_events) - len(fin)
        finals += len(fin)
        for t, e in caption_events:
            if e["type"] == "partial" and e.get("words"):
                partial_lags.append((t - (run.t0 + float(e["words"][-1]["end"]))) * 1e3)
        committed_changes += _committed_changes(run.events)
        # WER: finals in stream order (by utterance, then arrival).
        ordered = sorted(fin, key=lambda te: (te[1].get("utterance", 0), te[0]))
        hyp = normalize(" ".join(e.get("text", "") for _, e in ordered))
        ref = normalize(run.stream.reference)
        refs.append(ref)
        hyps.append(hyp)
        wer_per_session.append(round(float(jiwer.wer(ref, hyp)) if hyp else 1.0, 4))
        matched: set[int] = set()
        for sentence in run.stream.sentences:
            end_s = sentence.speech_end_s
            # The final that carries the sentence's last words: of the finals whose
            # span overlaps the sentence's speech, the one that ends last. (Matching on
            # overlap, not on end time, keeps a word-timing error of a few hundred ms
            # from counting as a missing final; the gaps between sentences are >= 0.8 s.)
            overlapping = [
                (float(e["end"]), i, t)
                for i, (t, e) in enumerate(fin)
                if e.get("words")
                and float(e["start"]) <= end_s
                and float(e["end"]) >= sentence.speech_start_s
            ]
            hit = max(overlapping)[1:] if overlapping else None
            if hit is None:
                finals_missing += 1
            else:
                matched.add(hit[0])
                final_lat.append((hit[1] - (run.t0 + end_s)) * 1e3)
        unmatched_finals += sum(
            1 for i, (_, e) in enumerate(fin) if e.get("words") and i not in matched
        )
    ref_all, hyp_all = " ".join(refs), " ".join(hyps)
    wer = round(float(jiwer.wer(ref_all, hyp_all)), 4) if hyp_all.strip() else 1.0
    max_lag_ms = round(max(send_lags, default=0.0) * 1e3, 1)
    final_max = round(max(final_lat), 1) if final_lat else None
    realtime_ok = (
        not errors
        and all(lag <= MAX_SEND_LAG_S for lag in per_session_max_lag)
        and finals_missing == 0
        and final_max is not None
        and final_max <= MAX_FINAL_LATENCY_MS
    )
    return {
        "sessions": len(runs),
        "audio_s_per_session": round(float(np.mean([len(r.stream.audio) / r.rate_hz for r in runs])), 2),
        "sentences": sum(len(r.stream.sentences) for r in runs),
        "wer": wer,
        "wer_per_session": wer_per_session,
        "partial_lag_ms": _pct(partial_lags),
        "final_latency_ms": _pct(final_lat),
        "final_latency_ms_max": final_max,
        "finals_missing": finals_missing,
        "finals_unmatched": unmatched_finals,
        "max_send_lag_ms": max_lag_ms,
        "send_lag_ms_p95": _pct([x * 1e3 for x in send_lags])["p95"],
        "realtime_ok": realtime_ok,
        "partials": partials,
        "finals": finals,
        "committed_changes": committed_changes,
        "cpu_util": cpu_util,
        "wall_s": round(wall_s, 2),
        "errors": errors,
    }


def _batch_summary(timings: list[Any], wall_s: float) -> dict[str, Any] | None:
    if not timings:
        return None
    busy_ms = sum(t.features_ms + t.encode_ms + t.decode_ms + t.align_ms for t in timings)
    return {
        "batches": len(timings),
        "mean_batch_size": round(float(np.mean([t.batch_size for t in timings])), 2),
        "max_batch_size": int(max(t.batch_size for t in timings)),
        "mean_padded_s": round(float(np.mean([t.padded_s for t in timings])), 2),
        "encode_ms": _pct([t.encode_ms for t in timings]),
        "decode_ms": _pct([t.decode_ms for t in timings]),
        "align_ms": _pct([t.align_ms for t in timings]),
        "busy_frac": round(busy_ms / 1e3 / wall_s, 3) if wall_s > 0 else None,
    }


# -- server metrics (--url) -----------------------------------------------------------


def _metrics_url(url: str) -> str:
    base = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rstrip("/")
    if base.endswith("/v1/captions"):
        base = base[: -len("/v1/captions")]
    return base + "/metrics"


def _scrape_metric(url: str, name: str) -> float | None:
    try:
        with urllib.request.urlopen(_metrics_url(url), timeout=5) as response:
            text = response.read().decode("utf-8", "replace")
    except Exception:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            try:
                return float(line.split()[-1])
            except ValueError:
                return None
    return None


def _scrape_cpu_seconds(url: str) -> float | None:
    return _scrape_metric(url, "process_cpu_seconds_total")


def _rss_mb(url: str | None) -> float | None:
    """Resident memory of the process doing the recognition (this one, or the server)."""
    if url:
        value = _scrape_metric(url, "process_resident_memory_bytes")
        return None if value is None else round(value / 2**20, 1)
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# -- driver ---------------------------------------------------------------------------


class _BatchCollector:
    """Collects the engine's batch timings of one phase (its history holds only 256)."""

    def __init__(self, recognizer: Any) -> None:
        self.recognizer = recognizer
        self.collected: list[Any] = []
        self._seen = {id(t) for t in self._history()}
        self._keep = list(self._history())  # keep ids unique while we remember them
        self._task: asyncio.Task[None] | None = None

    def _history(self) -> list[Any]:
        return list(getattr(self.recognizer, "batch_timings", None) or [])

    def poll(self) -> None:
        for timing in self._history():
            if id(timing) not in self._seen:
                self._seen.add(id(timing))
                self.collected.append(timing)

    async def _loop(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(0.25)

    def __enter__(self) -> _BatchCollector:
        self._task = asyncio.create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.poll()


def _streams(
    clips: tuple[Any, ...], n: int, seconds: float, noise_db: float | None, line: Line = Line()
) -> list[Stream]:
    """``n`` sessions' streams at ``line.rate_hz``; ``seconds`` 0: every clip once; noise
    over the whole stream, then the line."""
    if seconds <= 0:
        seconds = sum(len(c.audio) for c in clips) / SAMPLE_RATE_HZ + 1.2 * len(clips) + 6.0
    streams = [build_stream(clips, i, seconds) for i in range(n)]
    if noise_db is not None:
        level = speech_rms(clips)
        streams = [Stream(add_noise(st.audio, noise_db, level, seed=i), st.sentences) for i, st in enumerate(streams)]
    return [Stream(line.stream(st.audio), st.sentences) for st in streams] if line.law else streams


def _quietest_cut(audio: np.ndarray, lo: int, hi: int) -> int:
    """The start of the quietest 100 ms window in ``audio[lo:hi]``."""
    win = SAMPLE_RATE_HZ // 10
    energies = [float(np.mean(np.square(audio[i : i + win]))) for i in range(lo, max(lo + 1, hi - win), win // 2)]
    return lo + int(np.argmin(energies)) * (win // 2)


async def offline_wer(
    recognizer: Any, clips: tuple[Any, ...], noise_db: float | None, line: Line = Line()
) -> float:
    """WER of ``recognizer`` decoding each whole clip at once (the streaming target),
    after ``line`` (back at 16 kHz)."""
    import jiwer

    level = speech_rms(clips)
    refs, hyps = [], []
    for i, clip in enumerate(clips):
        audio = clip.audio if noise_db is None else add_noise(clip.audio, noise_db, level, seed=100 + i)
        audio = line.for_recognizer(audio)
        words: list[str] = []
        start, piece = 0, 28 * SAMPLE_RATE_HZ
        while start < len(audio):
            end = len(audio) if len(audio) - start <= piece else _quietest_cut(audio, start + 20 * SAMPLE_RATE_HZ, start + piece)
            result = await recognizer.transcribe(
                audio[start:end], prefix_words=(), context_words=tuple(words), final=True, deadline=time.monotonic()
            )
            words += [w.text for w in result.words]
            start = end
        refs.append(normalize(clip.text))
        hyps.append(normalize(" ".join(words)))
    return round(float(jiwer.wer(refs, hyps)), 4)


async def _run_count(
    n: int, clips: tuple[Any, ...], seconds: float, engines: Any, config: Any, url: str | None,
    chunk_s: float = CHUNK_S, noise_db: float | None = None, line: Line = Line(),
) -> tuple[dict[str, Any], list[SessionRun]]:
    streams = _streams(clips, n, seconds, noise_db, line)
    runs = [SessionRun(i, stream, chunk_s=chunk_s, rate_hz=line.rate_hz) for i, stream in enumerate(streams)]
    recognizer = getattr(engines, "recognizer", None)
    collector = (
        _BatchCollector(recognizer)
        if recognizer is not None and hasattr(recognizer, "batch_timings")
        else None
    )
    cpu_before = await asyncio.to_thread(_scrape_cpu_seconds, url) if url else None
    rss_before = await asyncio.to_thread(_rss_mb, url)
    t0 = time.monotonic() + 0.2
    for run in runs:
        run.t0 = t0
    proc0 = time.process_time()
    if collector is not None:
        collector.__enter__()
    try:
        await asyncio.gather(*(_run_session(run, engines, config, url) for run in runs))
    finally:
        if collector is not None:
            collector.__exit__()
    wall = time.monotonic() - t0
    proc = time.process_time() - proc0
    cpus = os.cpu_count() or 1
    if url:
        cpu_after = await asyncio.to_thread(_scrape_cpu_seconds, url)
        cpu_util = (
            round((cpu_after - cpu_before) / wall / cpus, 3)
            if cpu_before is not None and cpu_after is not None
            else None
        )
    else:
        cpu_util = round(proc / wall / cpus, 3)
    result = {"input": line.describe(), **_analyse(runs, wall, cpu_util)}
    result["rss_mb"] = {"before": rss_before, "after": await asyncio.to_thread(_rss_mb, url)}
    if collector is not None:
        result["asr_batches"] = _batch_summary(collector.collected, wall)
    return result, runs


def _dump_events(path: str, all_runs: list[list[SessionRun]]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for runs in all_runs:
            for run in runs:
                out.write(
                    json.dumps(
                        {
                            "sessions": len(runs),
                            "session": run.index,
                            "rate_hz": run.rate_hz,
                            "sentences": [
                                {
                                    "text": s.text,
                                    "speech_start_s": s.speech_start_s,
                                    "speech_end_s": round(s.speech_end_s, 3),
                                }
                                for s in run.stream.sentences
                            ],
                            "events": [
                                {"arrival_s": round(t - run.t0, 3), **e} for t, e in run.events
                            ],
                        }
                    )
                    + "\n"
                )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the test set, run every session count, return the result object."""
    from voxline.config import load_config

    config = load_config(overrides={"asr": {"model": args.model}})
    if args.wavs:
        sets = {args.wavs: await asyncio.to_thread(load_wav_clips, args.wavs)}
    else:
        names = [n.strip() for n in args.set.split(",") if n.strip()]
        if "real" not in names:
            names.insert(0, "real")  # real speech is always reported beside the others
        sets = {name: await asyncio.to_thread(load_set, name) for name in names}
    counts = [int(x) for x in args.sweep.split(",") if x.strip()] if args.sweep else [args.sessions]
    piper = await asyncio.to_thread(synthesize_clips)
    five_s = utterance_audio(piper, 5.0)

    engines = None
    padding: dict[str, float] | None = None
    load_s = None
    if not args.url:
        from voxline.pipeline.recipes.captioner import CaptionEngines

        started = time.monotonic()
        engines = await CaptionEngines.load(config.asr, config.vad)
        load_s = round(time.monotonic() - started, 2)
        # Measured before streaming (no contention); also warms the encoder up.
        padding = await asyncio.to_thread(engines.recognizer.encoder_padding_speedup, five_s)
        # Warm the decoder/aligner too, so the first session does not pay for it.
        await engines.recognizer.transcribe(piper[0].audio, final=True, deadline=time.monotonic())
    lines = _lines(args.telephone, args.law)
    per_set: dict[str, dict[str, Any]] = {}
    all_runs: list[list[SessionRun]] = []
    try:
        for name, clips in sets.items():
            noise_db = SET_NOISE_SNR_DB.get(name)
            by_line: dict[Line, list[dict[str, Any]]] = {}
            for line in lines:
                results: list[dict[str, Any]] = by_line.setdefault(line, [])
                for n in counts:
                    await asyncio.sleep(1.0 if all_runs else 0.0)  # let queues empty between runs
                    result, runs = await _run_count(
                        n, clips, args.seconds, engines, config, args.url, args.chunk_ms / 1000, noise_db, line
                    )
                    results.append(result)
                    all_runs.append(runs)
                    if not args.json:
                        _print_summary(result)
            per_set[name] = {"clips": len(clips), "noise_snr_db": noise_db, "results": by_line}
        offline_engine = engines.recognizer if engines is not None else None
        if offline_engine is None:
            from voxline.models.asr import WhisperEngine

            asr = config.asr
            offline_engine = WhisperEngine(
                model=asr.model, device=asr.device, compute_type=asr.compute_type or None, cpu_threads=asr.cpu_threads,
            )
            padding = await asyncio.to_thread(offline_engine.encoder_padding_speedup, five_s)
            await offline_engine.start()
        try:
            for name, clips in sets.items():
                per_set[name]["offline_wer"] = {
                    line: await offline_wer(offline_engine, clips, SET_NOISE_SNR_DB.get(name), line) for line in lines
                }
        finally:
            if engines is None:
                await offline_engine.close()
    finally:
        if engines is not None:
            await engines.close()
    if args.events_out:
        _dump_events(args.events_out, all_runs)
    common = {
        "bench": "captions",
        "mode": "remote" if args.url else "in_process",
        "model": config.asr.model,
        "seconds_target": args.seconds or "every clip once",
        "chunk_ms": args.chunk_ms,
        "encoder_padding_speedup": {k: round(v, 2) for k, v in padding.items()}
        if padding
        else None,
        "engine_load_s": load_s,
        "cpu_count": os.cpu_count(),
    }
    out: dict[str, Any] = {}
    for name, entry in per_set.items():
        by_line, offline = entry.pop("results"), entry.pop("offline_wer")
        figures = [
            {**_figures(by_line[line], sweep=bool(args.sweep)), "offline_wer": offline[line]} for line in lines
        ]
        out[name] = {**entry, **figures[0]}
        if len(figures) == 2:
            out[name]["telephone"] = figures[1]
            out[name]["telephone_delta"] = _delta(figures[0], figures[1])
    return {**common, "sets": out}


def _lines(telephone_mode: str, law: str) -> list[Line]:
    """The conditions each set runs under: 16 kHz, the phone line, or both (16 kHz first)."""
    return {"off": [Line()], "on": [Line(law)], "both": [Line(), Line(law)]}[telephone_mode]


def _figures(results: list[dict[str, Any]], *, sweep: bool) -> dict[str, Any]:
    """One set's figures under one line: the run's, or the sweep's with its capacity."""
    if not sweep:
        return results[0]
    # The largest count below which every count tried also kept up (a pass above a
    # failure is luck, not capacity).
    max_ok = 0
    for r in sorted(results, key=lambda r: r["sessions"]):
        if not r["realtime_ok"]:
            break
        max_ok = r["sessions"]
    return {"input": results[0]["input"], "sweep": results, "max_realtime_sessions": max_ok}


def _delta(wide: dict[str, Any], phone: dict[str, Any]) -> dict[str, Any]:
    """Phone line minus 16 kHz: WER points (as fractions) and latency ms; None where either lacks it."""

    def diff(a: Any, b: Any, digits: int) -> float | None:
        return round(b - a, digits) if isinstance(a, int | float) and isinstance(b, int | float) else None

    out: dict[str, Any] = {
        "wer": diff(wide.get("wer"), phone.get("wer"), 4),
        "offline_wer": diff(wide.get("offline_wer"), phone.get("offline_wer"), 4),
    }
    for key in ("final_latency_ms", "partial_lag_ms"):
        for q in ("p50", "p95"):
            out[f"{key}_{q}"] = diff(wide.get(key, {}).get(q), phone.get(key, {}).get(q), 1)
    out["finals_missing"] = diff(wide.get("finals_missing"), phone.get("finals_missing"), 0)
    return out


def _print_summary(r: dict[str, Any]) -> None:
    print(
        f"input={r['input']['rate_hz']}Hz sessions={r['sessions']} audio={r['audio_s_per_session']}s wer={r['wer']} "
        f"partial_lag_ms={r['partial_lag_ms']} final_latency_ms={r['final_latency_ms']} "
        f"max={r['final_latency_ms_max']} missing={r['finals_missing']} "
        f"max_send_lag_ms={r['max_send_lag_ms']} cpu_util={r['cpu_util']} "
        f"committed_changes={r['committed_changes']} realtime_ok={r['realtime_ok']}"
    )
    if r.get("asr_batches"):
        print(f"  asr_batches={r['asr_batches']}")
    for e in r["errors"]:
        print(f"  session {e['session']} failed: {e['error']}")


def main() -> None:
    """Parse arguments, run the benchmark, print the JSON object last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="target audio length per session (s); 0: every clip once"
    )
    parser.add_argument(
        "--set", default="real,hard,piper", help=f"comma-separated test sets ({', '.join(SET_NAMES)}); real always runs"
    )
    parser.add_argument(
        "--url",
        default=None,
        help="stream to a running server (ws://host:port) instead of in-process",
    )
    parser.add_argument(
        "--wavs", default=None, help="directory of X.wav + X.txt instead of Piper sentences"
    )
    parser.add_argument("--model", default=None, help="ASR model name or path (config asr.model)")
    parser.add_argument(
        "--sweep", default=None, help="comma-separated session counts, e.g. 1,2,4,8"
    )
    parser.add_argument(
        "--events-out", default=None, help="write every session's events as JSON lines here"
    )
    parser.add_argument("--chunk-ms", type=float, default=CHUNK_S * 1000, help="audio per message (ms; 100 default, 20 like WebRTC)")
    parser.add_argument(
        "--telephone", nargs="?", const="on", default="off", choices=("off", "on", "both"),
        help="feed the graph 8 kHz G.711 audio (bench/narrowband.py); both: 16 kHz and the line, side by side",
    )
    parser.add_argument("--law", default="ulaw", choices=LINES, help="the phone line's G.711 law (ulaw default)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if not args.json:
        for name, entry in result["sets"].items():
            print(f"{name}: offline_wer={entry['offline_wer']} max_realtime_sessions={entry.get('max_realtime_sessions')}")
            if "telephone" in entry:
                print(f"{name} telephone: offline_wer={entry['telephone']['offline_wer']} delta={entry['telephone_delta']}")
        print(f"encoder_padding_speedup={result['encoder_padding_speedup']}")
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
