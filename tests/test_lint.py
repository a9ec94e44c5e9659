"""Tools hold the line: ruff (incl. ASYNC, B, RUF) and mypy on the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["voxline", "pipeline", "models", "stream", "clients", "testing"]


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


def test_library_never_imports_the_testing_scaffolding() -> None:
    """Scripted speech (``testing/``) is for tests, benches and the demo's question: the
    library, the CLI and the clients other than the demo never import it."""
    wrong = {
        (f, m) for folder in ("pipeline", "models", "stream", "voxline", "clients") for f, m in _imports_of(folder)
        if m.startswith("voxline.testing") and f != "clients/agent_demo.py"
    }
    assert not wrong, sorted(wrong)


STREAM_LAYERS = {
    # the core every transport uses
    "auth": 0, "admission": 0, "bounded_socket": 0, "stalled_peers": 0, "turn_metrics": 0, "g711": 0,
    "sessions": 1,  # a session's log, the node's bus, Redis, viewers, subtitles
    "captions": 2,
    "webrtc": 3,  # calls: the agent's engines and call places, which Realtime and phones share
    "realtime": 4,
    "telephony": 5,
    "app": 6, "metrics_http": 6,
    "launch": 7,  # serve, the front, placement, the worker intake
}
"""stream/'s layers, bottom up: a module imports only its own layer and those below."""


def _stream_module_graph() -> dict[str, set[str]]:
    """Module → the stream modules it imports, function-level and relative imports included."""
    import ast

    folder = ROOT / "stream"
    modules = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).with_suffix("").parts
        name = ".".join(("voxline", "stream", *parts))
        modules[name.removesuffix(".__init__")] = (path, parts[-1] == "__init__")
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                targets.update(found or ([base] if base in modules else []))
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name in modules)
        graph[name] = {t for t in targets if t != name and t != "voxline.stream"}
    return graph


def test_stream_imports_have_no_cycle() -> None:
    """No import circle among stream/'s modules, counting imports made inside functions."""
    graph = _stream_module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_stream_imports_point_down_its_layers() -> None:
    """A stream module imports only modules of its own layer or below (``STREAM_LAYERS``)."""
    def layer(module: str) -> int:
        return STREAM_LAYERS[module.split(".")[2]]

    graph = _stream_module_graph()
    unknown = sorted({m.split(".")[2] for m in graph if len(m.split(".")) > 2} - set(STREAM_LAYERS))
    assert not unknown, f"give these a layer in STREAM_LAYERS: {unknown}"
    upward = sorted((m, t) for m, targets in graph.items() if len(m.split(".")) > 2 for t in targets if layer(t) > layer(m))
    assert not upward, upward
