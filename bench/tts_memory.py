"""Piper's resident memory under replies of every length: the engine as shipped, with an arena, whole sentences.

This starts a ``PiperEngine`` (its default workers, sharing one voice), synthesizes
``--replies`` seeded random replies of 3-60 words (one sentence each, no pause marks:
the worst case for cutting), and samples the process's RSS, with glibc set up as the
server sets it (``server.malloc_arenas`` arenas, free pages handed back every
``server.memory_trim_s``). ``--mode shipped`` is the engine as it is (no onnxruntime
memory arena, pieces of at most ``MAX_PIECE_WORDS`` words); ``--mode arena`` turns the
voice's CPU arena on (the engine of 2026-12-04: its memory is sized by the warm-up
piece and kept); ``--mode whole`` also hands Piper each reply whole and skips the
warm-up (the engine before that). Run each mode in its own process. The last line of
stdout is one JSON object.

    python bench/tts_memory.py --mode shipped
    python bench/tts_memory.py --mode arena
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
from voxline.allocator import limit_arenas, release_free_memory
from voxline.config import Config
from voxline.models.tts import PiperEngine
from voxline.models.tts_pieces import MAX_PIECE_WORDS

WORDS = ("the quick brown fox jumps over a lazy dog while seven tired ravens argue about lunch "
         "near the old harbour").split()


async def run(mode: str, replies: int, seed: int) -> dict[str, object]:
    """Start the engine, synthesize the replies, report RSS (MB) at start, over the run, and at the end."""
    if mode == "whole":
        tts_module.bounded_pieces = lambda text: [text]  # type: ignore[assignment,misc]
        PiperEngine._load_warm = PiperEngine._load  # type: ignore[method-assign]
    server = Config().server
    limit_arenas(server.malloc_arenas)
    process = psutil.Process()
    engine = PiperEngine(memory_arena=mode != "shipped")
    loaded_at = time.perf_counter()
    await engine.start()
    start_s = time.perf_counter() - loaded_at
    rng = random.Random(seed)
    rss_mb: list[int] = [process.memory_info().rss >> 20]
    audio_s = 0.0
    started = trimmed = time.perf_counter()
    try:
        for _ in range(replies):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))) + "."
            audio = await engine.synthesize_all(text)
            audio_s += len(audio) / engine.sample_rate_hz
            if time.perf_counter() - trimmed >= server.memory_trim_s:
                release_free_memory()  # what the server's trimmer does on its timer
                trimmed = time.perf_counter()
            rss_mb.append(process.memory_info().rss >> 20)
    finally:
        await engine.close()
    synth_s = time.perf_counter() - started
    half = len(rss_mb) // 2
    return {
        "bench": "tts_memory", "mode": mode, "max_piece_words": MAX_PIECE_WORDS if mode != "whole" else None,
        "replies": replies, "seed": seed, "start_s": round(start_s, 1),
        "rss_mb": {"started": rss_mb[0], "half_way": rss_mb[half], "end": rss_mb[-1],
                   "growth_second_half": rss_mb[-1] - rss_mb[half], "every_20": rss_mb[::20]},
        "synthesis_rtf": round(synth_s / audio_s, 4), "audio_s": round(audio_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("shipped", "arena", "whole"), default="shipped")
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="(always JSON; kept for the bench convention)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.mode, args.replies, args.seed))))


if __name__ == "__main__":
    main()
