"""Build, run and inspect the workshop's images through the ``docker`` command line.

Notebook 03 and ``tests/test_image.py`` call this module: build the ``wine`` target, run it on
127.0.0.1, smoke-test it, show its size and user, remove it. Docker is driven as a subprocess, exactly
the commands a learner would type, so there is no Docker SDK dependency and nothing here that a learner
cannot reproduce in a terminal.

The Dockerfile uses BuildKit features (``RUN --mount`` for the pip cache and the CA bundle secret).
Docker CLIs from 23.0 on build with BuildKit only through the ``buildx`` plugin; older CLIs (Debian
bookworm's ``docker.io`` 20.10, for instance) embed a BuildKit client. :func:`docker_cli` therefore
picks a ``docker`` that can build with BuildKit when several are installed.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import httpx

from workshop.waiting import WaitTimeout, wait_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STARTUP_TIMEOUT_S = 120.0  # how long a started container may take to answer /health at all
ENGINE_HINT = (
    "start one with: sudo scripts/docker-engine.sh start (Debian/Ubuntu; installs docker.io), "
    "or start Docker Desktop / the docker service"
)
INSTALL_HINT = (
    "install Docker (https://docs.docker.com/get-docker/), or on Debian/Ubuntu: sudo scripts/docker-engine.sh start"
)
# ``docker run`` flags for the securityContext of k8s/base/wine-deployment.yaml: a read-only root filesystem with
# a writable /tmp (a tmpfs inside the container, not a path on this machine), no capabilities, no escalation.
HARDENED_RUN_FLAGS = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]  # noqa: S108
# Proxy settings Docker passes to RUN steps as predefined build arguments, kept out of the image history.
PROXY_BUILD_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
SINGLE_STAGE_DOCKERFILE = "Dockerfile.single-stage"  # notebook 03 builds it, for comparison only
# The llm build's wheelhouse (the Dockerfile's stage ``wheelhouse``): torch's CPU wheel, filled by fill_wheelhouse.
WHEELHOUSE_DIR = PROJECT_ROOT / "build" / "wheelhouse"
WHEELHOUSE_STAGE = "wheelhouse"
WHEELHOUSE_REPOSITORY = "ml-serving-workshop/wheelhouse"  # the image of wheels, for BuildKits without named contexts
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INDEX_TIMEOUT_S = 15  # pip's socket timeout for PyTorch's index: where it does not answer, the default index is next
# torch's CPU wheel for Linux weighs ~200 MB; PyPI's CUDA one ~900 MB (and pulls GBs of nvidia-* wheels).
MAX_CPU_TORCH_WHEEL_BYTES = 500_000_000
NAMED_CONTEXTS_SINCE = (23, 0)  # Docker 23 ships BuildKit 0.11, whose built-in Dockerfile frontend takes them


class ContainerError(RuntimeError):
    """A docker command failed; the message carries the command's output and what to do about it."""


class EngineUnavailable(ContainerError):
    """No Docker engine answers (or no client can build): the message says what to install or start."""


# ----------------------------------------------------------------------------------------------- the client


def _cli_version(binary: str) -> tuple[int, ...] | None:
    try:
        result = subprocess.run(
            [binary, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"(\d+)\.(\d+)", result.stdout.strip())
    return (int(match[1]), int(match[2])) if match else None


def _builds_with_buildkit(binary: str) -> bool:
    """A CLI before 23.0 embeds BuildKit (with DOCKER_BUILDKIT=1); a newer one needs the buildx plugin."""
    version = _cli_version(binary)
    if version is not None and version < (23, 0):
        return True
    try:
        return subprocess.run([binary, "buildx", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _candidates() -> list[str]:
    found: list[str] = []
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        path = os.path.join(folder, "docker")
        if folder and os.access(path, os.X_OK) and os.path.realpath(path) not in map(os.path.realpath, found):
            found.append(path)
    return found


@cache
def docker_cli() -> tuple[str | None, bool]:
    """The ``docker`` binary to use and whether it can build with BuildKit.

    ``WORKSHOP_DOCKER`` names one explicitly. Otherwise the first ``docker`` on PATH that can build with
    BuildKit wins, then the first one at all (it can still run containers).
    """
    explicit = os.environ.get("WORKSHOP_DOCKER")
    if explicit:
        return explicit, _builds_with_buildkit(explicit)
    candidates = _candidates()
    for binary in candidates:
        if _builds_with_buildkit(binary):
            return binary, True
    return (candidates[0] if candidates else None), False


def _run(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    binary, _ = docker_cli()
    if binary is None:
        raise EngineUnavailable(f"no docker command found: {INSTALL_HINT}")
    try:
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},  # read by CLIs that embed BuildKit, harmless for others
        )
    except subprocess.TimeoutExpired as error:
        raise ContainerError(f"`docker {' '.join(args)}` did not finish within {timeout:.0f}s") from error
    except OSError as error:
        raise EngineUnavailable(f"cannot run {binary} ({error.strerror}): {INSTALL_HINT}") from error


def docker(*args: str, timeout: float = 120) -> str:
    """Run ``docker ARGS`` and return its stdout; a failure raises :class:`ContainerError` with its stderr."""
    result = _run(args, timeout)
    if result.returncode != 0:
        raise ContainerError(f"`docker {' '.join(args)}` failed (exit {result.returncode}): {result.stderr.strip()}")
    return result.stdout


# ----------------------------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class Engine:
    """Whether images can be built and run here; ``reason`` says why not, or which engine answers."""

    available: bool
    reason: str
    cli: str | None = None

    def __bool__(self) -> bool:
        return self.available


def engine_available() -> Engine:
    """Ask the engine for its version (like ``docker info``) and check that the client can build with BuildKit."""
    binary, buildkit = docker_cli()
    if binary is None:
        return Engine(False, f"no docker command found: {INSTALL_HINT}")
    try:
        result = subprocess.run([binary, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return Engine(False, f"the Docker engine did not answer within 30s: is it hung? {ENGINE_HINT}", binary)
    except OSError as error:
        return Engine(False, f"cannot run {binary} ({error.strerror}): {INSTALL_HINT}", binary)
    if result.returncode != 0 or not result.stdout.strip():
        lines = result.stderr.strip().splitlines() or ["no answer"]
        detail = next((line for line in lines if "daemon" in line.lower()), lines[-1])
        return Engine(False, f"no Docker engine answers ({detail.strip()}); {ENGINE_HINT}", binary)
    if not buildkit:
        return Engine(
            False,
            f"{binary} cannot build with BuildKit (the Dockerfile needs it): install the buildx plugin "
            "(package docker-buildx-plugin or docker-buildx), or set WORKSHOP_DOCKER to a docker client that can",
            binary,
        )
    return Engine(True, f"Docker engine {result.stdout.strip()} ({binary})", binary)


def require_engine() -> Engine:
    engine = engine_available()
    if not engine:
        raise EngineUnavailable(engine.reason)
    return engine


# ----------------------------------------------------------------------------------------------- build


def default_ca_bundle() -> Path | None:
    """The system CA bundle (``/etc/ssl/certs/ca-certificates.crt``) when there is one, for the ``ca`` secret.

    Behind a TLS-intercepting proxy pip inside the build trusts only what this bundle holds; where the file
    does not exist (macOS, Windows) the build runs without the secret.
    """
    return DEFAULT_CA_BUNDLE if DEFAULT_CA_BUNDLE.is_file() else None



def dockerignore_allowlist(root: Path = PROJECT_ROOT) -> list[str]:
    """The paths ``.dockerignore`` brings back with ``!``: what the Dockerfile may copy from the context."""
    lines = (root / ".dockerignore").read_text().splitlines()
    return [line[1:].strip().strip("/") for line in lines if line.startswith("!")]


def build_context(model_dir: Path, destination: Path, root: Path = PROJECT_ROOT) -> Path:
    """A clean build context: the project files ``.dockerignore`` allows, plus ``model_dir`` as artifacts/wine.

    Building from a temporary folder bakes in any model (a test's, a notebook's) without writing into
    the project's ``artifacts/``. ``.dockerignore`` and the Dockerfile come along, so Docker applies the
    same exclusions as for a build from the repository.
    """
    if not (model_dir / "model_card.json").is_file():
        raise ContainerError(
            f"{model_dir} holds no model_card.json: train a model first (python -m training --output DIR)"
        )
    destination.mkdir(parents=True, exist_ok=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")
    for name in ("Dockerfile", SINGLE_STAGE_DOCKERFILE, ".dockerignore", *dockerignore_allowlist(root)):
        source = root / name
        if name.startswith("artifacts") or not source.exists():
            continue
        target = destination / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=skip, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shutil.copytree(model_dir, destination / "artifacts" / "wine", ignore=skip, dirs_exist_ok=True)
    return destination


@dataclass(frozen=True)
class Build:
    tag: str
    seconds: float
    log: str


def build_image(
    target: str,
    tag: str,
    context: Path | str = PROJECT_ROOT,
    *,
    ca_bundle: Path | None = None,
    build_args: Mapping[str, str] | None = None,
    network: str | None = None,
    dockerfile: str | None = None,
    contexts: Mapping[str, Path | str] | None = None,
    wheelhouse: Path | None = None,
    timeout: float = 1800,
) -> Build:
    """``docker build --target TARGET -t TAG CONTEXT``, with ``ca_bundle`` as the ``ca`` build secret.

    ``dockerfile`` names another recipe in the context than ``Dockerfile`` (``docker build -f``), e.g.
    :data:`SINGLE_STAGE_DOCKERFILE`.

    ``contexts`` are BuildKit named build contexts (``--build-context NAME=PATH``: Docker 23 and later).
    ``wheelhouse`` is a folder of wheels for the Dockerfile's ``wheelhouse`` stage (the llm build installs
    from it first, and needs no PyTorch index when it holds torch): a named context where the engine takes
    them, else an image of the wheels (:func:`wheelhouse_image`) named by the ``WHEELHOUSE_IMAGE`` build
    argument, which every BuildKit can mount.

    Proxy variables set in this environment are passed as build arguments (Docker keeps those out of the
    image's history); ``network`` is ``docker build --network`` (``host`` where the bridge has no route out).
    """
    require_engine()
    args = ["build", "--progress=plain", "--target", target, "-t", tag]
    named = {name: Path(path) for name, path in (contexts or {}).items()}
    wheelhouse_arg: dict[str, str] = {}
    if wheelhouse is not None:
        if named_contexts_supported():
            named[WHEELHOUSE_STAGE] = _wheels_in(wheelhouse)
        else:
            wheelhouse_arg["WHEELHOUSE_IMAGE"] = wheelhouse_image(wheelhouse, timeout=timeout)
    if named and not named_contexts_supported():
        raise ContainerError(
            f"named build contexts ({', '.join(named)}) need Docker 23 or later (BuildKit 0.11) on both the client "
            f"(with buildx) and the engine; here: {docker_versions()}. For the wheelhouse pass wheelhouse= instead.")
    for name, path in named.items():
        args += ["--build-context", f"{name}={path.resolve()}"]
    if dockerfile is not None:
        args += ["-f", str(Path(context) / dockerfile)]
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise ContainerError(f"CA bundle {ca_bundle} not found: pass an existing PEM file or ca_bundle=None")
        args += ["--secret", f"id=ca,src={ca_bundle}"]
    proxies = {name: os.environ[name] for name in PROXY_BUILD_ARGS if os.environ.get(name)}
    for key, value in {**proxies, **wheelhouse_arg, **(build_args or {})}.items():
        args += ["--build-arg", f"{key}={value}"]
    if network:
        args += ["--network", network]
    started = time.monotonic()
    result = _run([*args, str(context)], timeout)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-25:])
        hint = ""
        if "artifacts/wine" in log and "not found" in log:
            hint = "\nThe model is missing from the build context: python -m training --output artifacts/wine"
        raise ContainerError(f"docker build --target {target} failed (exit {result.returncode}):\n{tail}{hint}")
    return Build(tag, time.monotonic() - started, log)


# ----------------------------------------------------------------------------------------------- the wheelhouse


def docker_versions() -> str:
    """``client X, engine Y``: what decides whether named build contexts work."""
    binary, _ = docker_cli()
    server = _server_version(binary) if binary else None
    client = _cli_version(binary) if binary else None
    return (f"client {'.'.join(map(str, client)) if client else 'unknown'}, "
            f"engine {'.'.join(map(str, server)) if server else 'unknown'}")


def _server_version(binary: str) -> tuple[int, ...] | None:
    try:
        result = subprocess.run(
            [binary, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"(\d+)\.(\d+)", result.stdout.strip())
    return (int(match[1]), int(match[2])) if match else None


def named_contexts_supported() -> bool:
    """Whether ``docker build --build-context`` works here: a buildx client and an engine of Docker 23 or later.

    Docker 20.10 (Debian bookworm's) has neither the flag nor a Dockerfile frontend that reads named contexts,
    and the frontend image that would (``# syntax=``) cannot be pulled offline.
    """
    binary, buildkit = docker_cli()
    if binary is None or not buildkit:
        return False
    client, server = _cli_version(binary), _server_version(binary)
    return bool(client and server and client >= NAMED_CONTEXTS_SINCE and server >= NAMED_CONTEXTS_SINCE)


def _wheels_in(wheelhouse: Path) -> Path:
    if not wheelhouse.is_dir():
        raise ContainerError(f"wheelhouse {wheelhouse} is not a folder: fill it with `make wheelhouse` "
                             "(python -m workshop container wheelhouse) or pip download WHEELS -d FOLDER")
    if not any(wheelhouse.glob("*.whl")):
        raise ContainerError(f"wheelhouse {wheelhouse} holds no wheel (*.whl): fill it with `make wheelhouse`")
    return wheelhouse


def wheelhouse_image(wheelhouse: Path, timeout: float = 600) -> str:
    """An image holding the wheels of ``wheelhouse`` at ``/`` (``FROM scratch``), for ``WHEELHOUSE_IMAGE``.

    Tagged by the wheels' names and sizes and built only when Docker lacks that tag, so the llm build's
    install step finds the same image again and stays cached. ``docker image rm`` it to free its space.
    """
    wheels = sorted(_wheels_in(wheelhouse).glob("*.whl"))
    digest = hashlib.sha256("\n".join(f"{w.name} {w.stat().st_size}" for w in wheels).encode()).hexdigest()
    tag = f"{WHEELHOUSE_REPOSITORY}:{digest[:12]}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as folder:
        recipe = Path(folder) / "Dockerfile"
        recipe.write_text("FROM scratch\nCOPY *.whl /\n")
        result = _run(["build", "--progress=plain", "-t", tag, "-f", str(recipe), str(wheelhouse)], timeout)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ContainerError(f"building the wheelhouse image {tag} from {wheelhouse} failed "
                             f"(exit {result.returncode}):\n{tail}")
    return tag


def pinned_version(package: str, constraints: Path = PROJECT_ROOT / "constraints.txt") -> str:
    """The version ``constraints.txt`` pins ``package`` to (``torch==2.13.0`` -> ``2.13.0``)."""
    for line in constraints.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep and re.sub(r"[-_.]+", "-", name.strip().lower()) == package:
            return version.strip()
    raise ContainerError(f"{constraints} pins no {package}==VERSION")


def torch_wheel(wheelhouse: Path, version: str | None = None) -> Path | None:
    """The torch wheel in ``wheelhouse`` (of ``version``, a local build such as ``+cpu`` included), if any."""
    pattern = f"torch-{version}[-+]*.whl" if version else "torch-*.whl"
    found = sorted(wheelhouse.glob(pattern)) if wheelhouse.is_dir() else []
    return found[-1] if found else None


def torch_build(wheel: Path) -> str:
    """Which build a torch wheel is, said the way the progress output says it; a CUDA build raises.

    A CPU build's name carries the local version ``+cpu`` (PyTorch's CPU index, these machines' local
    copy); a wheel without it is taken for a CPU build by its size (~200 MB, where a CUDA one weighs GBs).
    """
    size = wheel.stat().st_size
    if "+cpu" in wheel.name:
        return f"{wheel.name} ({human_size(size)}): a CPU build (its version says +cpu)"
    if size <= MAX_CPU_TORCH_WHEEL_BYTES:
        return f"{wheel.name} ({human_size(size)}): a CPU build, by its size (a CUDA build weighs GBs)"
    raise ContainerError(
        f"{wheel} is {human_size(size)}: a CUDA build of torch, which the CPU image does not want. Delete it and "
        f"fill the wheelhouse from PyTorch's CPU index: pip download torch==VERSION --no-deps "
        f"--index-url {TORCH_CPU_INDEX} -d {wheel.parent}")


def _image_platform_args() -> list[str]:
    """pip download for the image, not for this machine: Linux, the Dockerfile's Python, this CPU's architecture."""
    match = re.search(r"python:(\d+)\.(\d+)", dockerfile_base_image())
    major, minor = (match[1], match[2]) if match else map(str, sys.version_info[:2])
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    return ["--platform", f"manylinux_2_28_{arch}", "--python-version", f"{major}.{minor}", "--implementation", "cp",
            "--abi", f"cp{major}{minor}", "--only-binary=:all:"]


def fill_wheelhouse(
    wheelhouse: Path = WHEELHOUSE_DIR,
    *,
    version: str | None = None,
    index_url: str | None = TORCH_CPU_INDEX,
    index_timeout_s: float = INDEX_TIMEOUT_S,
    say: Callable[[str], None] = print,
    python: str = sys.executable,
) -> Path:
    """torch's CPU wheel (the version ``constraints.txt`` pins) in ``wheelhouse``, downloaded once; its path.

    ``pip download torch==VERSION --no-deps`` from PyTorch's CPU index (``index_url``) first, with a short
    timeout; where that index does not answer (or ``index_url`` is None), from pip's default index, which on
    the workshop's machines has the CPU build too. The wheel must be a CPU build (:func:`torch_build`);
    ``say`` gets which one it is. ``python`` is the interpreter whose pip downloads.
    """
    version = version or pinned_version("torch")
    found = torch_wheel(wheelhouse, version)
    if found is None:
        wheelhouse.mkdir(parents=True, exist_ok=True)
        command = [python, "-m", "pip", "download", f"torch=={version}", "--no-deps", "--dest",
                   str(wheelhouse), "--progress-bar", "off", *_image_platform_args()]
        attempts = [("the default index", [])]
        if index_url:
            attempts.insert(0, (f"PyTorch's CPU index ({index_url})",
                                ["--index-url", index_url, "--timeout", f"{index_timeout_s:g}", "--retries", "0"]))
        failures = []
        for where, options in attempts:
            say(f"wheelhouse: pip download torch=={version} --no-deps from {where} into {wheelhouse}")
            try:
                result = subprocess.run([*command, *options], capture_output=True, text=True, timeout=1800)
                output = (result.stdout + result.stderr).strip()
            except subprocess.TimeoutExpired:
                result, output = None, "no wheel within 30 minutes"
            found = torch_wheel(wheelhouse, version)
            if result is not None and result.returncode == 0 and found is not None:
                break
            last = output.splitlines()[-1] if output else "no output"
            failures.append(f"{where}: {last}")
            say(f"wheelhouse: no torch {version} wheel from {where} ({last})")
        else:
            raise ContainerError(f"no torch {version} wheel could be downloaded into {wheelhouse}:\n"
                                 + "\n".join(failures))
    say(f"wheelhouse: {torch_build(found)}, in {wheelhouse}")
    return found


# ----------------------------------------------------------------------------------------------- run


class Container(NamedTuple):
    """A running container: its base URL on 127.0.0.1 and its id. ``with`` removes it on exit."""

    url: str
    id: str

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        remove(self.id)


def _free_port() -> int:
    from workshop.process import free_port  # one definition of "free" for the whole workshop

    return free_port()


def run_container(
    tag: str,
    *,
    port: int | None = None,
    container_port: int = 8000,
    env: Mapping[str, str] | None = None,
    ready_path: str | None = "/ready",
    timeout: float = 60,
    hardened: bool = True,
    extra_args: Iterable[str] = (),
) -> Container:
    """Start ``tag`` in the background, published on 127.0.0.1:``port``, and wait until ``ready_path`` is 200.

    The service must answer ``/health`` within ``STARTUP_TIMEOUT_S`` first; ``timeout`` then bounds the
    wait for ``ready_path``. ``hardened`` runs it the way the Kubernetes manifests do: read-only root
    filesystem with a writable ``/tmp``, no capabilities, no privilege escalation. If it does not become
    ready, the container is removed and the error carries its last log lines.
    """
    require_engine()
    port = port or _free_port()
    args = ["run", "--detach", "--publish", f"127.0.0.1:{port}:{container_port}"]
    if hardened:
        args += HARDENED_RUN_FLAGS
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    container_id = docker(*args, *extra_args, tag).strip()
    container = Container(f"http://127.0.0.1:{port}", container_id)
    if ready_path is None:
        return container
    try:
        # Answering at all comes first (a busy machine starts containers slowly); ``timeout`` counts from
        # then, so it measures the service becoming ready.
        _wait_ready(container, "/health", max(timeout, STARTUP_TIMEOUT_S))
        if ready_path != "/health":
            _wait_ready(container, ready_path, timeout)
    except ContainerError:
        remove(container_id)
        raise
    return container


def _wait_ready(container: Container, path: str, timeout: float) -> None:
    """Until ``path`` answers 200; a container that exits ends the wait at once, with its log."""
    last = "no answer yet"

    def ready() -> bool:
        nonlocal last
        if docker("inspect", "--format", "{{.State.Running}}", container.id).strip() != "true":
            raise ContainerError(f"the container exited before it was ready; its log:\n{logs(container.id)}")
        try:
            response = httpx.get(container.url + path, timeout=2)
        except httpx.HTTPError as error:
            last = f"{type(error).__name__}: {error}"
            return False
        last = f"{response.status_code} {response.text[:200]}"
        return response.status_code == 200

    try:
        wait_for(ready, timeout, f"{container.url}{path}", interval=0.25, retry_on=())
    except WaitTimeout:
        raise ContainerError(
            f"{container.url}{path} not ready after {timeout:.0f}s ({last}); its log:\n{logs(container.id)}"
        ) from None


def logs(container_id: str, tail: int = 40) -> str:
    """The container's last ``tail`` log lines (its stdout and stderr)."""
    result = _run(["logs", "--tail", str(tail), container_id], timeout=30)
    return (result.stdout + result.stderr).strip()


def exec_in(container_id: str, argv: Sequence[str]) -> str:
    """``docker exec CONTAINER ARGV``: its stdout."""
    return docker("exec", container_id, *argv)


def remove(container_id: str) -> None:
    """Stop and delete a container; removing one that is already gone is not an error."""
    _run(["rm", "--force", "--volumes", container_id], timeout=60)


# ----------------------------------------------------------------------------------------------- inspect


def image_size(tag: str) -> int:
    """The image's size in bytes, as ``docker images`` reports it (all layers, uncompressed)."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).strip())


class Layer(NamedTuple):
    """One layer of an image: the instruction that made it, its size, and whether it came with the base image."""

    instruction: str
    size: int
    from_base: bool


def dockerfile_base_image(dockerfile: Path = PROJECT_ROOT / "Dockerfile") -> str:
    """The default of the Dockerfile's ``ARG PYTHON_IMAGE``: the image every stage starts ``FROM``."""
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ARG PYTHON_IMAGE="):
            return line.split("=", 1)[1].strip()
    raise ValueError(f"{dockerfile} has no ARG PYTHON_IMAGE default")


def image_layers(tag: str, base: str | None = None) -> list[Layer]:
    """The layers of ``tag`` that hold bytes, oldest first (``docker history``). The oldest layers, as many
    as ``base`` has, are the base image's; an instruction that only sets metadata (ENV, USER) adds no layer."""
    history = docker("history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", tag)
    rows = [[*line.split("\t", 1), ""][:2] for line in reversed(history.strip("\n").splitlines())]
    base_count = len(docker("history", "--quiet", base).split()) if base else 0
    layers = []
    for index, (size, created_by) in enumerate(rows):
        instruction = re.sub(r"^/bin/sh -c (#\(nop\) )?| # buildkit$", "", created_by.strip())
        instruction = re.sub(r"^RUN (\|\d+ [^/]*)?/bin/sh -c ", "RUN ", instruction) or "(no history: imported)"
        if int(size) > 0:
            layers.append(Layer(" ".join(instruction.split())[:100], int(size), index < base_count))
    return layers


def image_user(tag: str) -> str:
    """The image's ``USER`` (``uid:gid`` for the workshop's images); an empty string means root."""
    return docker("image", "inspect", "--format", "{{.Config.User}}", tag).strip()


def rebuilt_by_a_new_model(layers: Sequence[Layer]) -> list[Layer]:
    """The layers a new model invalidates: from the first that copies it in to the last.

    That layer is ``COPY artifacts/wine ...`` in the workshop's Dockerfile, or ``COPY . .`` in a recipe
    that copies the whole context (the model with it). Docker rebuilds every layer after a changed one,
    and every node pulls them again.
    """
    for index, layer in enumerate(layers):
        if layer.instruction.startswith("COPY") and ("artifacts/wine" in layer.instruction
                                                     or layer.instruction.split()[1:2] == ["."]):
            return list(layers[index:])
    raise ValueError("no layer copies the model in (COPY artifacts/wine, or COPY . .)")


def image_summary(tag: str, base: str | None = None) -> dict[str, object]:
    """What notebook 03 compares between two recipes: size, user, and what a new model rebuilds and ships."""
    user = image_user(tag)
    rebuilt = rebuilt_by_a_new_model(image_layers(tag, base))
    return {"size": human_size(image_size(tag)), "runs as": f"uid {user}" if user else "root",
            "layers a new model rebuilds": len(rebuilt),
            "bytes a new model ships": human_size(sum(layer.size for layer in rebuilt))}


def image_exists(tag: str) -> bool:
    return bool(docker("image", "ls", "--quiet", tag).strip())


def remove_image(tag: str) -> None:
    _run(["image", "rm", "--force", tag], timeout=60)


def human_size(size: int) -> str:
    """``389768247`` -> ``'390 MB'``: decimal units, as ``docker images`` shows them."""
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"


def temporary_context(model_dir: Path) -> tempfile.TemporaryDirectory[str]:
    """A TemporaryDirectory whose folder is filled by :func:`build_context`; use it in a ``with``."""
    holder = tempfile.TemporaryDirectory(prefix="wine-build-")
    build_context(model_dir, Path(holder.name))
    return holder
