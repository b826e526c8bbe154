"""The load test: its traffic is what it claims (valid, corrupted, drifted), its failures are loud,
and the Kubernetes manifests that run it have the required structure.

Locust is never imported in this process (gevent would monkey-patch the test session): the locustfile
runs in subprocesses, through ``workshop.loadtest`` or a short ``python -c``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from app.wine.features import FEATURES
from app.wine.schemas import WineInput
from tests.conftest import PROJECT_ROOT, Scrape
from workshop.__main__ import main
from workshop.loadtest import (
    AGGREGATED,
    SLO_P50_MS,
    SLO_P99_MS,
    LoadTestResult,
    breaking_load,
    locustfile,
    p99_by_users,
    step_load_env,
    step_load_verdict,
)
from workshop.process import free_port
from workshop.targets import LocalTarget
from workshop.waiting import wait_for

K8S = PROJECT_ROOT / "k8s" / "load_tests"
CORRUPTIONS = {"string", "negative", "impossible", "missing", "wrong_type"}
FAST = {"users": 4, "spawn_rate": 4, "run_time_s": 8, "think_time_s": 0.05, "stop_timeout_s": 2}


# --- the locustfile's request bodies, checked against the real schema ------------------------------

_BODIES_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import locustfile as lf
wine = {"fixed_acidity": 7.4, "volatile_acidity": 0.7, "citric_acid": 0.0, "residual_sugar": 1.9,
        "chlorides": 0.076, "free_sulfur_dioxide": 11.0, "total_sulfur_dioxide": 34.0, "density": 0.9978,
        "ph": 3.51, "sulphates": 0.56, "alcohol": 24.5, "color": "red"}
fields = [*lf.FEATURE_NAMES, "color"]
corrupted = [[kind, field, lf.corrupt(wine, kind, field)] for kind in lf.CORRUPTIONS for field in fields
             if not (kind in ("negative", "impossible") and field == "color")]
sober = {**wine, "alcohol": 9.4}
print(json.dumps({"corrupted": corrupted, "drifted": lf.drift(wine), "sober": [sober, lf.drift(sober)]}))
"""


@pytest.fixture(scope="module")
def bodies() -> dict:
    """Corrupted and drifted bodies made by the locustfile's own functions, in a separate interpreter."""
    done = subprocess.run([sys.executable, "-c", _BODIES_SCRIPT, str(locustfile().parent)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_corruption_of_every_field_is_refused_by_the_schema(bodies):
    kinds = set()
    for kind, field, body in bodies["corrupted"]:
        with pytest.raises(ValidationError) as caught:
            WineInput.model_validate(body)
        assert {e["loc"][0] for e in caught.value.errors()} == {field}, f"{kind} {field} must break only {field}"
        kinds.add(kind)
    assert kinds == CORRUPTIONS


def test_drift_shifts_up_and_stays_valid(bodies):
    drifted = WineInput.model_validate(bodies["drifted"])  # clipped: alcohol 24.5 + 3 stays <= 25
    bounds = {f.name: f.maximum for f in FEATURES}
    assert drifted.alcohol == bounds["alcohol"]
    assert drifted.residual_sugar == pytest.approx(1.9 * 3)
    assert drifted.free_sulfur_dioxide <= drifted.total_sulfur_dioxide


def test_the_load_test_drifts_the_wines_exactly_as_notebook_05_does(bodies):
    """05 and 06 speak of one drifted vintage: the locustfile's copy of the shift makes the same wines."""
    import pandas as pd

    from workshop.traffic import drift as traffic_drift

    wine, drifted = bodies["sober"]
    expected = traffic_drift(pd.DataFrame([wine])).iloc[0].to_dict()
    assert drifted["color"] == expected.pop("color")
    assert {name: drifted[name] for name in expected} == pytest.approx(expected)
    assert drifted["alcohol"] == pytest.approx(12.4) and drifted["residual_sugar"] == pytest.approx(5.7)


# --- reading results -------------------------------------------------------------------------------

def test_step_table_reads_the_last_window_of_each_step_and_finds_the_breaking_load(tmp_path):
    history = pd.DataFrame({
        "seconds": [0, 5, 10, 15, 20], "users": [5, 5, 10, 10, 10], "endpoint": [AGGREGATED] * 5,
        "rps": [50, 50, 90, 100, 110], "failures_per_s": [0] * 5,
        "p50_ms": [5, 6, 30, 60, 70], "p95_ms": [9] * 5, "p99_ms": [20, 40, 250, 500, 400],
    })
    result = LoadTestResult(tmp_path, 0, pd.DataFrame(), pd.DataFrame(), history)
    table = p99_by_users(result)
    assert table.loc[5, "p99_ms"] == 40 and table.loc[10, "p99_ms"] == 400
    assert table["meets_slo"].tolist() == [True, False]
    assert breaking_load(table) == 10
    assert step_load_verdict(table, steps=4, step_users=5) == (
        "the service broke at 10 users (110 requests/s): p50 70 ms > 50 ms, p99 400 ms > 300 ms; "
        "the last step within it had 5 users (50 requests/s).")


def test_a_step_in_which_a_request_failed_breaks_the_service_even_when_fast(tmp_path):
    history = pd.DataFrame({
        "seconds": [0, 10, 20], "users": [5, 10, 15], "endpoint": [AGGREGATED] * 3, "rps": [50, 90, 95],
        "failures_per_s": [0, 0.2, 0], "p50_ms": [5, 6, 7], "p95_ms": [9] * 3, "p99_ms": [20, 30, 40],
    })
    table = p99_by_users(LoadTestResult(tmp_path, 0, pd.DataFrame(), pd.DataFrame(), history))
    assert table["failed"].tolist() == [False, True, False] and breaking_load(table) == 10
    assert step_load_verdict(table, steps=3, step_users=5).startswith(
        "the service broke at 10 users (90 requests/s): requests failed;")


def test_a_step_run_that_never_broke_says_whether_the_ramp_ended_or_stopped(tmp_path):
    history = pd.DataFrame({
        "seconds": [0, 10], "users": [5, 10], "endpoint": [AGGREGATED] * 2, "rps": [50, 90],
        "failures_per_s": [0, 0], "p50_ms": [5, 6], "p95_ms": [9] * 2, "p99_ms": [20, 30],
    })
    table = p99_by_users(LoadTestResult(tmp_path, 0, pd.DataFrame(), pd.DataFrame(), history))
    assert step_load_verdict(table, steps=2, step_users=5) == (
        "every step met the SLO up to 10 users (90 requests/s); the limit is further up: raise `steps` or "
        "`step_users`.")
    assert "Locust stopped the ramp there" in step_load_verdict(table, steps=4, step_users=5)


def test_the_step_load_stops_at_the_slo_unless_told_not_to():
    assert step_load_env(True, 25, 10, 8) == {
        "LOCUST_STEP_LOAD": "true", "LOCUST_STEP_USERS": "25", "LOCUST_STEP_SECONDS": "10", "LOCUST_STEPS": "8",
        "LOCUST_STEP_STOP_P50_MS": f"{SLO_P50_MS:g}", "LOCUST_STEP_STOP_P99_MS": f"{SLO_P99_MS:g}"}
    assert step_load_env(True, 25, 10, 8, stop_when_broken=False)["LOCUST_STEP_STOP_P99_MS"] == "0"
    settings = dict(line.split("=", 1) for line in (K8S / "settings.env").read_text().split() if "=" in line)
    assert (float(settings["LOCUST_STEP_STOP_P50_MS"]), float(settings["LOCUST_STEP_STOP_P99_MS"])) == (
        SLO_P50_MS, SLO_P99_MS), "kubectl apply -k k8s/load_tests stops a step load at the same SLO"


# --- real runs against the real service ------------------------------------------------------------

def _run_against_service(model_dir: Path, results: Path, *, drift: bool) -> tuple[LoadTestResult, Scrape]:
    """A fresh service instance (fresh counters), one short load test, then its /metrics."""
    target = LocalTarget(log_dir=results / "logs")
    try:
        service = target.deploy_wine(model_dir)
        result = target.run_load_test(results_dir=results, drift=drift, **FAST)  # against the service it deployed
        return result, Scrape(httpx.get(f"{service.url}/metrics", timeout=10).text)
    finally:
        target.teardown()


@pytest.fixture(scope="module")
def normal_run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoadTestResult, Scrape]]:
    yield _run_against_service(model_dir, tmp_path_factory.mktemp("load-normal"), drift=False)


def _mean(scrape: Scrape, feature: str) -> float:
    rows = sum(s.value for s in scrape.samples if s.name == "wine_input_rows_total")
    return scrape.value("wine_input_feature_sum_total", feature=feature) / rows


@pytest.mark.slow
def test_a_short_run_has_no_failures_and_traffic_on_every_endpoint(normal_run):
    result, _ = normal_run
    assert result.returncode == 0
    assert result.total_failures == 0 and result.failures.empty
    endpoints = result.endpoints
    corrupted_names = {f"/predict [corrupted: {k}]" for k in CORRUPTIONS}
    assert set(endpoints.index) <= {"/health", "/predict", "/predict/batch"} | corrupted_names
    # Which task a user runs next is Locust's random draw (how many of each, in a run of a few seconds,
    # depends on this machine's speed): what holds for every draw is asserted.
    assert {"/predict", "/predict/batch"} <= set(endpoints.index), endpoints.index
    assert (endpoints["rps"] > 0).all(), endpoints["rps"]
    assert result.html_report.is_file()
    assert (result.history["endpoint"] == AGGREGATED).any()


@pytest.mark.slow
def test_every_corrupted_request_was_answered_422_and_counted_by_the_service(normal_run):
    """Locust marks a corrupted request successful only on a 422 naming the field; the service agrees.

    A user stopped mid-request when the run time is up may leave one request answered by the service but
    never recorded by Locust: that is the only slack allowed between the two counts.
    """
    result, scrape = normal_run
    corrupted = int(result.corrupted["requests"].sum())
    assert corrupted > 0 and result.corrupted["failures"].sum() == 0
    answered = {(s.labels["handler"], s.labels["status"]): s.value for s in scrape.samples
                if s.name == "http_requests_total" and s.labels["handler"] not in ("/ready", "/metrics")}
    assert not [key for key in answered if key[1] == "5xx"]
    unrecorded = sum(answered.values()) - result.total_requests
    assert 0 <= unrecorded <= FAST["users"]
    client_errors = answered[("/predict", "4xx")]
    assert corrupted <= client_errors <= corrupted + unrecorded
    # The kinds take turns: N recorded corrupted requests cover min(N, 5) kinds, less one per request the
    # service answered and Locust did not record (a gap in the turns).
    kinds = set(result.corrupted.index)
    assert kinds <= CORRUPTIONS and len(kinds) >= min(corrupted, len(CORRUPTIONS)) - unrecorded, kinds
    # One corrupted field per request: the service counted one rejected field per 4xx.
    assert sum(s.value for s in scrape.samples if s.name == "wine_rejected_inputs_total") == client_errors


@pytest.mark.slow
def test_drifted_traffic_moves_the_input_means_up(normal_run, model_dir, tmp_path):
    _, normal = normal_run
    _, drifted = _run_against_service(model_dir, tmp_path, drift=True)
    assert _mean(drifted, "alcohol") > _mean(normal, "alcohol") + 1.0
    assert _mean(drifted, "residual_sugar") > _mean(normal, "residual_sugar") + 3.0


@pytest.mark.slow
def test_a_stopped_service_fails_the_run_loudly(tmp_path, capsys):
    """Nothing listens on the port: the CLI exits non-zero and lists connection failures."""
    url = f"http://127.0.0.1:{free_port()}"
    code = main(["loadtest", "--host", url, "--users", "2", "--run-time", "3", "--think-time", "0.2",
                 "--results", str(tmp_path)])
    assert code != 0
    message = capsys.readouterr().err
    assert "failed (Locust exit code 1)" in message
    assert "connection failed" in message and "connection refused" in message
    assert (tmp_path / "locust_failures.csv").is_file()


# --- Kubernetes manifests --------------------------------------------------------------------------

def _documents() -> dict[str, dict]:
    """One document per kind (the NetworkPolicies are looked at in their own test)."""
    documents = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            documents.setdefault(document["kind"], document)
    return documents


def _network_policies() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "networkpolicy.yaml").read_text())}


def _containers(document: dict) -> list[dict]:
    return document["spec"]["template"]["spec"]["containers"]


def test_k8s_pods_run_the_locustfile_baked_into_the_image():
    """One locustfile: the Job and the workers run the image's (the Dockerfile copies load_tests/locustfile.py
    to where the image's LOCUST_LOCUSTFILE points, tests/test_dockerfile.py); nothing mounts or names another."""
    assert not list(K8S.glob("*.py")), "a locustfile beside the manifests would be a second copy to keep in step"
    assert not [g["name"] for g in _documents()["Kustomization"]["configMapGenerator"] if g.get("files")]
    settings = dict(line.split("=", 1) for line in (K8S / "settings.env").read_text().split() if "=" in line)
    assert "LOCUST_LOCUSTFILE" not in settings
    for kind in ("Job", "Deployment"):
        pod = _documents()[kind]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "wine-locust"
        assert "LOCUST_LOCUSTFILE" not in {item["name"] for item in container.get("env", [])}, kind
        assert not {"-f", "--locustfile"} & set(container.get("args", []) + container.get("command", [])), kind
        assert not [v for v in pod["volumes"] if "configMap" in v], f"{kind} mounts a ConfigMap over the image"


def test_k8s_manifests_parse_and_have_the_required_kinds():
    documents = _documents()
    assert set(documents) == {"Kustomization", "Job", "Deployment", "Service", "NetworkPolicy"}
    kustomization = documents["Kustomization"]
    assert kustomization["namespace"], "the namespace comes from the kustomization"
    for name in kustomization["resources"]:
        assert (K8S / name).is_file()
    for generator in kustomization["configMapGenerator"]:
        for name in generator.get("files", []) + generator.get("envs", []):
            assert (K8S / name).is_file(), "kustomize only loads files inside its root"


def test_k8s_master_job_is_bounded_and_headless():
    job = _documents()["Job"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    args = _containers(job)[0]["args"]
    assert "--master" in args and "--headless" in args and "--exit-code-on-error" in args


def test_k8s_host_and_load_come_from_configuration():
    settings = dict(line.split("=", 1) for line in (K8S / "settings.env").read_text().split() if "=" in line)
    assert settings["LOCUST_HOST"].startswith("http") and settings["LOCUST_RUN_TIME"]
    generated = {g["name"] for g in _documents()["Kustomization"]["configMapGenerator"]}
    for kind in ("Job", "Deployment"):
        container = _containers(_documents()[kind])[0]
        assert {"configMapRef": {"name": "locust-settings"}} in container["envFrom"]
        assert "http://" not in yaml.safe_dump(_documents()[kind]), f"{kind} hard-codes a host"
        volumes = _documents()[kind]["spec"]["template"]["spec"]["volumes"]
        assert {v["configMap"]["name"] for v in volumes if "configMap" in v} <= generated
    worker_env = {e["name"]: e["value"] for e in _containers(_documents()["Deployment"])[0]["env"]}
    assert worker_env["LOCUST_MASTER_NODE_HOST"] == _documents()["Service"]["metadata"]["name"]


@pytest.mark.parametrize("kind", ["Job", "Deployment"])
def test_k8s_pods_have_resources_and_run_as_non_root(kind):
    pod = _documents()[kind]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert set(container["resources"]) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_k8s_default_host_is_the_wine_services_port():
    """``http://wine`` is port 80, the Service's port (the container's 8000 is not reachable by Service name)."""
    settings = dict(line.split("=", 1) for line in (K8S / "settings.env").read_text().split() if "=" in line)
    host = httpx.URL(settings["LOCUST_HOST"])
    service = yaml.safe_load((PROJECT_ROOT / "k8s" / "base" / "wine-service.yaml").read_text())
    assert host.host == service["metadata"]["name"]
    assert (host.port or 80) in {port["port"] for port in service["spec"]["ports"]}


def test_k8s_only_workers_reach_the_master_and_nothing_reaches_a_worker():
    policies = _network_policies()
    master, worker = policies["locust-master"]["spec"], policies["locust-worker"]["spec"]
    job_labels = _documents()["Job"]["spec"]["template"]["metadata"]["labels"]
    worker_labels = _documents()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert master["podSelector"]["matchLabels"].items() <= job_labels.items()
    assert worker["podSelector"]["matchLabels"].items() <= worker_labels.items()
    (rule,) = master["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": worker["podSelector"]["matchLabels"]}}]
    assert rule["ports"] == [{"port": _documents()["Service"]["spec"]["ports"][0]["targetPort"], "protocol": "TCP"}]
    assert worker["ingress"] == [] and worker["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize("kind", ["Job", "Deployment"])
def test_k8s_pods_get_no_service_account_token(kind):
    assert _documents()[kind]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_k8s_master_prints_its_results_to_its_log():
    """The results leave the pod through its log (workshop/k8s/loadtest.py): every CSV Locust writes is printed."""
    job = _documents()["Job"]
    container = _containers(job)[0]
    script = container["command"][2]
    csv = container["args"][container["args"].index("--csv") + 1]
    for suffix in ("stats", "failures", "stats_history"):
        name = f"{Path(csv).name}_{suffix}.csv"
        assert f"{name} " in script or f"{name};" in script, name
        assert f'cat "{Path(csv).parent}/$name"' in script
    assert "exit $code" in script, "the Job fails when Locust does"


@pytest.mark.slow
@pytest.mark.parametrize("stop_when_broken", [True, False], ids=["stops-at-the-break", "every-step"])
def test_a_real_step_load_stops_after_the_first_step_that_breaks_the_slo(
        model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_when_broken: bool):
    """With an SLO no request can meet (a microsecond), the first step breaks it: Locust's shape stops the
    ramp there; told not to stop, it climbs every step."""
    import workshop.loadtest as loadtest

    monkeypatch.setattr(loadtest, "SLO_P50_MS", 0.001)
    monkeypatch.setattr(loadtest, "SLO_P99_MS", 0.001)
    target = LocalTarget(log_dir=tmp_path / "logs")
    try:
        target.deploy_wine(model_dir)
        result = target.run_load_test(run_time_s=3 * 3 + 4, results_dir=tmp_path, step_load=True, step_users=2,
                                      step_seconds=3, steps=3, stop_when_broken=stop_when_broken,
                                      think_time_s=0.05, stop_timeout_s=2)
    finally:
        target.teardown()
    table = p99_by_users(result)
    assert table.index.max() == (2 if stop_when_broken else 6), table
    assert breaking_load(table) == 2


class _NoServices:
    """The kube-proxy stand-in for a pod that names no Service."""

    def address(self, namespace: str, name: str, port: int) -> None:
        return None

    def rewrite_url(self, namespace: str, value: str) -> None:
        return None


@pytest.mark.slow
def test_the_standin_cluster_runs_the_jobs_locust_with_the_locustfile_baked_into_the_image(tmp_path: Path):
    """The master Job's pod on the stand-in node (tests/standin), its image holding what the Dockerfile's locust
    stage puts in: the locustfile at the image's LOCUST_LOCUSTFILE, and nothing in the pod naming another. Locust
    runs alone (no workers: ``--master`` dropped) for two seconds against a closed port; the CSVs in its log
    are the locustfile's requests, all failed."""
    from kubernetes import client

    from tests.standin.__main__ import StandinServer
    from tests.standin.node import Image, Node, forever
    from tests.test_dockerfile import dockerfile
    from workshop.k8s.loadtest import parse_log

    image_env = dockerfile().env("locust")
    root = tmp_path / "image"
    baked = root / image_env["LOCUST_LOCUSTFILE"].lstrip("/")
    baked.parent.mkdir(parents=True)
    baked.write_bytes(locustfile().read_bytes())  # COPY load_tests/locustfile.py
    env = {"PATH": "/opt/venv/bin:/usr/bin:/bin", "LOCUST_LOCUSTFILE": image_env["LOCUST_LOCUSTFILE"]}
    tag, image_id = "wine-locust:standin", "sha256:locust-standin"
    (tmp_path / "images.json").write_text(json.dumps({tag: image_id}))

    job = next(d for d in yaml.safe_load_all((K8S / "master-job.yaml").read_text()) if d["kind"] == "Job")
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    container["image"] = tag
    container["args"] = [arg for arg in container["args"] if arg != "--master"]
    closed = free_port()
    settings = {"LOCUST_HOST": f"http://127.0.0.1:{closed}", "LOCUST_USERS": "2", "LOCUST_SPAWN_RATE": "2",
                "LOCUST_RUN_TIME": "2s", "LOCUST_STOP_TIMEOUT": "1s", "LOCUST_THINK_TIME": "0.05"}
    with StandinServer() as server:
        configuration = client.Configuration()
        configuration.host = server.url
        node = Node(client.ApiClient(configuration), tmp_path, _NoServices())
        server.handler.node = node
        node.images._unpacked[image_id] = Image(tag, image_id, env, [], ["locust"], "/srv", root)
        stop = threading.Event()
        forever(node.sync, stop, 0.1, "kubelet")
        try:
            node.core.create_namespaced_config_map(
                "load", {"metadata": {"name": "locust-settings", "namespace": "load"}, "data": settings})
            node.core.create_namespaced_pod("load", {"metadata": {"name": "locust-master-1", "namespace": "load",
                                                                  **pod["metadata"]}, "spec": pod["spec"]})
            phase = wait_for(lambda: node.core.read_namespaced_pod("locust-master-1", "load").status.phase
                             in ("Succeeded", "Failed"), timeout=120, what="the Job's pod to end", interval=0.2)
            assert phase
            log = node.core.read_namespaced_pod_log("locust-master-1", "load")
        finally:
            stop.set()
            node.stop()
    assert parse_log(log, tmp_path / "results") == 1, log[-3000:]
    stats = pd.read_csv(tmp_path / "results" / "locust_stats.csv").set_index("Name")
    assert {"/predict", "/predict/batch"} <= set(stats.index), stats.index.tolist()
    assert stats.loc["Aggregated", "Request Count"] == stats.loc["Aggregated", "Failure Count"] > 0
