"""The process-wide state behind the server: shared engines, admission, runtime metrics.

One ``CaptionService`` per process. Sessions ask ``admit()`` before building a graph
and ``release()`` when done; past ``max_sessions`` new sessions are refused with a
clear error instead of every session degrading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from voxline.config import Config
from voxline.pipeline.metrics import RuntimeMetrics
from voxline.pipeline.recipes.captioner import CaptionEngines


@dataclass(slots=True)
class SessionCounters:
    """Sessions by outcome since the process started."""

    started: int = 0
    refused: int = 0
    completed: int = 0
    client_errors: int = 0
    failed: int = 0
    disconnected: int = 0
    finals_sent: int = 0
    partials_sent: int = 0
    final_decode_s: list[float] = field(default_factory=list)


class CaptionService:
    """Shared engines and limits for every caption session of this process."""

    def __init__(self, config: Config, engines: CaptionEngines | None = None) -> None:
        self.config = config
        self.engines = engines
        self._owns_engines = engines is None
        self.metrics = RuntimeMetrics()
        self.counters = SessionCounters()
        self.active_sessions = 0
        self.started_at = time.monotonic()

    async def start(self) -> None:
        """Load the engines if none were given."""
        if self.engines is None:
            self.engines = await CaptionEngines.load(self.config.asr, self.config.vad)

    async def close(self) -> None:
        """Release engines this service loaded. Idempotent."""
        if self.engines is not None and self._owns_engines:
            await self.engines.close()

    def admit(self) -> bool:
        """Reserve a session slot; False when the server is at ``max_sessions``."""
        if self.active_sessions >= self.config.server.max_sessions:
            self.counters.refused += 1
            return False
        self.active_sessions += 1
        self.counters.started += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by ``admit``."""
        self.active_sessions -= 1
