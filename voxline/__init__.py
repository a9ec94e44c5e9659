"""voxline: a streaming real-time audio pipeline (live captions, voice agents, voice conversion)."""

__version__ = "0.1.0"
