"""The LLM service's Kubernetes manifests (k8s/llm): what is particular to serving a model that loads slowly.

Schemas and policy (kubernetes-validate, checkov) are checked for every kustomization in
tests/test_k8s_manifests.py and tests/test_k8s_policy.py; here: the init container fetches the model
(``python -m app.llm.fetch_model``) into the very folder the service reads it from, which is the default
model's folder, read-only for the service; it is hardened and bounded like the service; the startup probe
gives the model time to load, the pod is hardened exactly like the wine pod, threads follow the CPU limit,
the environment is a valid production configuration, and the Service is named after the job the alert rules
and the dashboard select. The pod applied by hand to reach the model volume is checked too.
"""

from __future__ import annotations

import posixpath
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from app.llm import fetch_model
from app.llm.config import Settings
from app.llm.packaged_model import BFLOAT16, DOWNLOADS, FLOAT32, VARIANTS
from tests.conftest import PROJECT_ROOT
from workshop.observability import llm_alerts

LLM = PROJECT_ROOT / "k8s" / "llm"
WINE_DEPLOYMENT = PROJECT_ROOT / "k8s" / "base" / "wine-deployment.yaml"
LIMIT_RANGE = PROJECT_ROOT / "k8s" / "quota" / "limitrange.yaml"
VOLUME_POD = LLM / "llm-volume-pod.yaml"  # applied by hand, not listed in the kustomization
IMAGE = "ml-serving-workshop/llm-service:latest"
# Loading the default model from the volume (the init container downloaded and converted it before); 10
# minutes also cover a hub id as the default on a slow laptop and network.
STARTUP_BUDGET_S = 600
# Measured resident peak of the worst the default settings admit: a swap float32 -> bfloat16 while a full
# batch of the longest prompts decodes (`python -m benchmarks.llm_swap_memory`, a fresh process; 3,001 and
# 3,137 MB in two runs, the larger here; k8s/llm/llm-deployment.yaml explains the figures). The limit must
# hold it with room to spare.
SWAP_PEAK_BYTES = 3.137e9
SWAP_HEADROOM = 1.15
# Measured resident peak of `python -m app.llm.fetch_model` converting the GGUF (1548 MiB, /usr/bin/time -v;
# k8s/llm/llm-deployment.yaml has the figures): the init container's limit must stay above it.
FETCH_PEAK_BYTES = 1548 * 2**20
FETCH_COMMAND = ["python", "-m", "app.llm.fetch_model", "--models-dir"]
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


@pytest.fixture(scope="module")
def pod(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def init_container(pod: Manifest) -> Manifest:
    (only,) = pod["initContainers"]
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


def mount_of(container: Manifest, path: str) -> tuple[Manifest, str]:
    """The mount that holds ``path`` in ``container`` (the deepest one) and ``path``'s place on its volume."""
    found = [m for m in container.get("volumeMounts", [])
             if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert found, f"{path} is on no volume of container {container['name']}: the root filesystem is read-only"
    mount = max(found, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))
    inside = PurePosixPath(path).relative_to(mount["mountPath"])
    return mount, posixpath.normpath(PurePosixPath(mount.get("subPath", "")) / inside)


def models_dir_of(init: Manifest) -> str:
    command = init["command"] + init.get("args", [])
    assert command[:len(FETCH_COMMAND)] == FETCH_COMMAND and len(command) == len(FETCH_COMMAND) + 1, command
    return command[-1]


def test_the_init_container_fetches_the_model_into_the_folder_the_service_reads(
        pod: Manifest, init_container: Manifest, container: Manifest) -> None:
    """fetch-model writes into the same folder of the same volume that LLM_MODELS_DIR names for the service,
    whatever the mount paths; the service reads it read-only, and writes only where the hub cache is."""
    models_dir = models_dir_of(init_container)
    written, at = mount_of(init_container, models_dir)
    read, served_from = mount_of(container, env_of(container)["LLM_MODELS_DIR"])
    assert written["name"] == read["name"] and at == served_from, "two different folders"
    assert not written.get("readOnly", False), "fetch-model writes the folders"
    assert read.get("readOnly") is True, "the service only reads models"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[read["name"]]["persistentVolumeClaim"] == {"claimName": "llm-cache"}
    hub, _ = mount_of(container, env_of(container)["HF_HOME"])
    assert hub["name"] == read["name"] and not hub.get("readOnly", False), "the hub client writes what it fetches"
    assert (init_container["image"], init_container["imagePullPolicy"]) == (container["image"], "IfNotPresent")


def test_the_fetch_command_is_one_fetch_model_accepts(init_container: Manifest,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The init container's arguments through the real command line, up to where it would download."""
    asked = []
    monkeypatch.setattr(fetch_model, "ensure_models", lambda folder, variants, **_: asked.append(
        (folder, list(variants))) or [folder / v.name for v in variants])
    assert fetch_model.main(init_container["command"][3:] + init_container.get("args", [])) == 0
    assert asked == [(Path(models_dir_of(init_container)), list(VARIANTS))], "both folders, where the service looks"


def test_the_default_model_is_the_folder_the_fetch_makes_in_the_dtype_it_was_saved_in(
        container: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(container)
    assert env["LLM_DEFAULT_MODEL"] == FLOAT32.name and FLOAT32 in VARIANTS and BFLOAT16 in VARIANTS
    assert env["LLM_DTYPE"] == "auto", "the bf16 folder would load as float32 otherwise"
    monkeypatch.setenv("LLM_DTYPE", env["LLM_DTYPE"])
    assert Settings().dtype == "auto"


def test_the_init_container_is_hardened_like_the_service(pod: Manifest, init_container: Manifest,
                                                         container: Manifest) -> None:
    assert init_container["securityContext"] == container["securityContext"]
    assert init_container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    env = env_of(init_container)
    for variable in ("HOME", "TMPDIR"):
        mount, _ = mount_of(init_container, env[variable])
        assert "emptyDir" in volumes[mount["name"]], f"{variable} on scratch space, not on the model volume"
    assert set(env) & {"HF_HOME", "HF_HUB_DISABLE_TELEMETRY"} == {"HF_HOME", "HF_HUB_DISABLE_TELEMETRY"}
    assert "restartPolicy" not in init_container, "an init container that finishes, not a sidecar"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe not in init_container


def limit_range() -> dict[str, dict[str, Decimal]]:
    [entry] = [e for e in load_documents(LIMIT_RANGE)[0]["spec"]["limits"] if e["type"] == "Container"]
    return {key: {k: quantity(v) for k, v in value.items()} for key, value in entry.items() if key != "type"}


def test_the_init_container_fits_its_peak_and_adds_nothing_to_the_pods_quota(init_container: Manifest,
                                                                            container: Manifest) -> None:
    """Above the conversion's measured peak, within the LimitRange, and no larger than the service container:
    a pod counts the larger of its init and its other containers against the quota, so a rollout's surge pod
    asks for what k8s/quota/resourcequota.yaml's arithmetic counts."""
    bounds = limit_range()
    resources = init_container["resources"]
    for resource in ("cpu", "memory"):
        request, limit = quantity(resources["requests"][resource]), quantity(resources["limits"][resource])
        assert bounds["min"][resource] <= request <= limit <= bounds["max"][resource], resource
        assert limit / request <= bounds["maxLimitRequestRatio"][resource], resource
        assert request <= quantity(container["resources"]["requests"][resource]), resource
        assert limit <= quantity(container["resources"]["limits"][resource]), resource
    assert quantity(resources["limits"]["memory"]) >= FETCH_PEAK_BYTES + 256 * 2**20, "room above the peak"
    env = env_of(init_container)
    assert env["OMP_NUM_THREADS"] == {"resourceFieldRef": {"containerName": init_container["name"],
                                                           "resource": "limits.cpu", "divisor": "1"}}


def test_egress_stays_open_for_the_package_index(objects: dict) -> None:
    """fetch-model downloads the wheel with pip: the NetworkPolicy restricts ingress only."""
    policy = objects["NetworkPolicy", "llm"]
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]


def test_the_model_volume_holds_the_folders_and_is_shared_by_the_pods_of_a_rollout(objects: dict,
                                                                                   pod: Manifest) -> None:
    claim = objects["PersistentVolumeClaim", "llm-cache"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The two folders and the wheel take 870 MB; room for the conversion and a few models to swap to.
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2 * 2**30
    # The image's user writes to the claim through the pod's group.
    assert pod["securityContext"]["fsGroup"] == 10001


def test_the_readme_says_how_to_give_the_wheel_by_hand(init_container: Manifest) -> None:
    readme = (PROJECT_ROOT / "k8s" / "README.md").read_text(encoding="utf-8")
    downloads = f"{models_dir_of(init_container)}/{DOWNLOADS}/"
    assert f"llm-volume:{downloads}" in readme
    assert f"apply -f k8s/llm/{VOLUME_POD.name}" in readme
    assert "-c fetch-model" in readme and init_container["name"] == "fetch-model"


def test_the_volume_pod_reaches_the_same_folders_and_is_admitted(pod: Manifest, init_container: Manifest,
                                                                kustomization: Manifest) -> None:
    """The pod for `kubectl cp` into the model volume: valid, hardened as the LLM pod (the namespace enforces
    pod security restricted), within the LimitRange, mounting the claim where fetch-model does, and never
    applied with the kustomization."""
    (volume_pod,) = load_documents(VOLUME_POD)
    assert VOLUME_POD.name not in kustomization["resources"]
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is missing: run make install (it is a dev dependency)")
    kubernetes_validate.validate(volume_pod, "1.30.0", strict=True)
    spec = volume_pod["spec"]
    assert spec["securityContext"] == pod["securityContext"]
    assert spec["automountServiceAccountToken"] is False and spec["restartPolicy"] == "Never"
    (shell,) = spec["containers"]
    assert shell["securityContext"] == init_container["securityContext"] and shell["image"] == init_container["image"]
    models_dir = models_dir_of(init_container)
    assert mount_of(shell, models_dir)[1] == mount_of(init_container, models_dir)[1]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes[mount_of(shell, models_dir)[0]["name"]]["persistentVolumeClaim"] == {"claimName": "llm-cache"}
    bounds = limit_range()
    for resource in ("cpu", "memory"):
        request = quantity(shell["resources"]["requests"][resource])
        limit = quantity(shell["resources"]["limits"][resource])
        assert bounds["min"][resource] <= request <= limit <= bounds["max"][resource], resource
        assert limit / request <= bounds["maxLimitRequestRatio"][resource], resource
    assert volume_pod["metadata"]["labels"]["app.kubernetes.io/name"] != "llm", "no Service may send it traffic"


def test_resources_hold_a_swap_of_the_default_model(container: Manifest) -> None:
    resources = container["resources"]
    requests = {key: quantity(value) for key, value in resources["requests"].items()}
    limits = {key: quantity(value) for key, value in resources["limits"].items()}
    assert limits["memory"] >= Decimal(SWAP_PEAK_BYTES * SWAP_HEADROOM), (
        "a swap beside a full batch of long prompts holds two models and eight KV caches: the limit must "
        "cover its measured peak with 15% to spare")
    assert requests["memory"] <= limits["memory"] and requests["cpu"] <= limits["cpu"]
    assert Decimal(1) <= limits["cpu"] <= Decimal(2), "a laptop: one or two CPUs"


def test_thread_counts_equal_the_cpu_limit(container: Manifest) -> None:
    env = env_of(container)
    for variable in ("LLM_TORCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert env[variable] == {
            "resourceFieldRef": {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}
        }, variable
    assert "LLM_MAX_CONCURRENCY" not in env, "its new name is LLM_MAX_BATCH_SIZE"
    assert int(env["LLM_MAX_BATCH_SIZE"]) > 1, "generations share the CPUs best in one batch"


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
    assert (settings.default_model, settings.dtype) == (FLOAT32.name, "auto")


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
