"""What this machine has, what each part of the workshop needs, and how to get what is missing."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

CORE_PACKAGES = (
    "fastapi", "uvicorn", "pydantic", "pydantic-settings", "scikit-learn", "skl2onnx", "onnxruntime",
    "prometheus-client", "prometheus-fastapi-instrumentator", "pandas", "matplotlib", "papermill",
)
DATA_FILES = ("winequality-red.csv", "winequality-white.csv")


@dataclass(frozen=True)
class Check:
    name: str
    needed_for: str
    ok: bool
    required: bool
    found: str
    how_to_get: str

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "MISSING" if self.required else "missing (optional)"


def _binary(name: str, needed_for: str, required: bool, how: str) -> Check:
    path = shutil.which(name)
    return Check(name, needed_for, path is not None, required, path or "not on PATH", "" if path else how)


def _docker_engine(target: str) -> Check:
    """The client alone is not enough: an engine must answer and the client must build with BuildKit.

    On kubernetes it is required: every deploy builds the image it deploys and loads it into minikube or kind.
    """
    from workshop.container import engine_available  # the same verdict notebook 03 acts on

    engine = engine_available()
    how = "" if engine else ("install Docker (with BuildKit/buildx) and start it; "
                             "on Debian as root: scripts/docker-engine.sh start")
    if target == "kubernetes":
        return Check("docker engine", "kubernetes target (building the images it deploys), 03_containerise",
                     engine.available, True, engine.reason, how)
    return Check("docker engine", "03_containerise", engine.available, False, engine.reason, how)


def _kubectl() -> Check:
    """kubectl renders k8s/ with its built-in kustomize; the dev extra installs one into the venv."""
    from workshop.k8s.manifests import KUBECTL_HINT, find_kubectl

    path = find_kubectl()
    return Check("kubectl", "kubernetes target (kustomize renders k8s/)", path is not None, True,
                 path or "not on PATH", "" if path else KUBECTL_HINT)


def _package(name: str) -> Check:
    try:
        found = version(name)
    except PackageNotFoundError:
        return Check(name, "all notebooks", False, True, "not installed", "make workshop (or pip install -e .)")
    return Check(name, "all notebooks", True, True, found, "")


def _data() -> Check:
    folder = os.environ.get("WINE_QUALITY_DATA_DIR")
    if folder:
        missing = [name for name in DATA_FILES if not (Path(folder) / name).is_file()]
        return Check(
            "wine data", "01_train", not missing, True,
            f"WINE_QUALITY_DATA_DIR={folder}" + (f" lacks {', '.join(missing)}" if missing else ""),
            "point WINE_QUALITY_DATA_DIR at a folder with the two UCI CSVs, or unset it to download" if missing else "",
        )
    return Check("wine data", "01_train", True, True, "downloaded from UCI on first use, then cached", "")


def check_environment(target: str = "local") -> list[Check]:
    """Every check for ``target``; required ones fail the workshop, optional ones skip a step."""
    checks = [
        Check("python", "all notebooks", sys.version_info >= (3, 11), True, sys.version.split()[0],
              "" if sys.version_info >= (3, 11) else "install Python 3.11 or newer"),
        *(_package(name) for name in CORE_PACKAGES),
        _data(),
        _binary("prometheus", "05_monitor (local target)", False,
                "Debian/Ubuntu: apt-get install prometheus; macOS: brew install prometheus"),
        _binary("wrk", "the benchmark (make bench)", False,
                "Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk"),
        _docker_engine(target),
    ]
    if target == "kubernetes":
        kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
        checks += [
            Check("kubeconfig", "kubernetes target", kubeconfig.is_file(), True, str(kubeconfig),
                  "" if kubeconfig.is_file() else "start minikube or kind, or ask your cluster admin for one"),
            _binary("helm", "kubernetes target (monitoring)", True, "https://helm.sh/docs/intro/install/"),
            _kubectl(),
            Check("minikube or kind", "kubernetes target (loading the images into the cluster)",
                  bool(shutil.which("kind") or shutil.which("minikube")), False,
                  shutil.which("kind") or shutil.which("minikube") or "not on PATH",
                  "" if shutil.which("kind") or shutil.which("minikube") else
                  "https://kind.sigs.k8s.io/ or https://minikube.sigs.k8s.io/; a remote cluster needs a registry "
                  "instead (build_images=False, load_image=False)"),
        ]
    return checks


def environment_report(target: str = "local") -> pd.DataFrame:
    rows = [{**asdict(check), "status": check.status} for check in check_environment(target)]
    frame = pd.DataFrame(rows).set_index("name")
    return frame[["status", "needed_for", "found", "how_to_get"]]


def missing_required(target: str = "local") -> list[Check]:
    return [check for check in check_environment(target) if check.required and not check.ok]


def environment_summary(target: str = "local") -> str:
    """What is missing first, each with its fix in full (required before optional), then one line for the rest."""
    checks = check_environment(target)
    missing = sorted((c for c in checks if not c.ok), key=lambda c: not c.required)
    lines = [f"{'✗ MISSING' if c.required else '– optional, missing'}: {c.name} (for {c.needed_for})\n"
             f"    {c.how_to_get}" for c in missing]
    found = [c for c in checks if c.ok]
    names = ", ".join(f"{c.name} {c.found}" if c.name == "python" else c.name for c in found)
    lines.append(textwrap.fill(f"✓ found {len(found)} of {len(checks)}: {names}", width=110,
                               subsequent_indent="    "))
    return "\n".join(lines)
