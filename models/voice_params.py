"""What the voice changer does to a voice: its parameters, their ranges and the named presets.

Kept apart from the converter (which needs torch) so that the CLI, the server's
``/v1/vc/voices`` and an offer's check read them without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voxline.errors import ConfigError

__all__ = ["FORMANT_RANGE", "MONOTONE_RANGE_HZ", "PRESETS", "SEMITONES_RANGE", "VoiceParams"]

SEMITONES_RANGE = (-12.0, 12.0)
FORMANT_RANGE = (0.7, 1.4)
MONOTONE_RANGE_HZ = (60.0, 400.0)


@dataclass(frozen=True, slots=True)
class VoiceParams:
    """What to do to a voice: ``semitones`` of pitch, a ``formant`` factor, or a fixed pitch.

    ``formant`` above 1 moves the formants up (a smaller-sounding speaker), below 1 down.
    ``monotone_hz``, when set, replaces the speaker's melody by one pitch (the robot).
    """

    semitones: float = 0.0
    formant: float = 1.0
    monotone_hz: float | None = None

    def __post_init__(self) -> None:
        _check_range("semitones", self.semitones, SEMITONES_RANGE)
        _check_range("formant", self.formant, FORMANT_RANGE)
        if self.monotone_hz is not None:
            _check_range("monotone_hz", self.monotone_hz, MONOTONE_RANGE_HZ)

    @property
    def pitch_ratio(self) -> float:
        """The factor F0 is multiplied by (2 ** (semitones / 12))."""
        return float(2.0 ** (self.semitones / 12.0))

    @classmethod
    def from_options(cls, options: Mapping[str, Any], base: VoiceParams | None = None) -> VoiceParams:
        """Parameters from a client's options: ``preset`` first, then ``semitones``/``formant``/``monotone_hz``.

        Keys not given keep ``base``'s values (default: the neutral voice).

        Raises:
            ConfigError: an unknown key or preset, a value that is not a number, or one
                out of its range; the message names it.
        """
        unknown = sorted(set(options) - {"preset", "semitones", "formant", "monotone_hz"})
        if unknown:
            raise ConfigError(f"unknown voice option(s) {unknown}; known: preset, semitones, formant, monotone_hz")
        params = base or cls()
        preset = options.get("preset")
        if preset is not None:
            if not isinstance(preset, str) or preset not in PRESETS:
                raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
            params = PRESETS[preset]
        values: dict[str, float | None] = {
            "semitones": params.semitones, "formant": params.formant, "monotone_hz": params.monotone_hz,
        }
        for key in ("semitones", "formant", "monotone_hz"):
            if key not in options:
                continue
            value = options[key]
            if value is None and key == "monotone_hz":
                values[key] = None
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{key} must be a number, not {value!r}")
            else:
                values[key] = float(value)
        monotone = values["monotone_hz"]
        return cls(float(values["semitones"] or 0.0), float(values["formant"] or 1.0), monotone)

    def as_dict(self) -> dict[str, float | None]:
        """The parameters as JSON-ready values."""
        return {"semitones": self.semitones, "formant": self.formant, "monotone_hz": self.monotone_hz}


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, not {value:g}")


PRESETS: dict[str, VoiceParams] = {
    "natural": VoiceParams(),
    "deeper": VoiceParams(semitones=-4.0, formant=0.88),
    "brighter": VoiceParams(semitones=4.0, formant=1.12),
    "giant": VoiceParams(semitones=-8.0, formant=0.78),
    "chipmunk": VoiceParams(semitones=8.0, formant=1.25),
    "robot": VoiceParams(monotone_hz=110.0),
}
"""Named voices; a client may start from one and change single values."""
