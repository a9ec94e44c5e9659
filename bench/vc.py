"""Voice conversion: latency, compute, sessions per core, pitch accuracy, words kept, live delay.

The converter is voxline's streaming PSOLA (``models/voice_converter.py``). Test sets
(``bench/speech_sets.py``): ``real``, 13 human recordings, and ``piper``, 18 Piper
sentences, both at 16 kHz; every figure names its set. The live figures (WebRTC and
the anonymizer) leave out the 53 s LibriVox passage to keep the run short. The CPU
figures run with ``torch.set_num_threads(1)`` in this process; "the voice" is the
config's default preset (``vc.preset``, deeper: -4 semitones, formants x0.88) unless
named. Figures:

- ``algorithmic_latency_ms``: the converter's fixed delay at the call rate
  (``vc.sample_rate_hz``, 24 kHz), ``PsolaConverter.latency_ms``; and
  ``content_delay_ms`` {p50, p95} over the real set at 0 semitones: each clip
  (resampled to 24 kHz) streamed through ``process`` in 20 ms frames, and the lag
  that best aligns the output's loudness envelope (10 ms RMS blocks every 1 ms) with
  the input's (``bench/envelope_lag.py``), nothing subtracted.
- ``compute_ms_per_20ms_frame`` {p50, p95}: one session, the real set at 24 kHz in
  20 ms frames, the wall time of each ``process`` call.
- ``sessions_per_core_realtime``: N sessions in one ``process(states, chunks)`` call
  per 20 ms tick (as the engine's worker batches them), each fed its own real clip
  (rotated and offset for N > 13) for ``--load-s`` seconds. Per N: compute per tick
  {p50, p95} (wall) and ``cpu_share_one_core`` (thread CPU time / audio time).
  ``value``: the largest N whose p95 is under 20 ms, from the sweep (1, 8, 16, ...
  until one fails) refined by halving the gap. ``engine``: the same N through
  ``VoiceConverterEngine``, N asyncio sessions each awaiting ``convert`` for its next
  frame when that frame is due (aligned: all at the same instants; staggered: phases
  spread over the 20 ms), the round trip per frame {p50, p95}, frames late (round
  trip > 20 ms) and the worker's batches.
- ``f0_ratio_error``: ``PsolaConverter(16000)`` at -6, -3, +3, +6 semitones; F0 of
  input and output by ``models.pitch.measure_f0`` (not the converter's tracker) every
  10 ms; over frames voiced in both, |(out/in) / requested - 1| in percent: the median
  (and p90) per set and semitone, and ``all``: the median over every value.
- ``wer_before`` / ``wer_after``: the captioning ASR on the original clips and on
  clips converted at the call rate (24 kHz, resampled there and back) at -4 and +4
  semitones and the presets deeper and brighter. ``streaming``: ``bench/captions.py``'s
  ``wer``, i.e. the clips laid out as one stream with 0.8-1.2 s of silence between them
  and captioned through ``caption_locally`` in 100 ms chunks in real time; every set
  and voice is one session, all at once on one set of caption engines. ``offline``:
  ``bench/captions.py``'s ``offline_wer`` (each whole clip decoded at once).
  ``points_vs_before``: the streaming WER after minus before, in points.
- ``mouth_to_ear_ms`` (``--url`` only): a ``CallClient`` in ``voice_changer`` mode says
  the clips (48 kHz, soxr) with 0.8 s of silence between them through its paced
  microphone track; every 20 ms frame sent is stamped when the track takes it, every
  frame received when it reaches ``on_audio``. Per clip, the lag that best aligns the
  sent envelope (10 ms RMS blocks placed at their frames' stamps) with the received
  one, searched over 0-600 ms in 1 ms steps; clips whose best correlation is under 0.6
  are listed, not counted. Once with the preset deeper and once with natural, where the
  figure is transport plus the converter's fixed delay. ``arrival_interval_ms``: the
  time between consecutive frames received (20 when the audio flows evenly).
- ``anonymizer_latency_ms`` {p50, p95}: the ``latency_ms`` of the ``anon.phrase``
  events (end of a phrase, as said, to the start of its re-spoken audio), one session
  per set saying its clips one by one, each after the re-spoken audio of the one
  before has played out. With ``--url`` over WebRTC (a ``CallClient`` in
  ``anonymizer`` mode), otherwise in this process (``build_anonymizer_session`` driven
  in real time by ``clients.agent_runner.PacedAgentLoop``).

``targets`` says which figure met its target (algorithmic <= 20 ms, mouth to ear p50
<= 150 ms, >= 20 sessions per core, F0 error <= 3 %, WER after <= before + 5 points
from -4 to +4 semitones). The last line of stdout is one JSON object; progress goes
to stderr.

    python bench/vc.py [--url http://127.0.0.1:8765] [--quick]

``--quick`` uses the 3 shortest clips of each set (2 for the live figures), short
loads and a short sweep: a smoke test of every path, not a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from captions import _run_count, offline_wer
from envelope_lag import best_lag, frames_envelope, rms_envelope
from percentiles import p50_p95
from real_speech import LONG_PASSAGE
from speech_sets import load_set
from testset import SAMPLE_RATE_HZ, Clip, make_clip

from voxline.config import Config, load_config
from voxline.models.pitch import measure_f0
from voxline.models.vc_engine import VoiceConverterEngine
from voxline.models.voice_converter import PRESETS, PsolaConverter, VoiceParams

FloatAudio = npt.NDArray[np.float32]

FRAME_S = 0.02
SETS = ("real", "piper")
SWEEP = (1, 8, 16, 32, 64, 128, 256)
REFINE_STEPS = 3
F0_SEMITONES = (-6.0, -3.0, 3.0, 6.0)
WER_VOICES: dict[str, VoiceParams] = {
    "-4": VoiceParams(semitones=-4.0),
    "+4": VoiceParams(semitones=4.0),
    "deeper": PRESETS["deeper"],
    "brighter": PRESETS["brighter"],
}
CONTENT_LAG_RANGE_S = (-0.02, 0.1)
CALL_LAG_RANGE_S = (0.0, 0.6)
MIN_CORRELATION = 0.6
CALL_RATE_HZ = 48000
CALL_GAP_S = 0.8
LEAD_S = 1.0
TARGETS = {"algorithmic_ms": 20.0, "mouth_to_ear_p50_ms": 150.0, "sessions": 20, "f0_pct": 3.0, "wer_points": 5.0}


def say(message: str) -> None:
    """Progress, to stderr."""
    print(f"[vc] {message}", file=sys.stderr, flush=True)


# -- test sets ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sets:
    """The clips each part of the run uses, per set name."""

    full: dict[str, tuple[Clip, ...]]
    live: dict[str, tuple[Clip, ...]]

    def describe(self) -> dict[str, Any]:
        """Clip counts, seconds and names, per set and use."""
        def one(clips: tuple[Clip, ...]) -> dict[str, Any]:
            seconds = sum(len(c.audio) for c in clips) / SAMPLE_RATE_HZ
            return {"clips": len(clips), "seconds": round(seconds, 1), "names": [c.name for c in clips]}

        return {name: {"offline": one(self.full[name]), "live": one(self.live[name])} for name in self.full}


def load_sets(quick: bool) -> Sets:
    """The real and Piper clips; ``quick``: the 3 shortest of each (2 for the live parts)."""
    full: dict[str, tuple[Clip, ...]] = {}
    live: dict[str, tuple[Clip, ...]] = {}
    for name in SETS:
        clips = load_set(name)
        if quick:
            clips = tuple(sorted(clips, key=lambda c: len(c.audio))[:3])
        full[name] = clips
        live[name] = tuple(c for c in clips if c.name != LONG_PASSAGE)[: 2 if quick else None]
    return Sets(full, live)


def resample(audio: FloatAudio, rate_in: int, rate_out: int) -> FloatAudio:
    """``audio`` at ``rate_out`` (soxr, whole array)."""
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), rate_in, rate_out).astype(np.float32)


def frames(audio: FloatAudio, step: int) -> list[FloatAudio]:
    """``audio`` cut into ``step``-sample frames, the last padded with silence."""
    padded = np.concatenate((audio, np.zeros(-len(audio) % step, np.float32)))
    return [padded[i : i + step] for i in range(0, len(padded), step)]


# -- latency and compute -----------------------------------------------------------


def stream_raw(converter: PsolaConverter, audio: FloatAudio, params: VoiceParams) -> tuple[FloatAudio, FloatAudio]:
    """(input padded by the latency, what ``process`` returned for it in 20 ms frames, unshifted)."""
    step = round(FRAME_S * converter.sample_rate_hz)
    padded = np.concatenate((audio, np.zeros(converter.latency_samples, np.float32)))
    state = converter.new_state(params)
    pieces = frames(padded, step)
    out = np.concatenate([converter.process([state], [piece])[0] for piece in pieces])
    return np.concatenate(pieces), out


def content_delay(converter: PsolaConverter, clips: Sequence[Clip]) -> dict[str, Any]:
    """The envelope lag of the raw streamed output behind its input, per clip, at 0 semitones."""
    rate = converter.sample_rate_hz
    lags: list[float] = []
    for clip in clips:
        sent, out = stream_raw(converter, resample(clip.audio, SAMPLE_RATE_HZ, rate), VoiceParams())
        times_in, env_in = rms_envelope(sent, rate, hop_ms=1.0)
        times_out, env_out = rms_envelope(out, rate, hop_ms=1.0)
        lag, _ = best_lag(times_in, env_in, times_out, env_out, *CONTENT_LAG_RANGE_S, step_s=0.00025)
        if lag is not None:
            lags.append(lag * 1000)
    return {"set": "real", "semitones": 0, "clips": len(lags), **p50_p95(lags),
            "min": round(min(lags), 1) if lags else None, "max": round(max(lags), 1) if lags else None}


def compute_per_frame(converter: PsolaConverter, clips: Sequence[Clip], params: VoiceParams) -> dict[str, Any]:
    """Wall ms of each 20 ms ``process`` call of one session streaming every clip."""
    step = round(FRAME_S * converter.sample_rate_hz)
    times: list[float] = []
    for clip in clips:
        state = converter.new_state(params)
        for piece in frames(resample(clip.audio, SAMPLE_RATE_HZ, converter.sample_rate_hz), step):
            started = time.perf_counter()
            converter.process([state], [piece])
            times.append((time.perf_counter() - started) * 1000)
    return {"set": "real", "sample_rate_hz": converter.sample_rate_hz, "frames": len(times),
            **p50_p95([round(t, 3) for t in times]), "mean": round(float(np.mean(times)), 3)}


def session_audio(clips: Sequence[FloatAudio], n: int, samples: int, rate: int) -> list[FloatAudio]:
    """``n`` sessions' inputs of ``samples`` each: clip ``i % len``, started 0.5 s later per round, looped."""
    out = []
    for i in range(n):
        clip = clips[i % len(clips)]
        offset = round((i // len(clips)) * 0.5 * rate) % len(clip)
        out.append(np.resize(np.roll(clip, -offset), samples).astype(np.float32))
    return out


def batch_load(converter: PsolaConverter, inputs: list[FloatAudio], params: VoiceParams) -> dict[str, Any]:
    """Every session's next frame in one ``process`` call per tick; compute per tick and CPU share."""
    step = round(FRAME_S * converter.sample_rate_hz)
    states = [converter.new_state(params) for _ in inputs]
    ticks = len(inputs[0]) // step
    times: list[float] = []
    cpu_started = time.thread_time()
    for k in range(ticks):
        chunks = [audio[k * step : (k + 1) * step] for audio in inputs]
        started = time.perf_counter()
        converter.process(states, chunks)
        times.append((time.perf_counter() - started) * 1000)
    cpu_s = time.thread_time() - cpu_started
    pct = p50_p95(times)
    return {"sessions": len(inputs), "ticks": ticks, "compute_ms_per_tick": pct,
            "cpu_share_one_core": round(cpu_s / (ticks * FRAME_S), 3),
            "realtime": pct["p95"] is not None and pct["p95"] < FRAME_S * 1000}


def sweep_sessions(converter: PsolaConverter, clips: Sequence[Clip], params: VoiceParams, load_s: float,
                   counts: Sequence[int]) -> tuple[int, list[dict[str, Any]]]:
    """The largest real-time N: the sweep until a count fails, then the gap halved ``REFINE_STEPS`` times."""
    rate = converter.sample_rate_hz
    audio = [resample(c.audio, SAMPLE_RATE_HZ, rate) for c in clips]
    samples = round(load_s * rate)

    def trial(n: int) -> dict[str, Any]:
        result = batch_load(converter, session_audio(audio, n, samples, rate), params)
        say(f"  {n} sessions: {result['compute_ms_per_tick']} ms per tick, cpu {result['cpu_share_one_core']}")
        return result

    results: list[dict[str, Any]] = []
    best, failed = 0, 0
    for n in counts:
        results.append(trial(n))
        if not results[-1]["realtime"]:
            failed = n
            break
        best = n
    for _ in range(REFINE_STEPS if failed else 0):
        middle = (best + failed) // 2
        if middle <= best:
            break
        results.append(trial(middle))
        best, failed = (middle, failed) if results[-1]["realtime"] else (best, middle)
    return best, sorted(results, key=lambda r: r["sessions"])


async def paced_session(session: Any, audio: FloatAudio, step: int, t0: float) -> tuple[list[float], list[float]]:
    """One engine session: each frame sent when due (``t0`` + its end), awaited; (round trips ms, send lags ms)."""
    trips: list[float] = []
    lags: list[float] = []
    for k, piece in enumerate(frames(audio, step)):
        due = t0 + (k + 1) * FRAME_S
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        sent = time.monotonic()
        await session.convert(piece)
        trips.append((time.monotonic() - sent) * 1000)
        lags.append((sent - due) * 1000)
    return trips, lags


async def engine_check(converter: PsolaConverter, clips: Sequence[Clip], params: VoiceParams, n: int,
                       load_s: float, staggered: bool) -> dict[str, Any]:
    """``n`` real-time sessions on one ``VoiceConverterEngine``: round trips, late frames, batches."""
    rate = converter.sample_rate_hz
    inputs = session_audio([resample(c.audio, SAMPLE_RATE_HZ, rate) for c in clips], n, round(load_s * rate), rate)
    engine = VoiceConverterEngine(converter)
    await engine.start()
    try:
        sessions = [engine.open(params) for _ in range(n)]
        t0 = time.monotonic() + 0.1
        runs = await asyncio.gather(*(
            paced_session(s, a, round(FRAME_S * rate), t0 + (i / n * FRAME_S if staggered else 0.0))
            for i, (s, a) in enumerate(zip(sessions, inputs, strict=True))
        ))
        timings = engine.batch_timings
    finally:
        await engine.close()
    trips = [t for run in runs for t in run[0]]
    late = sum(1 for t in trips if t > FRAME_S * 1000)
    return {
        "sessions": n, "phases": "staggered" if staggered else "aligned", "frames": len(trips),
        "round_trip_ms": p50_p95(trips), "round_trip_ms_max": round(max(trips), 1), "late_frames": late,
        "late_fraction": round(late / len(trips), 4), "send_lag_ms": p50_p95([x for run in runs for x in run[1]]),
        "batches": len(timings), "mean_batch_sessions": round(float(np.mean([t.sessions for t in timings])), 1),
        "batch_compute_ms": p50_p95([t.compute_ms for t in timings]),
    }


# -- pitch --------------------------------------------------------------------------


def f0_errors(converter: PsolaConverter, clip: Clip, semitones: float) -> list[float]:
    """|measured out/in F0 ratio / requested - 1| (%) over the 10 ms frames voiced in both."""
    params = VoiceParams(semitones=semitones)
    rate = converter.sample_rate_hz
    f_in = measure_f0(clip.audio, rate)
    f_out = measure_f0(converter.convert(clip.audio, params), rate)
    n = min(len(f_in), len(f_out))
    voiced = (f_in[:n] > 0) & (f_out[:n] > 0)
    ratio = f_out[:n][voiced] / f_in[:n][voiced]
    return list(np.abs(ratio / params.pitch_ratio - 1.0) * 100)


def f0_ratio_error(converter: PsolaConverter, clips: Sequence[Clip]) -> dict[str, Any]:
    """Per semitone value: the median and p90 error (%) and the frames counted; ``all``: every value's median."""
    out: dict[str, Any] = {}
    everything: list[float] = []
    for semitones in F0_SEMITONES:
        errors = [e for clip in clips for e in f0_errors(converter, clip, semitones)]
        everything += errors
        out[f"{semitones:+g}"] = {"median_pct": round(float(np.median(errors)), 2),
                                  "p90_pct": round(float(np.percentile(errors, 90)), 2), "voiced_frames": len(errors)}
    out["all"] = {"median_pct": round(float(np.median(everything)), 2), "voiced_frames": len(everything)}
    return out


# -- words --------------------------------------------------------------------------


def converted_clips(converter: PsolaConverter, clips: Sequence[Clip], params: VoiceParams) -> tuple[Clip, ...]:
    """Each clip converted at the converter's rate (resampled there and back), same length and texts."""
    rate = converter.sample_rate_hz
    out = []
    for clip in clips:
        audio = converter.convert(resample(clip.audio, SAMPLE_RATE_HZ, rate), params)
        out.append(make_clip(clip.name, clip.text, resample(audio, rate, SAMPLE_RATE_HZ)[: len(clip.audio)]))
    return tuple(out)


async def word_error_rates(
    sets: Sets, converter: PsolaConverter, engines: Any, config: Config
) -> dict[tuple[str, str], dict[str, Any]]:
    """Streaming (all sessions at once, real time) and offline WER per set and voice; voice ``before``: unchanged."""
    variants = {(name, "before"): clips for name, clips in sets.full.items()}
    for name, clips in sets.full.items():
        for voice, params in WER_VOICES.items():
            variants[(name, voice)] = await asyncio.to_thread(converted_clips, converter, clips, params)
    say(f"captioning {len(variants)} streams at once in real time")
    streamed = await asyncio.gather(*(_run_count(1, clips, 0.0, engines, config, None) for clips in variants.values()))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, (result, _) in zip(variants, streamed, strict=True):
        say(f"offline WER {key[0]} {key[1]}")
        out[key] = {"streaming": result["wer"], "offline": await offline_wer(engines.recognizer, variants[key], None),
                    "finals_missing": result["finals_missing"], "realtime_ok": result["realtime_ok"]}
    return out


def wer_tables(rates: dict[tuple[str, str], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``wer_before`` per set, and ``wer_after`` per set and voice with the streaming change in points."""
    before = {name: rates[(name, "before")] for name, voice in rates if voice == "before"}
    after: dict[str, Any] = {name: {} for name in before}
    for (name, voice), entry in rates.items():
        if voice != "before":
            delta = (entry["streaming"] - before[name]["streaming"]) * 100
            after[name][voice] = {**entry, "params": WER_VOICES[voice].as_dict(), "points_vs_before": round(delta, 2)}
    return before, after


# -- live sessions: what a caller sent and heard -------------------------------------------


@dataclass(slots=True)
class CallRecord:
    """One live session seen from the caller: frames sent and received, events, each stamped (monotonic)."""

    microphone: Callable[[int], FloatAudio]
    sent: list[tuple[float, FloatAudio]] = field(default_factory=list)
    received: list[tuple[float, FloatAudio]] = field(default_factory=list)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    last_loud_at: float = 0.0

    def read(self, n_samples: int) -> FloatAudio:
        """The microphone's next frame, noted as sent now."""
        chunk = self.microphone(n_samples)
        self.sent.append((time.monotonic(), chunk))
        return chunk

    def on_audio(self, samples: FloatAudio) -> None:
        """A frame heard back, noted as received now."""
        now = time.monotonic()
        self.received.append((now, np.asarray(samples, dtype=np.float32)))
        if float(np.abs(samples).max(initial=0.0)) > 0.01:
            self.last_loud_at = now

    def on_event(self, event: dict[str, Any]) -> None:
        """A session event, noted as received now."""
        self.events.append((time.monotonic(), event))

    def phrases(self) -> list[dict[str, Any]]:
        """The ``anon.phrase`` events so far."""
        return [e for _, e in self.events if e.get("type") == "anon.phrase"]


async def until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 20 ms for at most ``timeout_s``; whether it came true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(FRAME_S)
    return True


def said_out(clip: Any) -> Callable[[], bool]:
    """Whether the last sample of a ``SaidClip`` has gone out."""
    return lambda: clip.ended_at is not None


async def say_clips(record: CallRecord, mic: Any, clips: Sequence[FloatAudio], settle: Callable[[float], Any]) -> list[Any]:
    """Say each clip after ``LEAD_S``, then await ``settle(end time)`` before the next; the ``SaidClip`` records."""
    await asyncio.sleep(LEAD_S)
    said = []
    for audio in clips:
        clip = mic.say(audio)
        await until(said_out(clip), len(audio) / CALL_RATE_HZ + 30.0)
        await settle(clip.ended_at or time.monotonic())
        said.append(clip)
    return said


def clip_lag(record: CallRecord, clip: Any, rate: int) -> tuple[float | None, float]:
    """The envelope lag (s) of what came back behind one said clip, and its correlation."""
    start, end = clip.started_at - 0.1, clip.ended_at + 0.1
    sent = [(t, a) for t, a in record.sent if start <= t <= end]
    heard = [(t, a) for t, a in record.received if start <= t <= end + CALL_LAG_RANGE_S[1] + 0.1]
    return best_lag(*frames_envelope(sent, rate), *frames_envelope(heard, rate), *CALL_LAG_RANGE_S)


async def webrtc_call(url: str, session: dict[str, Any], clips: Sequence[FloatAudio],
                      settle: Callable[[CallRecord], Callable[[float], Any]]) -> tuple[CallRecord, list[Any]]:
    """One call saying ``clips`` (48 kHz) through a ``CallClient``; what it sent and heard."""
    from voxline.clients.webrtc_client import CallClient
    from voxline.testing.clip_microphone import ClipMicrophone

    mic = ClipMicrophone()
    record = CallRecord(mic)
    client = CallClient(url, record.read, on_audio=record.on_audio, session=session)

    async def read_events() -> None:
        async for event in client.events():
            record.on_event(event)

    reader = asyncio.create_task(read_events())
    try:
        await client.connect()
        said = await say_clips(record, mic, clips, settle(record))
    finally:
        await client.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return record, said


def gap_settle(record: CallRecord) -> Callable[[float], Any]:
    """Wait ``CALL_GAP_S`` after a clip (the voice changer's reply follows it within ms)."""
    return lambda ended: asyncio.sleep(max(0.0, ended + CALL_GAP_S - time.monotonic()))


def quiet_settle(record: CallRecord) -> Callable[[float], Any]:
    """Wait until a phrase was re-spoken after the clip and played out (1 s without loud audio), at most 30 s."""
    async def settle(ended: float) -> None:
        heard = len(record.phrases())
        await until(lambda: len(record.phrases()) > heard and time.monotonic() - record.last_loud_at > 1.0
                    and time.monotonic() - ended > 2.0, 30.0)

    return settle


def arrival_intervals(record: CallRecord) -> dict[str, Any]:
    """Time between consecutive received frames (ms) {p50, p95, max}: 20 when the audio flows evenly."""
    gaps = list(np.diff([t for t, _ in record.received]) * 1000)
    return {**p50_p95(gaps), "max": round(max(gaps), 1) if gaps else None}


async def mouth_to_ear(url: str, sets: Sets) -> dict[str, Any]:
    """Per preset and set, one voice-changer call; the envelope lag per clip, p50/p95 over the clips."""
    out: dict[str, Any] = {}
    for preset in ("deeper", "natural"):
        out[preset] = {}
        for name, clips in sets.live.items():
            say(f"mouth to ear over WebRTC: preset {preset}, set {name}")
            record, said = await webrtc_call(
                url, {"mode": "voice_changer", "vc": {"preset": preset}},
                [resample(c.audio, SAMPLE_RATE_HZ, CALL_RATE_HZ) for c in clips], gap_settle,
            )
            per_clip = [(c.name, *clip_lag(record, s, CALL_RATE_HZ)) for c, s in zip(clips, said, strict=True)]
            kept = [lag * 1000 for _, lag, r in per_clip if lag is not None and r >= MIN_CORRELATION]
            out[preset][name] = {
                **p50_p95(kept), "clips": len(kept),
                "per_clip": [{"clip": n, "lag_ms": None if lag is None else round(lag * 1000, 1),
                              "correlation": round(r, 3)} for n, lag, r in per_clip],
                "frames_sent": len(record.sent), "frames_received": len(record.received),
                "arrival_interval_ms": arrival_intervals(record),
            }
    return out


def phrase_summary(record: CallRecord, clips: Sequence[Clip]) -> dict[str, Any]:
    """The re-spoken phrases' latencies {p50, p95}, how many, and the clips said."""
    latencies = [float(e["latency_ms"]) for e in record.phrases()]
    return {**p50_p95(latencies), "max": round(max(latencies), 1) if latencies else None,
            "phrases": len(latencies), "clips": [c.name for c in clips]}


async def anonymizer_webrtc(url: str, sets: Sets) -> dict[str, Any]:
    """One anonymizer call per set over WebRTC; its phrases' latencies."""
    out: dict[str, Any] = {"transport": "webrtc"}
    for name, clips in sets.live.items():
        say(f"anonymizer over WebRTC: set {name}")
        record, _ = await webrtc_call(url, {"mode": "anonymizer"},
                                      [resample(c.audio, SAMPLE_RATE_HZ, CALL_RATE_HZ) for c in clips], quiet_settle)
        out[name] = phrase_summary(record, clips)
    return out


async def anonymizer_session(engines: Any, tts: Any, clips: Sequence[Clip], name: str) -> CallRecord:
    """One in-process anonymizer session saying ``clips``, ticked in real time by ``PacedAgentLoop``."""
    from voxline.clients.agent_runner import PacedAgentLoop
    from voxline.pipeline.recipes.anonymizer import build_anonymizer_session
    from voxline.testing.clip_microphone import ClipMicrophone

    session = build_anonymizer_session(engines, tts, name=name)
    mic = ClipMicrophone()
    record = CallRecord(mic)
    loop = PacedAgentLoop(session, lambda n, _loop: record.read(n), on_event=record.on_event,
                          on_played=record.on_audio, record=False)
    stop = asyncio.Event()
    await session.graph.start()
    ticking = asyncio.create_task(loop.run(lambda _loop: stop.is_set(), max_s=3600.0))
    try:
        await say_clips(record, mic, [c.audio for c in clips], quiet_settle(record))
    finally:
        stop.set()
        await asyncio.gather(ticking, return_exceptions=True)
        await session.graph.cancel()
    return record


async def anonymizer_local(sets: Sets, engines: Any, config: Config) -> dict[str, Any]:
    """One in-process anonymizer session per set; its phrases' latencies."""
    from voxline.models.tts import PiperEngine

    tts = PiperEngine(config.tts.voice or None, workers=1, cpu_threads=config.tts.cpu_threads)
    await tts.start()
    out: dict[str, Any] = {"transport": "in_process"}
    try:
        for name, clips in sets.live.items():
            say(f"anonymizer in process: set {name}")
            out[name] = phrase_summary(await anonymizer_session(engines, tts, clips, f"bench-anon-{name}"), clips)
    finally:
        await tts.close()
    return out


# -- the run ------------------------------------------------------------------------


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each target and whether this run met it (None: not measured)."""
    m2e = result["mouth_to_ear_ms"]
    m2e_p50 = {f"{p}/{s}": v["p50"] for p, per in m2e.items() if isinstance(per, dict) for s, v in per.items()
               if isinstance(v, dict) and "p50" in v}
    f0 = {name: result["f0_ratio_error"][name]["all"]["median_pct"] for name in SETS}
    worst = {name: max(v["points_vs_before"] for v in result["wer_after"][name].values()) for name in SETS}
    return {
        "algorithmic_latency_le_20ms": result["algorithmic_latency_ms"]["value"] <= TARGETS["algorithmic_ms"],
        "mouth_to_ear_p50_le_150ms": {k: v is not None and v <= TARGETS["mouth_to_ear_p50_ms"]
                                      for k, v in m2e_p50.items()} or None,
        "sessions_per_core_ge_20": result["sessions_per_core_realtime"]["value"] >= TARGETS["sessions"],
        "f0_error_le_3pct": {name: v <= TARGETS["f0_pct"] for name, v in f0.items()},
        "wer_after_le_before_plus_5_points": {name: v <= TARGETS["wer_points"] for name, v in worst.items()},
        "wer_worst_points_vs_before": worst,
    }


async def converter_figures(args: argparse.Namespace, sets: Sets, config: Config) -> dict[str, Any]:
    """Latency, compute, sessions per core and the engine check, at the call rate."""
    voice = PRESETS[config.vc.preset]
    call = PsolaConverter(config.vc.sample_rate_hz, latency_ms=config.vc.latency_ms)
    say("content delay")
    latency = {"value": call.latency_ms, "sample_rate_hz": call.sample_rate_hz,
               "content_delay_ms": content_delay(call, sets.full["real"])}
    say("compute per frame")
    compute = {**compute_per_frame(call, sets.full["real"], voice), "voice": config.vc.preset}
    say("sessions per core")
    counts = SWEEP[:4] if args.quick else SWEEP
    best, sweep = sweep_sessions(call, sets.full["real"], voice, args.load_s, counts)
    checks = []
    for staggered in (False, True):
        say(f"engine check: {best} sessions, {'staggered' if staggered else 'aligned'}")
        checks.append(await engine_check(call, sets.full["real"], voice, max(1, best), args.load_s, staggered))
    sessions = {"value": best, "set": "real", "voice": config.vc.preset, "load_s": args.load_s,
                "sweep": sweep, "engine": checks}
    return {"algorithmic_latency_ms": latency, "compute_ms_per_20ms_frame": compute,
            "sessions_per_core_realtime": sessions}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, in order: the CPU-bound ones first, then the real-time ones."""
    from voxline.pipeline.recipes.captioner import CaptionEngines

    started = time.monotonic()
    torch.set_num_threads(1)
    config = load_config()
    sets = await asyncio.to_thread(load_sets, args.quick)
    result: dict[str, Any] = await converter_figures(args, sets, config)
    say("F0 ratio error")
    at_16k = PsolaConverter(SAMPLE_RATE_HZ, latency_ms=config.vc.latency_ms)
    result["f0_ratio_error"] = {"sample_rate_hz": SAMPLE_RATE_HZ,
                                **{name: f0_ratio_error(at_16k, clips) for name, clips in sets.full.items()}}
    engines = await CaptionEngines.load(config.asr, config.vad)
    try:
        call = PsolaConverter(config.vc.sample_rate_hz, latency_ms=config.vc.latency_ms)
        result["wer_before"], result["wer_after"] = wer_tables(await word_error_rates(sets, call, engines, config))
        if args.url:
            result["mouth_to_ear_ms"] = await mouth_to_ear(args.url, sets)
            result["anonymizer_latency_ms"] = await anonymizer_webrtc(args.url, sets)
        else:
            result["mouth_to_ear_ms"] = {"skipped": "needs a server: --url http://HOST:PORT"}
            result["anonymizer_latency_ms"] = await anonymizer_local(sets, engines, config)
    finally:
        await engines.close()
    result["targets"] = targets(result)
    return {
        "bench": "vc", "command": "python " + " ".join(sys.argv), "quick": args.quick, "url": args.url,
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version()},
        "sets": sets.describe(), "asr_model": config.asr.model, **result,
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    """Parse arguments, run the benchmark, print the JSON object last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running voxline server (http://HOST:PORT) for the WebRTC figures")
    parser.add_argument("--quick", action="store_true", help="3 clips a set, short loads: a smoke run")
    parser.add_argument("--load-s", type=float, default=None, help="seconds of audio per session count (6; quick 1.5)")
    args = parser.parse_args()
    if args.load_s is None:
        args.load_s = 1.5 if args.quick else 6.0
    result = asyncio.run(run(args))
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
