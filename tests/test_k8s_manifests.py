"""The wine service's Kubernetes manifests, checked offline: no cluster, no kubectl required.

Built-in kinds are validated against the OpenAPI schemas that kubernetes-validate ships (strict: an
unknown or misspelt field fails); the CRDs (ServiceMonitor, PrometheusRule) have no schema there and
are checked structurally. On top, the policies a schema cannot express: hardened containers, probes on
the service's real endpoints, threads sized to the CPU limit, and selectors that actually match.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.wine.config import Settings
from tests.conftest import PROJECT_ROOT
from workshop.observability import alerts, k8s_dashboards

K8S = PROJECT_ROOT / "k8s"
BASE = K8S / "base"
MONITORING = K8S / "monitoring"
NAMESPACE = "wine-workshop"
# The oldest Kubernetes the manifests promise to work on, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", "latest")
CRD_GROUP = "monitoring.coreos.com/v1"
PROBE_PATHS = {"startupProbe": "/health", "readinessProbe": "/ready", "livenessProbe": "/health"}
Manifest = dict[str, Any]


# --- rendering the kustomization in Python --------------------------------------------------------


def load_yaml(path: Path) -> list[Manifest]:
    """Every non-empty document of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization(folder: Path) -> Manifest:
    """A folder's kustomization.yaml."""
    return load_yaml(folder / "kustomization.yaml")[0]


def resource_paths(folder: Path) -> Iterator[Path]:
    """The resources a kustomization lists, recursing into directories (which kustomize requires to be
    kustomizations themselves)."""
    for entry in kustomization(folder).get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            yield from resource_paths(path)
        else:
            yield path


def render(folder: Path) -> list[Manifest]:
    """What ``kustomize build`` would emit for the parts used here: the resources, with the namespace
    and the labels of the top kustomization applied (not to selectors: ``includeSelectors: false``)."""
    config = kustomization(folder)
    labels = {k: v for entry in config.get("labels", []) for k, v in entry["pairs"].items()}
    manifests = [doc for path in resource_paths(folder) for doc in load_yaml(path)]
    for doc in manifests:
        doc["metadata"].setdefault("labels", {}).update(labels)
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = config["namespace"]
        else:
            doc["metadata"]["namespace"] = config["namespace"]
    return manifests


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
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


# --- files and schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [BASE, MONITORING], ids=lambda p: p.name)
def test_every_file_a_kustomization_lists_exists(folder: Path) -> None:
    for entry in kustomization(folder)["resources"]:
        path = folder / entry
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{folder.name}: {entry} missing"


def test_the_kustomization_sets_the_workshop_namespace(manifests: list[Manifest]) -> None:
    assert kustomization(BASE)["namespace"] == NAMESPACE
    assert one(manifests, "Namespace")["metadata"]["name"] == NAMESPACE
    assert {m["metadata"].get("namespace") for m in manifests if m["kind"] != "Namespace"} == {NAMESPACE}


def test_the_rendering_includes_every_object(manifests: list[Manifest]) -> None:
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        [
            "Namespace",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "ServiceMonitor",
            "PrometheusRule",
            "ConfigMap",
        ]
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_built_in_kinds_match_the_kubernetes_schema_strictly(manifests: list[Manifest], version: str) -> None:
    # Only this test needs the validator (a dev dependency): the policy checks run without it.
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = kubernetes_validate.utils.latest_version()
    errors = []
    for doc in manifests:
        if doc["apiVersion"] == CRD_GROUP:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message}")
    assert not errors, "\n".join(errors)


def test_crds_have_the_operator_structure(manifests: list[Manifest]) -> None:
    """No schema for the operator's CRDs here: check what the operator and the chart's selectors need."""
    for kind in ("ServiceMonitor", "PrometheusRule"):
        doc = one(manifests, kind)
        assert doc["apiVersion"] == CRD_GROUP
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert isinstance(doc["spec"], dict) and doc["spec"]
    for group in one(manifests, "PrometheusRule")["spec"]["groups"]:
        assert group["name"] and all("alert" in rule and "expr" in rule for rule in group["rules"])


def test_kustomize_renders_the_same_objects(manifests: list[Manifest]) -> None:
    """With kustomize at hand (standalone or in kubectl), the real rendering agrees with the Python one."""
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(BASE)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(BASE)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed: see https://kubernetes.io/docs/tasks/tools/")
    built = [
        doc
        for doc in yaml.safe_load_all(
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
        )
        if doc
    ]
    identity = sorted((m["kind"], m["metadata"]["name"], m["metadata"].get("namespace")) for m in manifests)
    assert sorted((m["kind"], m["metadata"]["name"], m["metadata"].get("namespace")) for m in built) == identity
    assert one(built, "Deployment")["spec"]["selector"] == one(manifests, "Deployment")["spec"]["selector"]


# --- the Deployment's policies ---------------------------------------------------------------------


def test_every_container_is_hardened_and_bounded(manifests: list[Manifest]) -> None:
    spec = pod_spec(manifests)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert isinstance(spec["securityContext"]["runAsUser"], int) and spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for container in spec.get("initContainers", []) + spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert context.get("seccompProfile", spec["securityContext"]["seccompProfile"])["type"] == "RuntimeDefault"
        assert context.get("runAsNonRoot", True) is True
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][bound].keys(), f"{container['name']}: {bound}"


def test_tmp_is_the_writable_folder(manifests: list[Manifest]) -> None:
    spec = pod_spec(manifests)
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_image_port_and_probes(manifests: list[Manifest]) -> None:
    spec = one(manifests, "Deployment", "wine")["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["replicas"] == 2
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


def cpu_cores(quantity: str) -> float:
    """A CPU quantity ("1", "500m") in cores."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def env_value(container: Manifest, name: str) -> str:
    """An environment variable as the pod sees it: a literal, or the container's CPU limit read through
    the downward API (rounded up to whole cores with divisor 1, as the kubelet does)."""
    variable = next(v for v in container["env"] if v["name"] == name)
    if "value" in variable:
        return variable["value"]
    field = variable["valueFrom"]["resourceFieldRef"]
    assert field.get("containerName", container["name"]) == container["name"]
    assert (field["resource"], str(field.get("divisor", "1"))) == ("limits.cpu", "1"), name
    return str(math.ceil(cpu_cores(container["resources"]["limits"]["cpu"])))


def test_thread_counts_equal_the_cpu_limit(manifests: list[Manifest]) -> None:
    container = pod_spec(manifests)["containers"][0]
    limit = cpu_cores(container["resources"]["limits"]["cpu"])
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


# --- Service, monitoring and scaling: the selectors match --------------------------------------------


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


def test_the_hpa_scales_the_deployment_on_cpu(manifests: list[Manifest]) -> None:
    hpa, deployment = one(manifests, "HorizontalPodAutoscaler"), one(manifests, "Deployment", "wine")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "wine")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    [metric] = hpa["spec"]["metrics"]
    assert (metric["resource"]["name"], metric["resource"]["target"]["type"]) == ("cpu", "Utilization")


def test_the_pdb_and_deployment_select_the_pods(manifests: list[Manifest]) -> None:
    pdb, deployment = one(manifests, "PodDisruptionBudget"), one(manifests, "Deployment", "wine")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(manifests))
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(manifests))


# --- dashboards ConfigMap and chart values ----------------------------------------------------------


def test_the_dashboards_configmap_is_up_to_date() -> None:
    assert not k8s_dashboards.is_stale(PROJECT_ROOT), "run python -m workshop.observability.k8s_dashboards"
    assert k8s_dashboards.main(["--check"], root=PROJECT_ROOT) == 0


def test_the_dashboards_configmap_holds_every_dashboard(manifests: list[Manifest]) -> None:
    configmap = one(manifests, "ConfigMap", k8s_dashboards.CONFIGMAP_NAME)
    assert configmap["metadata"]["labels"][k8s_dashboards.SIDECAR_LABEL] == "1"
    files = sorted((PROJECT_ROOT / "dashboards").glob("*.json"))
    assert files and sorted(configmap["data"]) == [path.name for path in files]
    for path in files:
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text(encoding="utf-8"))


def test_check_fails_on_a_stale_configmap(tmp_path: Path) -> None:
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "dashboards" / "a.json").write_text('{"title": "a"}\n', encoding="utf-8")
    assert k8s_dashboards.main(["--check"], root=tmp_path) == 1  # missing
    assert k8s_dashboards.main([], root=tmp_path) == 0
    assert k8s_dashboards.main(["--check"], root=tmp_path) == 0
    (tmp_path / "dashboards" / "b.json").write_text('{"title": "b"}\n', encoding="utf-8")
    assert k8s_dashboards.main(["--check"], root=tmp_path) == 1  # a dashboard was added
    (tmp_path / "dashboards" / "b.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        k8s_dashboards.main([], root=tmp_path)


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
