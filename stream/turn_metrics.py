"""Per-turn latency of voice sessions as Prometheus histograms, by transport (no session labels).

``TurnLatencyHistograms.observe`` takes each ``turn_latency`` event a session's agent
makes, with its transport (``webrtc`` for calls, ``realtime`` for the Realtime
socket, ``twilio`` / ``telnyx`` for phone calls); ``families`` renders cumulative histograms, one series per transport and
span: ``v2v`` (end
of the user's speech to the reply's first audio out) and each stage's share of it
(``asr_final``, ``endpoint``, ``llm_first_token``, ``tts_first_audio``, ``audio_out``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import HistogramMetricFamily

from voxline.pipeline.agent.turn_latency import MARKS

BUCKETS_S = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.2, 1.6, 2.5, 5.0)
SPANS = ("v2v", *MARKS[1:])


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS_S)
        self.total = 0
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS_S, seconds)
        if index < len(BUCKETS_S):
            self.counts[index] += 1
        self.total += 1
        self.sum_s += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip(BUCKETS_S, self.counts, strict=True):
            cumulative += count
            out.append((repr(bound), float(cumulative)))
        out.append(("+Inf", float(self.total)))
        return out


TRANSPORTS = ("webrtc", "realtime", "twilio", "telnyx")


class TurnLatencyHistograms:
    """Histograms of every session's turn latencies, by transport and span, summed over sessions."""

    def __init__(self) -> None:
        self._spans = {(transport, span): _Histogram() for transport in TRANSPORTS for span in SPANS}

    def observe(self, event: Mapping[str, Any], transport: str = "webrtc") -> None:
        """Count one ``turn_latency`` event (other events, and missing spans, are ignored)."""
        if event.get("type") != "turn_latency":
            return
        v2v = event.get("v2v_ms")
        if isinstance(v2v, int | float):
            self._spans[transport, "v2v"].observe(v2v / 1000)
        for span, ms in (event.get("breakdown_ms") or {}).items():
            if (transport, span) in self._spans and isinstance(ms, int | float):
                self._spans[transport, span].observe(ms / 1000)

    def count(self, span: str = "v2v", transport: str = "webrtc") -> int:
        """Turns observed for ``span`` over ``transport``."""
        return self._spans[transport, span].total

    def families(self) -> Iterator[HistogramMetricFamily]:
        """The ``voxline_turn_latency_seconds`` histogram family."""
        family = HistogramMetricFamily(
            "voxline_turn_latency_seconds",
            "Voice turn latency: v2v (user speech end to first reply audio) and each stage's share, by transport",
            labels=["transport", "span"],
        )
        for (transport, span), histogram in self._spans.items():
            family.add_metric([transport, span], histogram.buckets(), histogram.sum_s)
        yield family
