"""Per-turn latency histograms on /metrics: right buckets, right sums, no session labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from voxline.stream.turn_metrics import TurnLatencyHistograms


class _Only(Collector):
    def __init__(self, histograms: TurnLatencyHistograms) -> None:
        self.histograms = histograms

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.histograms.families()


def render(histograms: TurnLatencyHistograms) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Only(histograms))
    return generate_latest(registry).decode()


def test_turns_land_in_cumulative_buckets_by_span() -> None:
    histograms = TurnLatencyHistograms()
    for v2v, llm in ((450.0, 40.0), (700.0, 90.0), (3000.0, 2000.0)):
        histograms.observe({"type": "turn_latency", "v2v_ms": v2v, "breakdown_ms": {"llm_first_token": llm}})
    histograms.observe({"type": "agent_done", "v2v_ms": 1.0})  # not a latency event
    histograms.observe({"type": "turn_latency", "v2v_ms": None, "breakdown_ms": {}})  # a turn with no audio
    text = render(histograms)
    assert 'voxline_turn_latency_seconds_bucket{le="0.5",span="v2v",transport="webrtc"} 1.0' in text
    assert 'voxline_turn_latency_seconds_bucket{le="0.75",span="v2v",transport="webrtc"} 2.0' in text
    assert 'voxline_turn_latency_seconds_bucket{le="+Inf",span="v2v",transport="webrtc"} 3.0' in text
    assert 'voxline_turn_latency_seconds_count{span="llm_first_token",transport="webrtc"} 3.0' in text
    assert 'voxline_turn_latency_seconds_bucket{le="0.05",span="llm_first_token",transport="webrtc"} 1.0' in text
    assert 'voxline_turn_latency_seconds_sum{span="v2v",transport="webrtc"} 4.15' in text
    assert histograms.count("v2v") == 3 and histograms.count("endpoint") == 0
    histograms.observe({"type": "turn_latency", "v2v_ms": 300.0, "breakdown_ms": {}}, transport="realtime")
    text = render(histograms)
    assert 'voxline_turn_latency_seconds_count{span="v2v",transport="realtime"} 1.0' in text
    assert 'voxline_turn_latency_seconds_count{span="v2v",transport="webrtc"} 3.0' in text
    assert "session" not in text
