"""Smart Turn v3.2 cost: milliseconds per call on one thread, for a full 8 s window.

The input is 8 s of Piper speech (the model always sees 8 s, so shorter audio costs
the same). Each round times ``log_mel`` (the features alone) and ``probability``
(features + model) on the same audio; the feature share is the ratio of their
medians. BLAS is held to one thread so the figure is one core's. The last line of
stdout is one JSON object.

    python bench/turn_model.py [--calls 50] [--warmup 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from voxline.models.turn_model import SmartTurnModel  # noqa: E402
from voxline.testing.speech_synth import synthesize  # noqa: E402

TEXT = (
    "We will meet at the train station at half past nine. "
    "I would like a cup of coffee with milk, please. "
    "Could you tell me what the weather will be like tomorrow?"
)


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p90": round(_p90(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    model = SmartTurnModel.shared()
    speech = synthesize(TEXT, SmartTurnModel.SAMPLE_RATE_HZ)
    reps = -(-SmartTurnModel.WINDOW_SAMPLES // len(speech))
    audio = np.tile(speech, reps)[-SmartTurnModel.WINDOW_SAMPLES :]

    for _ in range(args.warmup):
        model.probability(audio)
    features_ms: list[float] = []
    total_ms: list[float] = []
    cpu_ms: list[float] = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        model.log_mel(audio)
        t1 = time.perf_counter()
        c1 = time.process_time()
        model.probability(audio)
        t2 = time.perf_counter()
        cpu_ms.append((time.process_time() - c1) * 1e3)
        features_ms.append((t1 - t0) * 1e3)
        total_ms.append((t2 - t1) * 1e3)

    result = {
        "bench": "turn_model",
        "model": "smart-turn-v3.2-cpu",
        "input_s": SmartTurnModel.WINDOW_S,
        "calls": args.calls,
        "ms_per_call": _summary(total_ms),
        "features_ms": _summary(features_ms),
        "features_share": round(statistics.median(features_ms) / statistics.median(total_ms), 3),
        "cpu_ms_per_call_p50": round(statistics.median(cpu_ms), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
