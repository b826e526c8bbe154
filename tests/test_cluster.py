"""The kubernetes target on a real cluster: what the emulator tests cannot prove.

Run with ``make test-cluster`` (``pytest -m cluster tests``) against the cluster of the current kubeconfig
(minikube or kind on a laptop; the images built and loadable: ``wine-service:latest`` and
``ml-serving-workshop/wine-locust:latest``). Every test works in a namespace of its own and deletes it.
Without a reachable cluster each test skips with the reason; ``make test`` leaves them out.

Verified only here: the API server admitting the objects (schemas, pod security ``restricted``, the
ResourceQuota and LimitRange), server-side apply's real merge, the kubelet pulling (or failing to pull)
images, probes deciding readiness, port-forwarding over the API server's websocket, pod logs, the Locust
Job on real pods, and the notebooks end to end (helm and kube-prometheus-stack included).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROJECT_ROOT
from workshop.k8s.cluster import Cluster, connect
from workshop.k8s.errors import ClusterUnavailableError, RolloutError
from workshop.k8s.target import KubernetesTarget

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

WINE = {
    "fixed_acidity": 7.4, "volatile_acidity": 0.7, "citric_acid": 0.0, "residual_sugar": 1.9,
    "chlorides": 0.076, "free_sulfur_dioxide": 11.0, "total_sulfur_dioxide": 34.0, "density": 0.9978,
    "ph": 3.51, "sulphates": 0.56, "alcohol": 9.4, "color": "red",
}


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    try:
        return connect()
    except ClusterUnavailableError as error:
        pytest.skip(f"no reachable Kubernetes cluster: {error}")


@pytest.fixture
def target(cluster: Cluster) -> Iterator[KubernetesTarget]:
    """A throw-away namespace; the monitoring release (shared by everything on the cluster) is left alone."""
    namespace = f"wine-test-{secrets.token_hex(3)}"
    workshop = KubernetesTarget(namespace=namespace, cluster=cluster, progress=False)
    yield workshop
    workshop.teardown()


def test_wine_service_rolls_out_answers_through_a_port_forward_and_is_torn_down(target, cluster):
    service = target.deploy_wine(max_batch_size="50", timeout=300)
    answer = httpx.post(f"{service.url}/predict", json=WINE, timeout=10)
    assert answer.status_code == 200 and 0 <= answer.json()["quality"] <= 10
    refused = httpx.post(f"{service.url}/predict/batch", json={"instances": [WINE] * 51}, timeout=10)
    assert refused.status_code == 422, "the setting reached the pods as WINE_MAX_BATCH_SIZE"
    assert "--- pod wine-" in service.logs()
    quota = cluster.core.read_namespaced_resource_quota("workshop", target.namespace)
    assert quota.status.used and "pods" in quota.status.used, "the quota counts the workshop's pods"
    assert target.teardown() == [target.namespace]
    assert target.teardown() == [], "a second teardown is harmless"


def test_metrics_sum_every_pod_and_describe_shows_the_pods_and_their_replicaset(target):
    """Two pods read through the pod proxy: counters add up, the model-info gauge stays 1 (not one per pod)."""
    service = target.deploy_wine(timeout=300)
    assert target.scale("wine", 2, timeout=300) >= 2
    for _ in range(10):
        assert httpx.post(f"{service.url}/predict", json=WINE, timeout=10).status_code == 200
    frame = target.metrics("wine")
    rows = frame[frame["name"] == "wine_input_rows_total"]
    assert rows["value"].sum() == 10
    assert frame.loc[frame["name"] == "wine_model_info", "value"].tolist() == [1.0]
    tables = target.describe("wine")
    ready = tables["pods"][tables["pods"]["ready"] == "1/1"]
    assert len(ready) >= 2 and ready["replicaset"].nunique() == 1
    [replicaset] = tables["replicasets"].itertuples()
    assert replicaset.replicaset == ready["replicaset"].iloc[0] and replicaset.revision == 1
    assert not tables["events"].empty


def test_an_image_the_cluster_cannot_pull_is_reported_with_the_load_hint(target):
    target.load_image = False
    with pytest.raises(RolloutError) as failed:
        target.deploy_wine(image="wine-service:no-such-tag", timeout=180)
    assert {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"} & set(failed.value.reasons)
    assert "kind load docker-image" in str(failed.value)


def test_the_locust_job_runs_on_the_cluster_and_its_results_come_back(target, cluster, tmp_path):
    target.deploy_wine(timeout=300)
    result = target.run_load_test(users=4, spawn_rate=4, run_time_s=20, results_dir=tmp_path, workers=1,
                                  think_time_s=0.2)
    assert result.total_requests > 0 and result.total_failures == 0
    assert (result.endpoints["rps"] > 0).all()
    workers = cluster.apps.list_namespaced_deployment(target.namespace).items
    assert "locust-worker" not in {d.metadata.name for d in workers}, "the workers must not outlive the Job"


def test_every_notebook_runs_on_the_kubernetes_target(cluster, tmp_path):
    """What an instructor runs before a class: the whole workshop, unattended, on this cluster."""
    done = subprocess.run(
        [sys.executable, "-m", "workshop", "run-notebooks", "--target", "kubernetes", "--output", str(tmp_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600, check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert sorted(p.name for p in Path(tmp_path).glob("*.ipynb"))
