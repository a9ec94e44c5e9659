"""Where CTranslate2 models run: device choice and the compute type that suits it.

CUDA is chosen whenever CTranslate2 sees a GPU, so the same code runs unchanged on
a CPU-only machine and on one with an accelerator.
"""

from __future__ import annotations

from voxline.errors import ConfigError

__all__ = ["DEVICES", "choose_device", "default_compute_type"]

DEVICES = ("auto", "cpu", "cuda")
"""Accepted device preferences."""

_DEFAULT_COMPUTE_TYPE = {"cpu": "int8", "cuda": "float16"}


def _cuda_device_count() -> int:
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except RuntimeError:  # a CUDA build without a usable driver
        return 0


def choose_device(preference: str = "auto") -> str:
    """Resolve a device preference into ``"cuda"`` or ``"cpu"``.

    ``"auto"`` gives ``"cuda"`` when CTranslate2 reports at least one CUDA device, else
    ``"cpu"``. ``"cpu"`` is always honoured. ``"cuda"`` without a GPU raises.

    Raises:
        ConfigError: the preference is unknown, or ``"cuda"`` was asked for and no
            CUDA device is visible.
    """
    pref = preference.strip().lower()
    if pref not in DEVICES:
        raise ConfigError(f"unknown device {preference!r}; expected one of {', '.join(DEVICES)}")
    if pref == "cpu":
        return "cpu"
    has_cuda = _cuda_device_count() > 0
    if pref == "cuda" and not has_cuda:
        raise ConfigError("device 'cuda' was asked for but CTranslate2 sees no CUDA device")
    return "cuda" if has_cuda else "cpu"


def default_compute_type(device: str) -> str:
    """CTranslate2 compute type for a resolved device: ``"int8"`` on cpu, ``"float16"`` on cuda."""
    try:
        return _DEFAULT_COMPUTE_TYPE[device]
    except KeyError:
        raise ConfigError(f"no default compute type for device {device!r}") from None
