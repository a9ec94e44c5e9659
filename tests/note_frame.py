"""A data frame holding a string, for tests of the runtime (edges, graphs) that need no audio."""

from __future__ import annotations

from dataclasses import dataclass

from voxline.pipeline.frames import Frame


@dataclass(frozen=True, slots=True)
class Note(Frame):
    """A data frame holding ``text``; the runtime treats it like any other data frame."""

    text: str
