"""Reading audio files of any common format, rate and channel count.

WAV, FLAC and OGG are read with libsndfile (``soundfile``); anything else (MP3, M4A,
Opus, ...) with FFmpeg's decoders (``av``). Channels are averaged to mono; the rate
is kept (the pipeline resamples).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxline.errors import VoxlineError


class AudioFileError(VoxlineError):
    """The file does not exist or holds no audio voxline can decode."""


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at ``sample_rate_hz``."""

    samples: npt.NDArray[np.float32]
    sample_rate_hz: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate_hz


def _read_soundfile(path: Path) -> DecodedAudio:
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return DecodedAudio(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(rate))


def _read_av(path: Path) -> DecodedAudio:
    import av

    chunks: list[np.ndarray] = []
    rate = 0
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioFileError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono")
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                rate = out.sample_rate
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks or rate == 0:
        raise AudioFileError(f"{path} decoded to no audio")
    return DecodedAudio(np.concatenate(chunks).astype(np.float32), rate)


def read_audio(path: str | Path) -> DecodedAudio:
    """Decode ``path`` to mono float32 at its own rate; raises ``AudioFileError``."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"no such file: {path}")
    try:
        if path.suffix.lower() in {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"}:
            try:
                return _read_soundfile(path)
            except RuntimeError:
                pass  # e.g. Opus-in-OGG that this libsndfile lacks: let FFmpeg try
        return _read_av(path)
    except AudioFileError:
        raise
    except Exception as exc:
        raise AudioFileError(f"cannot decode {path}: {exc}") from exc
