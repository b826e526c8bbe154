"""The LLM service's Kubernetes manifests (k8s/llm): what is particular to serving a model that loads slowly.

Schemas and policy (kubernetes-validate, checkov) are checked for every kustomization in
tests/test_k8s_manifests.py and tests/test_k8s_policy.py; here: the startup probe gives the model time to
load, the cache volume is where the service writes models, the pod is hardened exactly like the wine pod,
threads follow the CPU limit, the environment is a valid production configuration, and the Service is
named after the job the alert rules and the dashboard select.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.llm.config import Settings
from tests.conftest import PROJECT_ROOT
from workshop.observability import llm_alerts

LLM = PROJECT_ROOT / "k8s" / "llm"
WINE_DEPLOYMENT = PROJECT_ROOT / "k8s" / "base" / "wine-deployment.yaml"
IMAGE = "ml-serving-workshop/llm-service:latest"
# The first start downloads the default model and loads it; 10 minutes covers a slow laptop and network.
STARTUP_BUDGET_S = 600
# Measured resident peak while a swap loads a second SmolLM2-135M-sized model in float32 next to the one
# serving (k8s/llm/llm-deployment.yaml explains the figures): the limit must stay above it.
SWAP_PEAK_BYTES = 1.68e9
Manifest = dict[str, Any]


def load_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.fixture(scope="module")
def kustomization() -> Manifest:
    return load_documents(LLM / "kustomization.yaml")[0]


@pytest.fixture(scope="module")
def objects(kustomization: Manifest) -> dict[tuple[str, str], Manifest]:
    """Every object the kustomization lists, by (kind, name)."""
    found: dict[tuple[str, str], Manifest] = {}
    for entry in kustomization["resources"]:
        for doc in load_documents(LLM / entry):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


@pytest.fixture(scope="module")
def deployment(objects: dict[tuple[str, str], Manifest]) -> Manifest:
    return objects["Deployment", "llm"]


@pytest.fixture(scope="module")
def container(deployment: Manifest) -> Manifest:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def quantity(value: str | int) -> Decimal:
    """A Kubernetes quantity (``2``, ``500m``, ``1536Mi``, ``2Gi``, ``4G``) as a number of units."""
    suffixes = {"m": Decimal("0.001"), "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    text = str(value)
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return Decimal(text.removesuffix(suffix)) * suffixes[suffix]
    return Decimal(text)


def env_of(container: Manifest) -> dict[str, Any]:
    """Each variable's value, or its valueFrom."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_the_kustomization_owns_no_namespace(kustomization: Manifest, objects: dict) -> None:
    """Deleting the LLM (kubectl delete -k k8s/llm) must never delete the namespace the wine service lives in."""
    assert kustomization["namespace"] == "wine-workshop"
    assert not [key for key in objects if key[0] == "Namespace"]
    assert set(objects) == {
        ("PersistentVolumeClaim", "llm-cache"),
        ("Deployment", "llm"),
        ("Service", "llm"),
        ("NetworkPolicy", "llm"),
        ("ServiceMonitor", "llm"),
        ("PrometheusRule", "llm-alerts"),
    }


def test_the_pod_is_hardened_exactly_like_the_wine_pod(deployment: Manifest, container: Manifest) -> None:
    (wine,) = load_documents(WINE_DEPLOYMENT)
    wine_pod = wine["spec"]["template"]["spec"]
    (wine_container,) = wine_pod["containers"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == wine_pod["securityContext"]
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == wine_container["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]


def test_the_image_and_port(container: Manifest) -> None:
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_the_startup_probe_waits_for_the_model(container: Manifest) -> None:
    """Liveness must not kill a pod that is still downloading or loading its first model."""
    startup, readiness, liveness = (container[probe] for probe in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert startup["httpGet"] == {"path": "/ready", "port": "http"}
    assert readiness["httpGet"] == {"path": "/ready", "port": "http"}
    assert liveness["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= STARTUP_BUDGET_S
    # A generation keeps the CPUs busy: a probe answered late is not a hung process.
    assert liveness["timeoutSeconds"] >= 5
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


def test_a_model_must_serve_for_the_startup_probe_to_pass(container: Manifest) -> None:
    """With an empty LLM_DEFAULT_MODEL the pod would never be ready, and the startup probe would restart it."""
    assert env_of(container)["LLM_DEFAULT_MODEL"]


def test_the_cache_volume_holds_the_models_and_is_writable(objects: dict, deployment: Manifest,
                                                           container: Manifest) -> None:
    claim = objects["PersistentVolumeClaim", "llm-cache"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2 * 2**30
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"] == {"claimName": "llm-cache"}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "cache"]
    assert not mount.get("readOnly", False)
    env = env_of(container)
    for variable in ("HF_HOME", "LLM_MODELS_DIR"):
        assert Path(env[variable]).is_relative_to(mount["mountPath"]), variable
    # The image's user writes to the claim through the pod's group.
    assert deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001


def test_resources_hold_a_swap_of_the_default_model(container: Manifest) -> None:
    resources = container["resources"]
    requests = {key: quantity(value) for key, value in resources["requests"].items()}
    limits = {key: quantity(value) for key, value in resources["limits"].items()}
    assert limits["memory"] > Decimal(SWAP_PEAK_BYTES), "a swap holds two models: the limit must cover it"
    assert requests["memory"] <= limits["memory"] and requests["cpu"] <= limits["cpu"]
    assert Decimal(1) <= limits["cpu"] <= Decimal(2), "a laptop: one or two CPUs"


def test_thread_counts_equal_the_cpu_limit(container: Manifest) -> None:
    env = env_of(container)
    for variable in ("LLM_TORCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert env[variable] == {
            "resourceFieldRef": {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}
        }, variable
    assert env["LLM_MAX_CONCURRENCY"] == "1", "generations share the CPUs: one at a time uses them all"


def test_the_environment_is_a_valid_production_configuration(container: Manifest,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's own Settings accept the Deployment's variables (resource references resolved)."""
    cpus = str(int(quantity(container["resources"]["limits"]["cpu"])))
    for name, value in env_of(container).items():
        monkeypatch.setenv(name, value if isinstance(value, str) else cpus)
    settings = Settings()
    assert settings.environment == "production"
    assert settings.log_json is True
    assert settings.torch_threads == int(cpus)
    assert str(settings.models_dir) == env_of(container)["LLM_MODELS_DIR"]


def test_the_service_is_named_after_the_alerts_job(objects: dict, deployment: Manifest) -> None:
    """kube-prometheus-stack sets job to the Service's name; the rules and dashboard select job="llm"."""
    service = objects["Service", "llm"]
    assert service["metadata"]["name"] == llm_alerts.JOB == "llm"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_the_servicemonitor_scrapes_the_service_as_job_llm(objects: dict) -> None:
    monitor, service = objects["ServiceMonitor", "llm"], objects["Service", "llm"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert "jobLabel" not in monitor["spec"], "the job label must stay the Service's name"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"


def test_one_replica_rolls_without_downtime(deployment: Manifest) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    # preStop, then the generations in flight: more than the wine service's 30 s.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
