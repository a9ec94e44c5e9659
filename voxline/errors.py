"""voxline's exception tree.

::

    VoxlineError                      root: catch this to catch everything voxline raises
    ├── ConfigError                   a setting is missing, malformed or out of range
    ├── ModelNotFoundError            (models.registry) weights are not installed
    ├── EngineError                   a model engine failed or was closed
    │   └── Superseded                a newer partial of the same session replaced a request
    ├── PipelineError                 the runtime itself
    │   ├── StageFailed               a stage raised; carries the stage name, chains the cause
    │   └── GraphClosed               frames were pushed into a graph that has stopped
    └── ProtocolError                 a client broke a wire protocol; carries what it is told
        └── (code, message, close_code)

Foreign exceptions are mapped onto this tree at the boundary with ``raise ... from``.
"""

from __future__ import annotations


class VoxlineError(Exception):
    """Root of voxline's exceptions."""


class ConfigError(VoxlineError):
    """A setting is missing, malformed or out of range."""


class EngineError(VoxlineError):
    """A model engine failed, or was used after it was closed."""


class PipelineError(VoxlineError):
    """The pipeline runtime could not do what was asked."""


class StageFailed(PipelineError):
    """A stage raised while processing a frame; ``stage`` names it, ``__cause__`` is the error."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"stage {stage!r} failed: {message}")
        self.stage = stage


class GraphClosed(PipelineError):
    """A frame was pushed into a graph that is no longer accepting input."""


class ProtocolError(VoxlineError):
    """A client broke a wire protocol.

    ``code`` is the machine-readable error code sent in the error event, ``message`` the
    human-readable text, ``close_code`` the WebSocket close code (4xxx) that follows.
    """

    def __init__(self, code: str, message: str, close_code: int = 4400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


class Superseded(EngineError):
    """A queued partial request was replaced by a newer one from the same session."""
