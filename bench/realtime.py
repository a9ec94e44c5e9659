"""Benchmark: voxline's ``/v1/realtime`` driven by the official ``openai`` SDK on loopback.

    voxline serve --port 8765 &
    python bench/realtime.py --url http://127.0.0.1:8765 [--turns 8] [--quick]

Every session is an SDK client (``client.realtime.connect``) with a real-time
microphone: 20 ms appends, the clip's speech, then silence, as a microphone sends.
Each turn is one recording of a named set (``real``: human recordings, ``piper``:
Piper's sentences; clips of at most 12 s), on the server's default end of turn
(``semantic_vad``, voxline's). Figures, each per set where it applies:

- ``first_delta_after_speech_stopped_ms``: ``input_audio_buffer.speech_stopped`` to the
  first ``response.output_audio.delta`` received (target p50 ≤ 400 ms over 8 turns);
  beside it ``v2v_ms``: the end of the clip's speech as the microphone sent it to that
  first delta (what the user waits, end-of-turn wait included);
- ``cancel``: ms of audio in deltas received after ``response.cancel`` was sent
  (target ≤ 100 ms), over ``--cancels`` trials;
- ``concurrent``: 4 sessions at once, each speaking ``--concurrent-turns`` turns (real
  and Piper clips in turn): every turn answered, p50 of the first delta after
  speech_stopped (target ≤ 800 ms);
- ``schema_violations`` / ``unparsed``: events that fail the SDK's own pydantic models
  or are not JSON (target 0).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from percentiles import p50_p95
from speech_sets import load_set
from testset import SAMPLE_RATE_HZ, speech_bounds

from voxline.testing.realtime_talk import RATE_HZ, RealtimeTalk

MAX_CLIP_S = 12.0
TURN_TIMEOUT_S = 40.0
PIPER_QUESTIONS = (
    "What is the capital of France?",
    "Can you recommend a good book to read this weekend?",
    "How far away is the moon from the earth?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue during the day?",
    "How do I keep my houseplants alive in winter?",
    "What is a good way to learn a new language?",
    "Tell me something interesting about octopuses.",
)


def recordings(name: str, count: int) -> list[tuple[str, np.ndarray]]:
    """(text, 16 kHz audio) of the first ``count`` clips of a set that fit a turn."""
    if name == "piper":
        from voxline.testing.speech_synth import synthesize

        spoken = [(q, synthesize(q, SAMPLE_RATE_HZ)) for q in PIPER_QUESTIONS[:count]]
        return [(q, a[: speech_bounds(a)[1] + 1]) for q, a in spoken]  # the speech's end is the clip's end
    clips = [c for c in load_set(name) if len(c.audio) <= MAX_CLIP_S * SAMPLE_RATE_HZ]
    return [(c.text, c.audio[: c.speech_end]) for c in clips[:count]]


async def spoken_turn(talk: RealtimeTalk, audio: np.ndarray) -> dict[str, Any]:
    """Say ``audio`` and wait for the answer; the turn's figures."""
    before = len(talk.events)
    said_at = talk.say(audio)
    waiting = "input_audio_buffer.speech_stopped"
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            stopped = await talk.next(waiting, within_s=TURN_TIMEOUT_S)
            waiting = "response.output_audio.delta"
            first = await talk.next(waiting, within_s=TURN_TIMEOUT_S)
            waiting = "response.done"
            done = await talk.next(waiting, within_s=TURN_TIMEOUT_S)
    except TimeoutError:
        seen = [e["type"] for e in talk.events[before:] if not e["type"].endswith(".delta")]
        print(f"turn not answered: waited for {waiting}; saw {seen}", file=sys.stderr)
        raise
    await asyncio.sleep(0.5)
    new = talk.events[before:]
    transcript = next((e["transcript"] for e in new if e["type"] == "conversation.item.input_audio_transcription.completed"), "")
    return {
        "after_stopped_ms": (first["_at"] - stopped["_at"]) * 1000,
        "v2v_ms": (first["_at"] - said_at) * 1000,
        "status": done["response"]["status"],
        "heard": transcript,
        "speech_started": sum(e["type"] == "input_audio_buffer.speech_started" for e in new),
    }


async def run_set(url: str, name: str, turns: int) -> dict[str, Any]:
    """One session speaking ``turns`` clips of set ``name``, one turn each."""
    results: list[dict[str, Any]] = []
    failures = 0
    async with RealtimeTalk.connect(url) as talk:
        await talk.next("session.created")
        for _text, audio in recordings(name, turns):
            try:
                results.append(await spoken_turn(talk, audio))
            except TimeoutError:
                failures += 1
            await asyncio.sleep(1.0)
        violations = len(talk.violations) + talk.unparsed
    return {
        "set": name, "turns": len(results) + failures, "answered": len(results), "failures": failures,
        "first_delta_after_speech_stopped_ms": p50_p95([r["after_stopped_ms"] for r in results]),
        "v2v_ms": p50_p95([r["v2v_ms"] for r in results]),
        "statuses": sorted({r["status"] for r in results}),
        "schema_violations": violations,
    }


async def run_cancels(url: str, trials: int) -> dict[str, Any]:
    """``response.cancel`` half a second into a long spoken reply; the audio that still came (a session a trial)."""
    late_ms: list[float] = []
    statuses: list[str] = []
    violations = 0
    for _ in range(trials):
        async with RealtimeTalk.connect(url, mic=False) as talk:
            await talk.next("session.created")
            await talk.ask("Tell me a long story about a dragon and a knight.")
            await talk.next("response.output_audio.delta")
            await asyncio.sleep(0.5)
            cancel_at = time.monotonic()
            await talk.send({"type": "response.cancel"})
            done = await talk.next("response.done")
            await asyncio.sleep(0.5)
            late = [e for e in talk.of("response.output_audio.delta") if e["_at"] > cancel_at]
            late_ms.append(sum(len(e["delta"]) * 3 / 4 / 2 for e in late) * 1000 / RATE_HZ)
            statuses.append(done["response"]["status"])
            violations += len(talk.violations) + talk.unparsed
    return {
        "trials": trials, "audio_after_cancel_ms": {**p50_p95(late_ms), "max": round(max(late_ms), 1)},
        "statuses": statuses, "schema_violations": violations,
    }


async def run_concurrent(url: str, sessions: int, turns: int) -> dict[str, Any]:
    """``sessions`` SDK sessions at once, each speaking ``turns`` clips (real and Piper by turns)."""
    real = recordings("real", turns * sessions)
    piper = recordings("piper", len(PIPER_QUESTIONS))
    mixed = [x for pair in zip(real, piper, strict=False) for x in pair]

    async def one(index: int) -> tuple[list[dict[str, Any]], int, int]:
        results, failures = [], 0
        async with RealtimeTalk.connect(url) as talk:
            await talk.next("session.created")
            await asyncio.sleep(index * 0.7)  # people do not all start on the same frame
            for turn in range(turns):
                _text, audio = mixed[(index * turns + turn) % len(mixed)]
                try:
                    results.append(await spoken_turn(talk, audio))
                except TimeoutError:
                    failures += 1
                await asyncio.sleep(1.0)
            return results, failures, len(talk.violations) + talk.unparsed

    outcomes = await asyncio.gather(*(one(i) for i in range(sessions)))
    results = [r for rs, _, _ in outcomes for r in rs]
    return {
        "sessions": sessions, "turns": sessions * turns, "answered": len(results),
        "failures": sum(f for _, f, _ in outcomes),
        "first_delta_after_speech_stopped_ms": p50_p95([r["after_stopped_ms"] for r in results]),
        "v2v_ms": p50_p95([r["v2v_ms"] for r in results]),
        "schema_violations": sum(v for _, _, v in outcomes),
    }


async def main() -> None:
    """Run the figures and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8765")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--cancels", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--concurrent-turns", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 turns per set, 2 cancels, 2 turns per concurrent session")
    args = parser.parse_args()
    if args.quick:
        args.turns, args.cancels, args.concurrent_turns = 2, 2, 2
    started = time.monotonic()
    by_set = {name: await run_set(args.url, name, args.turns) for name in ("real", "piper")}
    cancel = await run_cancels(args.url, args.cancels)
    concurrent = await run_concurrent(args.url, args.concurrent, args.concurrent_turns)
    violations = sum(s["schema_violations"] for s in by_set.values()) + cancel["schema_violations"] + concurrent["schema_violations"]
    real_p50 = by_set["real"]["first_delta_after_speech_stopped_ms"]["p50"]
    report = {
        "bench": "realtime", "command": "python bench/realtime.py --url " + args.url + (" --quick" if args.quick else ""),
        "client": "openai SDK client.realtime (GA), 20 ms appends in real time", "end_of_turn": "semantic_vad (default)",
        "sets": by_set, "cancel": cancel, "concurrent": concurrent,
        "schema_violations_or_unparsed": violations,
        "targets": {
            "first_delta_after_speech_stopped_p50_le_400ms_real": real_p50 is not None and real_p50 <= 400,
            "audio_after_cancel_le_100ms": (cancel["audio_after_cancel_ms"]["max"] or 0) <= 100,
            "concurrent_all_answered": concurrent["answered"] == concurrent["turns"],
            "concurrent_p50_le_800ms": (concurrent["first_delta_after_speech_stopped_ms"]["p50"] or 1e9) <= 800,
            "schema_violations_0": violations == 0,
        },
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
