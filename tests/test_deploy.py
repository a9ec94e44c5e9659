"""deploy/: what the images, compose file and manifests tell voxline is what voxline understands.

No Docker engine or cluster runs here, so these tests read the files as their tools would:
the YAML parses, every command line goes through the CLI's own parser, every ``VOXLINE_*``
variable goes through ``load_config``, the Dockerfiles install extras pyproject.toml has and
copy files the repository has, the Kubernetes objects reference each other, and the compose
file's two nodes, started as plain processes against a real Redis, find each other.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import free_port

from voxline.cli import _parser
from voxline.config import ENV_ALIASES, load_config
from voxline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
DOCKERFILES = sorted(p for p in DEPLOY.glob("Dockerfile.*") if p.suffix != ".dockerignore")
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
SAMPLE_SECRET = "test-secret-" + "0123456789abcdef" * 3
"""What the tests put in ``VOXLINE_SECRET`` (32+ bytes, as PyJWT wants for HS256)."""
NOT_SETTINGS = {"VOXLINE_CONFIG"}
"""``VOXLINE_*`` variables that name a config file, not a setting."""
VOXLINE_IMAGE = re.compile(r"(^|/)voxline(:|$)")


# -- reading the files as their tools do ------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        current = ""
    assert not current, f"{path.name}: ends inside a continued line"
    return found


def dockerfile_env(path: Path) -> dict[str, str]:
    """Every variable the Dockerfile's ``ENV`` lines set (both ``K=V ...`` and ``K V``)."""
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions(path):
        if keyword != "ENV":
            continue
        words = shlex.split(arguments)
        if all("=" in w for w in words):
            env.update(dict(w.split("=", 1) for w in words))
        else:
            env[words[0]] = " ".join(words[1:])
    return env


def image_command(path: Path) -> list[str]:
    """The command a container of this image runs: ENTRYPOINT then CMD, both exec form."""
    command: dict[str, list[str]] = {}
    for keyword, arguments in dockerfile_instructions(path):
        if keyword in ("ENTRYPOINT", "CMD"):
            assert arguments.startswith("["), (
                f"{path.name}: {keyword} in shell form; exec form lets SIGTERM reach voxline so it drains"
            )
            command[keyword] = json.loads(arguments)
    return command.get("ENTRYPOINT", []) + command.get("CMD", [])


_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution over a loaded value: ``$$``, ``$V``, ``${V}``,
    ``${V:-default}``, ``${V-default}``, ``${V:?error}``, ``${V?error}`` (``ValueError``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match[1]:
            return "$"
        name, operator, argument = match[2] or match[5], match[3] or "", match[4] or ""
        current = env.get(name)
        missing = current is None or (operator.startswith(":") and current == "")
        if operator.endswith("?") and missing:
            raise ValueError(f"${{{name}}}: {argument}")
        if operator.endswith("-") and missing:
            return argument
        return current or ""

    return _VARIABLE.sub(one, value)


def compose_file(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as Compose reads it: anchors merged, variables substituted from ``env``."""
    data = yaml.safe_load(COMPOSE.read_text())
    return interpolate(data, {"VOXLINE_SECRET": SAMPLE_SECRET} if env is None else env)  # type: ignore[no-any-return]


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's ``environment`` (mapping or ``K=V`` list) as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def voxline_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run voxline (built from deploy/ or using a voxline image)."""
    return {
        name: service for name, service in compose["services"].items()
        if "build" in service or VOXLINE_IMAGE.search(str(service.get("image", "")))
    }


def k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under deploy/k8s (kustomization.yaml excluded)."""
    return [
        (path, doc) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text()) if doc
    ]


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for _, doc in k8s_objects() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert found, f"deploy/k8s has no {kind}{f' named {name}' if name else ''}"
    return found[0]


def voxline_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """``(workload name, container)`` for every container running a voxline image."""
    for _, doc in k8s_objects():
        spec = doc.get("spec", {}).get("template", {}).get("spec") if doc["kind"] != "Pod" else doc.get("spec")
        for container in (spec or {}).get("containers", []):
            if VOXLINE_IMAGE.search(container.get("image", "")):
                yield doc["metadata"]["name"], container


def voxline_command(argv: list[str], where: str) -> argparse.Namespace:
    """``argv`` parsed by ``voxline``'s own argument parser, or the test fails saying why."""
    assert argv and argv[0] == "voxline", f"{where}: {argv} does not run voxline"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return _parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: voxline rejects {shlex.join(argv)}: {errors.getvalue().strip()}")


def setting_problem(name: str, value: str) -> str | None:
    """Why ``name=value`` is not a voxline setting (``None`` when it is one)."""
    if name in NOT_SETTINGS:
        return None
    if name not in ENV_ALIASES and not re.fullmatch(r"VOXLINE_[A-Z0-9]+__[A-Z0-9_]+", name):
        return f"{name} is neither VOXLINE_<SECTION>__<FIELD> nor one of {sorted(ENV_ALIASES)}: voxline ignores it"
    try:
        load_config(env={name: value})
    except ConfigError as exc:
        return f"{name}={value!r}: {exc}"
    return None


# -- 1. everything parses, every command line is one voxline accepts ----------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert documents and all(isinstance(doc, dict) for doc in documents)


def test_the_images_run_voxline_serve_on_the_port_they_expose() -> None:
    assert DOCKERFILES, "deploy/ has no Dockerfile"
    for dockerfile in DOCKERFILES:
        args = voxline_command(image_command(dockerfile), dockerfile.name)
        assert args.command == "serve", dockerfile.name
        exposed = [a for k, a in dockerfile_instructions(dockerfile) if k == "EXPOSE"]
        assert exposed == [str(args.port or 8000)], dockerfile.name
        assert dockerfile_env(dockerfile).get("VOXLINE_SERVER__HOST") == "0.0.0.0", (
            f"{dockerfile.name}: a plain `docker run` must listen beyond loopback (with a secret)"
        )


def test_the_compose_nodes_run_voxline_serve_on_their_published_port() -> None:
    services = voxline_services(compose_file())
    assert sorted(services) == ["node-a", "node-b"]
    for name, service in services.items():
        args = voxline_command(service["command"], f"compose {name}")
        assert args.command == "serve" and args.host == "0.0.0.0", name
        published = [str(p).rsplit(":", 1) for p in service["ports"]]
        assert [target for _, target in published] == [str(args.port)], f"{name}: ports {service['ports']}"
        assert f"127.0.0.1:{args.port}/healthz" in " ".join(service["healthcheck"]["test"]), name


def test_every_kubernetes_voxline_container_runs_voxline_serve() -> None:
    containers = list(voxline_containers())
    assert containers, "deploy/k8s runs no voxline image"
    for workload, container in containers:
        args = voxline_command(container.get("command", []) + container.get("args", []), f"k8s {workload}")
        assert args.command == "serve" and args.host == "0.0.0.0", workload
        assert args.port in [p["containerPort"] for p in container["ports"]], workload


# -- 2. every VOXLINE_* variable names a real setting ---------------------------------------


def deployment_variables() -> list[tuple[str, str, str]]:
    """``(where, name, value)`` of every ``VOXLINE_*`` variable the deployment files set."""
    found = []
    for dockerfile in DOCKERFILES:
        found += [(dockerfile.name, k, v) for k, v in dockerfile_env(dockerfile).items()]
    for name, service in compose_file()["services"].items():
        found += [(f"compose {name}", k, v) for k, v in environment_of(service).items()]
    for _, doc in k8s_objects():
        if doc["kind"] == "ConfigMap":
            found += [(f"ConfigMap {doc['metadata']['name']}", k, str(v)) for k, v in doc.get("data", {}).items()]
    for workload, container in voxline_containers():
        for item in container.get("env", []):
            value = item.get("value", SAMPLE_SECRET if "secretKeyRef" in item.get("valueFrom", {}) else "sample")
            found.append((f"k8s {workload}", item["name"], str(value)))
    return [(where, k, v) for where, k, v in found if k.startswith("VOXLINE_")]


def test_every_voxline_variable_in_the_deployment_files_names_a_setting() -> None:
    variables = deployment_variables()
    assert len(variables) > 10, variables
    problems = [f"{where}: {problem}" for where, name, value in variables if (problem := setting_problem(name, value))]
    assert not problems, "\n".join(problems)


def test_a_misspelt_variable_would_fail_that_check() -> None:
    assert setting_problem("VOXLINE_BUS__NODE_ID", "node-a") is None
    assert setting_problem("VOXLINE_REDIS_URL", "redis://redis:6379/0") is None
    assert setting_problem("VOXLINE_BUS__NODEID", "node-a")  # unknown setting
    assert setting_problem("VOXLINE_SERVR__PORT", "8000")  # unknown section
    assert setting_problem("VOXLINE_REDIS_URI", "redis://redis:6379/0")  # not an alias: silently ignored
    assert setting_problem("VOXLINE_SERVER__MAX_SESSIONS", "sixteen")  # not an int


def test_the_compose_nodes_refuse_to_start_without_a_secret() -> None:
    """Without VOXLINE_SECRET a node would bind loopback only, unreachable in its container."""
    with pytest.raises(ValueError, match="VOXLINE_SECRET"):
        compose_file(env={})
    for name, service in voxline_services(compose_file()).items():
        assert environment_of(service)["VOXLINE_SECRET"] == SAMPLE_SECRET, name


def test_each_compose_node_has_its_own_id_and_address_in_the_registry() -> None:
    services = voxline_services(compose_file())
    envs = {name: environment_of(service) for name, service in services.items()}
    assert {env["VOXLINE_BUS__NODE_ID"] for env in envs.values()} == set(services)
    assert len({env["VOXLINE_BUS__ADVERTISE_URL"] for env in envs.values()}) == len(services)
    assert {env["VOXLINE_REDIS_URL"] for env in envs.values()} == {"redis://redis:6379/0"}
    remote = {name: environment_of(s) for name, s in voxline_services(compose_file(
        env={"VOXLINE_SECRET": SAMPLE_SECRET, "LLM_BACKEND": "remote"})).items()}
    for env in remote.values():
        assert env["VOXLINE_LLM__BACKEND"] == "remote"
        assert env["VOXLINE_LLM__BASE_URL"].startswith("http://vllm:")
        assert setting_problem("VOXLINE_LLM__BACKEND", env["VOXLINE_LLM__BACKEND"]) is None


def test_vllm_is_optional_and_serves_a_mounted_model_offline() -> None:
    vllm = compose_file()["services"]["vllm"]
    assert vllm["profiles"] == ["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    model = vllm["command"][vllm["command"].index("--model") + 1]
    assert any(str(v).split(":")[1].rstrip("/") == model for v in vllm["volumes"]), vllm["volumes"]
    assert environment_of(vllm)["HF_HUB_OFFLINE"] == "1"
    port = vllm["command"][vllm["command"].index("--port") + 1]
    for name, service in voxline_services(compose_file()).items():
        assert environment_of(service)["VOXLINE_LLM__BASE_URL"] == f"http://vllm:{port}/v1", name


# -- 3. the images install what exists and copy what exists ---------------------------------


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_installs_extras_that_pyproject_defines(dockerfile: Path) -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    runs = " ".join(a for k, a in dockerfile_instructions(dockerfile) if k == "RUN")
    installs = [seg for seg in re.split(r"&&|;", runs) if re.search(r"\bpip\s+install\b", seg)]
    named = [e.strip() for seg in installs for group in re.findall(r"\.\[([^\]]+)\]", seg) for e in group.split(",")]
    assert "webrtc" in named, f"{dockerfile.name} must install '.[webrtc]' (captions, agent and calls)"
    assert set(named) <= extras, f"{dockerfile.name}: unknown extras {set(named) - extras}"
    pinned = {m for seg in installs for m in re.findall(r"\btorch==([\w.+]+)", seg)}
    wanted = {d.split("==")[1] for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch==")}
    assert pinned <= wanted, f"{dockerfile.name} installs torch {pinned}, pyproject pins {wanted}"
    assert dockerfile_env(dockerfile).get("HF_HUB_OFFLINE") == "1", dockerfile.name
    assert "check_models.py" in runs, f"{dockerfile.name}: nothing checks at build time that the models are in"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_copies_only_paths_the_repository_has(dockerfile: Path) -> None:
    ignore = Path(f"{dockerfile}.dockerignore")
    allowed = {line[1:].strip() for line in ignore.read_text().splitlines() if line.startswith("!")}
    copied = []
    for keyword, arguments in dockerfile_instructions(dockerfile):
        assert keyword != "ADD", f"{dockerfile.name}: ADD fetches URLs; use COPY"
        if keyword != "COPY":
            continue
        words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
        if any(w.startswith("--from") for w in words):
            continue  # from an earlier build stage, not the repository
        copied += [w for w in words if not w.startswith("--")][:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such path in the repository"
        assert any(source == a or source.startswith(a + "/") for a in allowed), (
            f"{ignore.name} keeps {source} out of the build context"
        )
    assert {"pyproject.toml", "voxline", "pipeline", "models", "stream", "clients"} <= set(copied)


def test_the_compose_build_uses_the_repository_and_a_dockerfile_that_exists() -> None:
    for name, service in voxline_services(compose_file()).items():
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT, name
        assert (context / service["build"]["dockerfile"]).is_file(), name


def test_the_build_time_model_check_passes_offline_here() -> None:
    """What the images run after installing: every packaged model is found and opens."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "check_models.py")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "whisper tiny.en ok" in result.stdout


# -- 4. Kubernetes: GPUs, probes, and the objects the Deployment refers to -----------------


def _container_port(container: Mapping[str, Any], port: int | str) -> int:
    for item in container["ports"]:
        if port in (item["containerPort"], item.get("name")):
            return int(item["containerPort"])
    raise AssertionError(f"port {port!r} is none of the container's ports {container['ports']}")


def test_the_kubernetes_deployment_takes_a_gpu_and_is_ready_on_healthz() -> None:
    deployment = k8s_object("Deployment", "voxline")
    (container,) = [c for name, c in voxline_containers() if name == "voxline"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert VOXLINE_IMAGE.search(container["image"]) and container["image"].endswith(":cuda")
    probe = container["readinessProbe"]["httpGet"]
    args = voxline_command(container["command"], "k8s voxline")
    assert probe["path"] == "/healthz" and _container_port(container, probe["port"]) == args.port
    for other in ("startupProbe", "livenessProbe"):
        if other in container:
            assert container[other]["httpGet"]["path"] == "/healthz", other
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_kubernetes_service_reaches_the_deployment_port() -> None:
    deployment = k8s_object("Deployment", "voxline")
    service = k8s_object("Service", "voxline")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = [c for name, c in voxline_containers() if name == "voxline"]
    targets = [_container_port(container, p.get("targetPort", p["port"])) for p in service["spec"]["ports"]]
    assert targets == [voxline_command(container["command"], "k8s").port]


def test_the_kubernetes_deployment_reads_its_configmap_and_secret() -> None:
    (container,) = [c for name, c in voxline_containers() if name == "voxline"]
    maps = {ref["configMapRef"]["name"] for ref in container.get("envFrom", []) if "configMapRef" in ref}
    assert k8s_object("ConfigMap")["metadata"]["name"] in maps
    for name in maps:
        assert k8s_object("ConfigMap", name)["data"]["VOXLINE_REDIS_URL"].startswith("redis://")
    env = {item["name"]: item for item in container["env"]}
    secret_ref = env["VOXLINE_SECRET"]["valueFrom"]["secretKeyRef"]
    secret = k8s_object("Secret", secret_ref["name"])
    assert secret_ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}
    # each pod registers under its own name, at its own address
    assert env["VOXLINE_BUS__NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "$(POD_IP)" in env["VOXLINE_BUS__ADVERTISE_URL"]["value"]
    names = list(env)
    assert names.index("POD_IP") < names.index("VOXLINE_BUS__ADVERTISE_URL"), "$(POD_IP) expands only if defined first"


def test_the_kustomization_lists_files_that_exist_and_keeps_the_placeholder_secret_out() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.yaml" not in kustomization["resources"]
    redis_url = k8s_object("ConfigMap")["data"]["VOXLINE_REDIS_URL"]
    assert redis_url.split("//")[1].split(":")[0] == k8s_object("Service", "redis")["metadata"]["name"]


def test_the_udp_and_ice_notes_exist() -> None:
    notes = (K8S / "README.md").read_text()
    for topic in ("UDP", "ICE", "TURN", "hostNetwork"):
        assert topic in notes, topic


# -- 5. the compose nodes as plain processes against a real Redis ---------------------------


def _rewrite_addresses(text: str, addresses: Mapping[str, str]) -> str:
    for old, new in addresses.items():
        text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?!\d)", new, text)
    return text


def _loopback_command(argv: list[str], port: int) -> list[str]:
    """The compose command with only its host and port changed (first word: this venv's voxline)."""
    out = list(argv)
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    script = Path(sys.executable).parent / "voxline"
    return [str(script), *out[1:]] if script.exists() else [sys.executable, "-m", "voxline.cli", *out[1:]]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url}: voxline exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url}/healthz not up after {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_the_compose_nodes_started_as_processes_find_each_other_through_redis(tmp_path: Path) -> None:
    redis_server = shutil.which("redis-server")
    assert redis_server is not None, "these machines have redis-server; .ci/run relies on it"
    compose = compose_file()
    nodes = voxline_services(compose)
    redis_port = free_port()
    addresses = {"redis:6379": f"127.0.0.1:{redis_port}"}
    ports: dict[str, int] = {}
    for name, service in nodes.items():
        ports[name] = free_port()
        inside = voxline_command(service["command"], name).port or 8000
        addresses[f"{name}:{inside}"] = f"127.0.0.1:{ports[name]}"
        for published in service.get("ports", []):
            outside = str(published).rsplit(":", 1)[0].rsplit(":", 1)[-1]
            addresses[f"localhost:{outside}"] = addresses[f"127.0.0.1:{outside}"] = f"127.0.0.1:{ports[name]}"

    processes: list[subprocess.Popen[bytes]] = []
    logs: dict[str, Path] = {}
    try:
        redis_command = [redis_server, *compose["services"]["redis"]["command"][1:],
                         "--port", str(redis_port), "--bind", "127.0.0.1"]
        processes.append(subprocess.Popen(redis_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("VOXLINE_")}
        expected_urls = {}
        for name, service in nodes.items():
            env = {k: _rewrite_addresses(v, addresses) for k, v in environment_of(service).items()}
            env.setdefault("VOXLINE_SERVER__MAX_CALLS", "0")  # the registry is under test, not the agent
            env["HF_HUB_OFFLINE"] = "1"  # as in the images
            expected_urls[env["VOXLINE_BUS__NODE_ID"]] = env["VOXLINE_BUS__ADVERTISE_URL"]
            logs[name] = tmp_path / f"{name}.log"
            with logs[name].open("wb") as log:
                processes.append(subprocess.Popen(
                    _loopback_command(service["command"], ports[name]), env={**base_env, **env}, cwd=tmp_path,
                    stdout=log, stderr=subprocess.STDOUT,
                ))
        assert set(expected_urls.values()) == {f"http://127.0.0.1:{p}" for p in ports.values()}, expected_urls
        for name, process in zip(nodes, processes[1:], strict=True):
            _wait_for_health(f"http://127.0.0.1:{ports[name]}", process, logs[name], timeout_s=180)

        headers = {}
        secret = environment_of(next(iter(nodes.values()))).get("VOXLINE_SECRET", "")
        if secret:
            from voxline.stream.auth import mint_token

            headers["Authorization"] = f"Bearer {mint_token(secret, ['admin'], 60)}"
        for name in nodes:
            url = f"http://127.0.0.1:{ports[name]}/v1/nodes"
            listed: dict[str, str] = {}
            deadline = time.monotonic() + 20  # a few heartbeats
            while time.monotonic() < deadline:
                response = httpx.get(url, headers=headers, timeout=5)
                assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text[:300]}"
                listed = {n["node_id"]: n["url"] for n in response.json()["nodes"]}
                if expected_urls.items() <= listed.items():
                    break
                time.sleep(0.5)
            assert expected_urls.items() <= listed.items(), f"{name} lists {listed}, not {expected_urls}"
    finally:
        for process in reversed(processes):
            _stop(process)
