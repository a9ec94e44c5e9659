"""What the voice changer's and the anonymizer's sessions share: a graph that plays into a ``LiveOutput``.

A transport pushes the caller's frames into ``audio_in``, calls ``pull`` every 20 ms
for what goes back (``output_rate_hz``), forwards ``events``, and hands the client's
messages to ``on_client_event`` (which, unless a session takes some, answers each
with an ``error`` event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..edge import Edge
from ..event_channel import EventChannel, unknown_client_event
from ..graph import Graph
from ..live_output import LiveOutput

FloatAudio = npt.NDArray[np.float32]


@dataclass(slots=True)
class LiveSession:
    """One session's graph, input edge, events and the audio it plays back."""

    graph: Graph
    audio_in: Edge
    events: EventChannel
    output: LiveOutput

    @property
    def output_rate_hz(self) -> int:
        """Sample rate of what ``pull`` returns."""
        return self.output.sample_rate_hz

    def pull(self, n_samples: int) -> FloatAudio:
        """The next ``n_samples`` to play (call at real-time pace)."""
        return self.output.read(n_samples)

    def on_client_event(self, event: dict[str, Any]) -> None:
        """This session takes no client events: each gets an ``error`` event."""
        self.events.publish(unknown_client_event(event, ()))
