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


def _imports_of(folder: str) -> set[tuple[str, str]]:
    """(file, imported voxline module) for every absolute voxline import under ``folder``."""
    import ast

    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module))
            elif isinstance(node, ast.Import):
                found.update((str(path.relative_to(ROOT)), alias.name) for alias in node.names)
    return {(f, m) for f, m in found if m.startswith("voxline")}


def test_dependency_direction_holds() -> None:
    """models/ knows no pipeline or transport; pipeline/ knows no transport and, outside
    its recipes, no concrete model; nothing imports clients/ but the CLI."""
    wrong = {(f, m) for f, m in _imports_of("models") if m.startswith(("voxline.pipeline", "voxline.stream"))}
    wrong |= {
        (f, m) for f, m in _imports_of("pipeline")
        if m.startswith("voxline.stream") or (m.startswith("voxline.models") and "/recipes/" not in f)
    }
    for folder in ("pipeline", "models", "stream", "voxline"):
        wrong |= {
            (f, m) for f, m in _imports_of(folder)
            if m.startswith("voxline.clients") and not f.endswith("cli.py")
        }
    assert not wrong, sorted(wrong)
