"""Tools hold the line: ruff (incl. ASYNC, B, RUF) and mypy on the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["voxline", "pipeline", "models", "stream", "clients"]


def test_ruff_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *PACKAGES, "bench", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def shadow_package(tmp_path: Path) -> Path:
    """The installed layout (voxline/pipeline, voxline/models, ...) as symlinks, for mypy.

    pyproject maps top-level folders into the voxline namespace; mypy only follows
    folders, so it gets a tree shaped like the installed package.
    """
    root = tmp_path / "src" / "voxline"
    root.mkdir(parents=True)
    for item in (ROOT / "voxline").iterdir():
        if item.suffix == ".py":
            (root / item.name).symlink_to(item)
    for package in PACKAGES[1:]:
        (root / package).symlink_to(ROOT / package, target_is_directory=True)
    return root.parent


def test_mypy_finds_nothing(tmp_path: Path) -> None:
    src = shadow_package(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"), "-p", "voxline"],
        cwd=src, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
