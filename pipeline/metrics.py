"""Runtime metrics: per-stage and per-edge counters summed over a process's graphs.

Stages and edges count into plain slotted fields on the hot path (no locks, no
label look-ups). ``RuntimeMetrics`` adds them up only when asked (a /metrics
scrape): over the graphs still running plus the totals of graphs already retired.
Keys are stage and edge names, never session ids, so label cardinality stays fixed.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from .edge import EdgeStats
from .graph import Graph
from .stage import StageStats


@dataclass(slots=True)
class RuntimeSnapshot:
    """Summed counters by stage name and by edge name, plus current edge depths."""

    stages: dict[str, StageStats]
    edges: dict[str, EdgeStats]
    edge_depth: dict[str, int]


def _add(into: object, other: object) -> None:
    for f in dataclasses.fields(other):  # type: ignore[arg-type]
        value = getattr(other, f.name)
        if f.name.endswith("_max") or f.name == "max_depth":
            setattr(into, f.name, max(getattr(into, f.name), value))
        else:
            setattr(into, f.name, getattr(into, f.name) + value)


class RuntimeMetrics:
    """Tracks live graphs and folds finished ones into running totals."""

    def __init__(self) -> None:
        self._live: set[Graph] = set()
        self._stage_totals: dict[str, StageStats] = defaultdict(StageStats)
        self._edge_totals: dict[str, EdgeStats] = defaultdict(EdgeStats)

    def track(self, graph: Graph) -> None:
        """Start counting ``graph`` (call when it starts)."""
        self._live.add(graph)

    def retire(self, graph: Graph) -> None:
        """Fold ``graph``'s counters into the totals and stop tracking it. Idempotent."""
        if graph not in self._live:
            return
        self._live.discard(graph)
        for stage in graph.stages:
            _add(self._stage_totals[stage.name], stage.stats)
        for edge in graph.edges:
            _add(self._edge_totals[edge.name], edge.stats)

    @property
    def live_graphs(self) -> int:
        """How many tracked graphs are running."""
        return len(self._live)

    def snapshot(self) -> RuntimeSnapshot:
        """Sum of retired totals and live counters, by stage and by edge name."""
        stages = {name: dataclasses.replace(s) for name, s in self._stage_totals.items()}
        edges = {name: dataclasses.replace(e) for name, e in self._edge_totals.items()}
        depth: dict[str, int] = defaultdict(int)
        for graph in self._live:
            for stage in graph.stages:
                _add(stages.setdefault(stage.name, StageStats()), stage.stats)
            for edge in graph.edges:
                _add(edges.setdefault(edge.name, EdgeStats()), edge.stats)
                depth[edge.name] += len(edge)
        for name in edges:
            depth.setdefault(name, 0)
        return RuntimeSnapshot(stages=stages, edges=edges, edge_depth=dict(depth))
