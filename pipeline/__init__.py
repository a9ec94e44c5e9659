"""voxline's streaming runtime: frames, stages, bounded edges and graphs (a public API)."""

from .edge import Edge, EdgeStats, FullPolicy
from .frames import (
    AudioFrame,
    ControlFrame,
    ControlKind,
    ErrorFrame,
    Frame,
    TranscriptFrame,
    Word,
)
from .graph import Graph
from .stage import Stage, StageStats

__all__ = [
    "AudioFrame",
    "ControlFrame",
    "ControlKind",
    "Edge",
    "EdgeStats",
    "ErrorFrame",
    "Frame",
    "FullPolicy",
    "Graph",
    "Stage",
    "StageStats",
    "TranscriptFrame",
    "Word",
]
