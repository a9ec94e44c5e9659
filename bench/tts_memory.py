"""Piper's resident memory under replies of every length: the engine as shipped vs whole sentences.

onnxruntime's CPU arena keeps, for each voice, memory for the longest input it ran.
This starts a ``PiperEngine`` (its default workers, one voice each), synthesizes
``--replies`` seeded random replies of 3-60 words (one sentence each, no pause marks:
the worst case for cutting), and samples the process's RSS. ``--mode shipped`` is the
engine as it is (pieces of at most ``MAX_PIECE_WORDS`` words, each voice warmed with
one at start); ``--mode whole`` hands Piper each reply whole and skips the warm-up, as
the engine did before. Run each mode in its own process (the arena is per process).
The last line of stdout is one JSON object.

    python bench/tts_memory.py --mode shipped
    python bench/tts_memory.py --mode whole
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import psutil

import voxline.models.tts as tts_module
from voxline.models.tts import PiperEngine
from voxline.models.tts_pieces import MAX_PIECE_WORDS

WORDS = ("the quick brown fox jumps over a lazy dog while seven tired ravens argue about lunch "
         "near the old harbour").split()


async def run(mode: str, replies: int, seed: int) -> dict[str, object]:
    """Start the engine, synthesize the replies, report RSS (MB) at start, over the run, and at the end."""
    if mode == "whole":
        tts_module.bounded_pieces = lambda text: [text]  # type: ignore[assignment,misc]
        PiperEngine._load_warm = PiperEngine._load  # type: ignore[method-assign]
    process = psutil.Process()
    engine = PiperEngine()
    loaded_at = time.perf_counter()
    await engine.start()
    start_s = time.perf_counter() - loaded_at
    rng = random.Random(seed)
    rss_mb: list[int] = [process.memory_info().rss >> 20]
    audio_s = 0.0
    started = time.perf_counter()
    try:
        for _ in range(replies):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))) + "."
            audio = await engine.synthesize_all(text)
            audio_s += len(audio) / engine.sample_rate_hz
            rss_mb.append(process.memory_info().rss >> 20)
    finally:
        await engine.close()
    synth_s = time.perf_counter() - started
    half = len(rss_mb) // 2
    return {
        "bench": "tts_memory", "mode": mode, "max_piece_words": MAX_PIECE_WORDS if mode == "shipped" else None,
        "replies": replies, "seed": seed, "start_s": round(start_s, 1),
        "rss_mb": {"started": rss_mb[0], "half_way": rss_mb[half], "end": rss_mb[-1],
                   "growth_second_half": rss_mb[-1] - rss_mb[half], "every_20": rss_mb[::20]},
        "synthesis_rtf": round(synth_s / audio_s, 4), "audio_s": round(audio_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("shipped", "whole"), default="shipped")
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="(always JSON; kept for the bench convention)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.mode, args.replies, args.seed))))


if __name__ == "__main__":
    main()
