"""Prometheus exposition of runtime, session and engine metrics.

A custom collector reads the service's counters at scrape time, so the hot path
never touches prometheus-client. Names start with ``voxline_``; labels are stage,
edge or outcome names, never session ids.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voxline.stream.admission import SessionAdmission
from voxline.stream.webrtc.calls import CallService


class VoxlineCollector(Collector):
    """Turns the caption and call services' counters into Prometheus metric families."""

    def __init__(self, service: SessionAdmission, calls: CallService | None = None) -> None:
        self.service = service
        self.calls = calls

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family (called by prometheus-client on each scrape)."""
        service = self.service
        snap = service.metrics.snapshot()
        frames = CounterMetricFamily("voxline_stage_frames", "Frames processed by stage", labels=["stage"])
        busy = CounterMetricFamily(
            "voxline_stage_busy_seconds", "Time in stage process(), including waits on full downstream edges", labels=["stage"]
        )
        errors = CounterMetricFamily("voxline_stage_errors", "Stage failures", labels=["stage"])
        for name, s in sorted(snap.stages.items()):
            frames.add_metric([name], s.frames)
            busy.add_metric([name], s.busy_s_total)
            errors.add_metric([name], s.errors)
        yield from (frames, busy, errors)
        edge_in = CounterMetricFamily("voxline_edge_frames", "Frames put on edge", labels=["edge"])
        drops = CounterMetricFamily("voxline_edge_drops", "Frames dropped by edge policy", labels=["edge"])
        waits = CounterMetricFamily("voxline_edge_waits", "Producer waits on a full edge", labels=["edge"])
        misses = CounterMetricFamily("voxline_edge_budget_misses", "Frames older than the edge budget", labels=["edge"])
        depth = GaugeMetricFamily("voxline_edge_depth", "Frames queued now, summed over sessions", labels=["edge"])
        max_depth = GaugeMetricFamily("voxline_edge_max_depth", "Deepest an edge got", labels=["edge"])
        for name, e in sorted(snap.edges.items()):
            edge_in.add_metric([name], e.frames_in)
            drops.add_metric([name], e.drops)
            waits.add_metric([name], e.waits)
            misses.add_metric([name], e.budget_misses)
            depth.add_metric([name], snap.edge_depth.get(name, 0))
            max_depth.add_metric([name], e.max_depth)
        yield from (edge_in, drops, waits, misses, depth, max_depth)
        active = GaugeMetricFamily("voxline_sessions_active", "Sessions running now", labels=["kind"])
        active.add_metric(["captions"], service.active_sessions)
        if self.calls is not None:
            active.add_metric(["call"], self.calls.active_calls)
        yield active
        sessions = CounterMetricFamily("voxline_sessions", "Sessions by outcome", labels=["kind", "outcome"])
        c = service.counters
        for outcome, value in (
            ("started", c.started), ("refused", c.refused), ("completed", c.completed),
            ("client_error", c.client_errors), ("failed", c.failed), ("disconnected", c.disconnected),
        ):
            sessions.add_metric(["captions", outcome], value)
        if self.calls is not None:
            k = self.calls.counters
            for outcome, value in (
                ("started", k.started), ("refused", k.refused_busy), ("client_error", k.refused_bad_offer),
                ("completed", k.ended - k.failed), ("failed", k.failed),
            ):
                sessions.add_metric(["call", outcome], value)
        yield sessions
        if self.calls is not None:
            yield from self.calls.latency.families()
        captions = CounterMetricFamily("voxline_captions", "Caption events sent", labels=["kind"])
        captions.add_metric(["partial"], c.partials_sent)
        captions.add_metric(["final"], c.finals_sent)
        yield captions
        engines = service.engines
        stats = getattr(getattr(engines, "recognizer", None), "stats", None)
        if stats is not None:
            for key, value in sorted(vars(stats).items() if hasattr(stats, "__dict__") else _slots(stats)):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    family = CounterMetricFamily(f"voxline_asr_{key}", f"ASR engine {key}", labels=["kind"])
                    family.add_metric(["whisper"], value)
                    yield family


def _slots(obj: object) -> list[tuple[str, object]]:
    return [(name, getattr(obj, name)) for name in getattr(obj, "__slots__", ())]


def metrics_registry(service: SessionAdmission, calls: CallService | None = None) -> CollectorRegistry:
    """A registry holding only voxline's collector for ``service`` (and ``calls``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VoxlineCollector(service, calls))
    ProcessCollector(registry=registry)
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
