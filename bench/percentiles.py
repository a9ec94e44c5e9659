"""The p50 / p95 summary the agent benchmarks print (nearest-rank p95, median p50)."""

from __future__ import annotations

import statistics


def p50_p95(values: list[float]) -> dict[str, float | None]:
    """``{"p50", "p95"}`` of ``values`` in their unit, to 0.1 (both None when empty)."""
    if not values:
        return {"p50": None, "p95": None}
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
    }
