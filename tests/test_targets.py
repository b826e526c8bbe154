"""The local target runs the real service under uvicorn; the client talks to it over HTTP."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time

import httpx
import pytest
import yaml

from workshop.client import ServiceError, WineClient, metrics_frame
from workshop.process import ManagedProcess, ProcessError, free_port
from workshop.prometheus import INSTALL_HINT, LocalPrometheus, prometheus_config, query
from workshop.targets import Deployment, RolloutFailedError, TargetUnavailableError, Timings, duration_s, get_target
from workshop.waiting import wait_for

pytestmark = pytest.mark.slow

WINE = {
    "fixed_acidity": 7.4, "volatile_acidity": 0.7, "citric_acid": 0.0, "residual_sugar": 1.9,
    "chlorides": 0.076, "free_sulfur_dioxide": 11.0, "total_sulfur_dioxide": 34.0, "density": 0.9978,
    "ph": 3.51, "sulphates": 0.56, "alcohol": 9.4, "color": "red",
}


@pytest.fixture(scope="module")
def local_service(model_dir):
    target = get_target("local")
    deployment = target.deploy_wine(model_dir, max_batch_size="50", max_body_bytes="100000")
    yield deployment
    target.teardown()


def test_deployed_service_predicts_and_reports_its_model(local_service, model_dir):
    client = WineClient(local_service.url)
    card = json.loads((model_dir / "model_card.json").read_text())
    assert client.ready()
    answer = client.predict(WINE)
    assert 0 <= answer["quality"] <= 10
    assert answer["model_version"] == card["version"] == client.model_card()["version"]
    batch = client.predict_batch([WINE, {**WINE, "alcohol": 13.0}])
    assert len(batch["predictions"]) == 2
    assert batch["predictions"][0]["quality"] == pytest.approx(answer["quality"])


def test_settings_reach_the_deployed_service(local_service):
    """deploy_wine(max_batch_size=...) is the service's WINE_MAX_BATCH_SIZE."""
    with pytest.raises(ServiceError) as refused:
        WineClient(local_service.url).predict_batch([WINE] * 51)
    assert refused.value.status_code == 422
    assert refused.value.body["details"][0]["field"] == "instances"


def test_rejections_table_and_metrics_read_over_http(local_service):
    client = WineClient(local_service.url)
    table = client.rejections({
        "string": ("/predict", json.dumps({**WINE, "alcohol": "high"})),
        "form": ("/predict", "alcohol=9", "text/plain"),
    })
    assert table.loc["string", ["status", "field"]].tolist() == [422, "alcohol"]
    assert table.loc["form", ["status", "error"]].tolist() == [415, "unsupported_media_type"]
    rejected = client.metrics("wine_rejected_inputs_total")
    reasons = {row["reason"] for row in rejected["labels"]}
    assert {"float_type", "unsupported_media_type"} <= reasons
    assert not metrics_frame(httpx.get(f"{local_service.url}/metrics").text)["name"].str.endswith("_created").any()


def test_teardown_stops_the_service_and_can_run_twice(model_dir):
    target = get_target("local")
    deployment = target.deploy_wine(model_dir)
    assert deployment.running
    target.teardown()
    assert not deployment.process.running and not deployment.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{deployment.url}/health", timeout=2)
    target.teardown()


def test_a_picked_port_that_another_program_takes_first_is_replaced(model_dir, monkeypatch):
    """free_port() can only say a port is free *now*: one taken before the service binds it is no failure."""
    import socket

    from workshop import process

    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        picks = iter([taken, free_port()])
        monkeypatch.setattr(process, "free_port", lambda: next(picks))
        target = get_target("local")
        try:
            deployment = target.deploy_wine(model_dir)
            assert deployment.url != f"http://127.0.0.1:{taken}" and WineClient(deployment.url).ready()
            assert [d.running for d in target.deployments] == [False, True]
        finally:
            target.teardown()


def test_deploy_without_a_model_fails_with_the_services_reason(tmp_path):
    target = get_target("local")
    with pytest.raises(ProcessError, match=r"HTTP 503: no model at .*train one with"):
        target.deploy_wine(tmp_path, timeout=5)
    assert all(not d.process.running for d in target.deployments)


def test_deploy_without_waiting_for_readiness_shows_an_unready_service(tmp_path):
    target = get_target("local")
    deployment = target.deploy_wine(tmp_path, wait_ready=False)
    try:
        assert httpx.get(f"{deployment.url}/health").status_code == 200
        assert not WineClient(deployment.url).ready()
    finally:
        target.teardown()


def test_the_local_timings_follow_the_local_prometheus(monkeypatch):
    timings = get_target("local").timings
    assert timings.scrape_interval_s == duration_s(LocalPrometheus.interval) == 1
    assert (timings.rollout_timeout_s, timings.failed_rollout_timeout_s, timings.alert_timeout_s) == (60, 10, 90)
    assert (timings.rate_window, timings.scrape_wait_s) == ("4s", 3)
    monkeypatch.setattr(LocalPrometheus, "interval", "2s")
    assert get_target("local").timings.rate_window == "8s", "read from the local Prometheus, not a second literal"


def test_rate_windows_span_four_scrapes_and_waits_three():
    assert Timings(15, 300, 90, 300).rate_window == "60s" and Timings(15, 300, 90, 300).scrape_wait_s == 45
    assert Timings(0.5, 1, 1, 1).rate_window == "2s" and Timings(2.5, 1, 1, 1).rate_window == "10s"
    assert [duration_s(t) for t in ("15s", "1m30s", "500ms", "2h")] == [15, 90, 0.5, 7200]
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        duration_s("15 seconds")


def _static_replica(tmp_path, name: str, files: dict[str, str]) -> Deployment:
    """A replica of ``wine`` that answers ``files`` (``metrics``, ``ready``) and 404 for the rest."""
    folder = tmp_path / name
    folder.mkdir()
    for path, text in files.items():
        (folder / path).write_text(text)
    port = free_port()
    process = ManagedProcess(name, [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                    "--directory", str(folder)]).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_for_http(f"{url}/", timeout=30)
    return Deployment("wine", url, process)


def _replica_metrics(predictions: int) -> str:
    return (f"# TYPE wine_predictions_total counter\nwine_predictions_total{{endpoint=\"/predict\"}} {predictions}\n"
            "# TYPE wine_model_info gauge\nwine_model_info{version=\"ridge-1\"} 1\n")


def test_local_metrics_add_up_every_replica_and_describe_lists_them(tmp_path):
    target = get_target("local")
    try:
        target.deployments += [_static_replica(tmp_path, "a", {"metrics": _replica_metrics(3), "ready": "ok"}),
                               _static_replica(tmp_path, "b", {"metrics": _replica_metrics(5)})]
        frame = target.metrics("wine")
        assert list(frame.columns) == ["name", "labels", "value"]
        assert dict(zip(frame["name"], frame["value"], strict=True)) == {
            "wine_predictions_total": 8, "wine_model_info": 1}, "counters add up, gauges are every replica's own"
        assert target.metrics("wine", prefix="wine_model")["name"].tolist() == ["wine_model_info"]
        replicas = target.describe("wine")["replicas"]
        assert list(replicas.columns) == ["service", "url", "pid", "ready"]
        assert replicas["ready"].tolist() == [200, 404]
        assert replicas["pid"].tolist() == [d.process.pid for d in target.deployments]
        none = target.describe("llm")["replicas"]
        assert none.empty and list(none.columns) == ["service", "url", "pid", "ready"]
        with pytest.raises(ValueError, match="deploy it first"):
            target.metrics("llm")
    finally:
        target.teardown()


def test_there_is_no_grafana_locally():
    assert get_target("local").grafana() is None


def test_an_unknown_target_lists_the_known_ones():
    with pytest.raises(TargetUnavailableError, match="Unknown target 'docker-swarm'; choose one of local, kubernetes"):
        get_target("docker-swarm")


@pytest.fixture
def no_cluster_env(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)


def _kubeconfig(path, server: str, context: str | None = "kind-workshop"):
    config = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": {"server": server}}],
              "users": [{"name": "u", "user": {"token": "t"}}],
              "contexts": [{"name": "kind-workshop", "context": {"cluster": "c", "user": "u"}}]}
    if context:
        config["current-context"] = context
    path.write_text(yaml.safe_dump(config))
    return path


def test_kubernetes_without_a_kubeconfig_says_how_to_get_a_cluster(no_cluster_env, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(TargetUnavailableError, match=r"No kubeconfig at .*absent.*minikube start.*target='local'"):
        get_target("kubernetes")


def test_kubernetes_with_an_unreachable_cluster_says_so_quickly(no_cluster_env, tmp_path):
    config = _kubeconfig(tmp_path / "config", f"https://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(TargetUnavailableError, match=r"API server at https://127.0.0.1:\d+ \(context 'kind-workshop'\) "
                                                     r"does not answer"):
        get_target("kubernetes", namespace="learner-1", kubeconfig=config)
    assert time.monotonic() - started < 30


def test_kubernetes_with_a_kubeconfig_without_context_names_the_file(no_cluster_env, tmp_path):
    config = _kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", context=None)
    with pytest.raises(TargetUnavailableError, match=r"The kubeconfig .*config cannot be used"):
        get_target("kubernetes", kubeconfig=config)


@pytest.mark.parametrize("namespace", ["Wine_Alice", "-wine", "wine-", "a" * 64, ""])
def test_a_namespace_kubernetes_would_refuse_is_refused_before_connecting(namespace):
    with pytest.raises(ValueError, match="cannot name a namespace: use at most 63 lower-case letters"):
        get_target("kubernetes", namespace=namespace)


def test_each_service_is_scraped_as_its_own_job():
    """job="wine" for the wine service (as before), job="llm" for the LLM service: what dashboards select on."""
    config = prometheus_config({"wine": ["http://127.0.0.1:8001", "http://127.0.0.1:8002"],
                                "llm": ["http://127.0.0.1:9001"]})
    jobs = {c["job_name"]: c["static_configs"][0]["targets"] for c in config["scrape_configs"]}
    assert jobs == {"wine": ["127.0.0.1:8001", "127.0.0.1:8002"], "llm": ["127.0.0.1:9001"]}
    legacy = prometheus_config(["http://127.0.0.1:8001"])
    assert [c["job_name"] for c in legacy["scrape_configs"]] == ["wine"]


def _llm_service_or_skip() -> None:
    if importlib.util.find_spec("app.llm.api") is None:
        pytest.skip("the LLM service (app/llm/api.py) is not in this checkout yet")
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("the LLM extra is not installed: pip install -e '.[llm]' (CPU torch, transformers)")


def test_the_llm_service_without_a_model_is_deployed_once_it_is_alive(tmp_path):
    _llm_service_or_skip()
    target = get_target("local", log_dir=tmp_path / "logs")
    try:
        service = target.deploy_llm(tmp_path / "models", timeout=120)
        assert httpx.get(f"{service.url}/health", timeout=5).status_code == 200
        assert httpx.get(f"{service.url}/ready", timeout=5).status_code == 503, "no default model: not ready"
        assert target.scrape_targets() == {"llm": [service.url]}
    finally:
        target.teardown()


def test_the_llm_service_with_a_default_model_is_ready_and_scraped_as_job_llm(model_dir, tmp_path):
    _llm_service_or_skip()
    if shutil.which("prometheus") is None:
        pytest.skip(f"no prometheus binary. {INSTALL_HINT}")
    from workshop.tiny_llm import build_tiny_chat_model

    build_tiny_chat_model(tmp_path / "models" / "tiny-chat")
    target = get_target("local", log_dir=tmp_path / "logs")
    try:
        wine = target.deploy_wine(model_dir)
        llm = target.deploy_llm(tmp_path / "models", default_model="tiny-chat", timeout=180)
        assert httpx.get(f"{llm.url}/ready", timeout=5).status_code == 200
        url = target.start_monitoring()
        up = query(url, "up")
        assert {(row["job"], row["instance"]) for _, row in up.iterrows()} == {
            ("wine", wine.url.removeprefix("http://")), ("llm", llm.url.removeprefix("http://"))}
    finally:
        target.teardown()


def test_a_load_test_needs_a_service_to_aim_at():
    with pytest.raises(ValueError, match=r"deploy_wine\(\) first, or pass host="):
        get_target("local").run_load_test()


def test_scaling_runs_one_ready_process_per_replica_and_back(model_dir):
    target = get_target("local")
    try:
        first = target.deploy_wine(model_dir)
        assert target.scale("wine", 3) == 3
        urls = [replica.url for replica in target.replicas("wine")]
        assert urls[0] == first.url and len(set(urls)) == 3
        assert all(WineClient(url).ready() for url in urls)
        assert target.scrape_targets() == {"wine": urls}, "Prometheus scrapes every replica"
        assert target.scale("wine", 1) == 1
        assert [replica.url for replica in target.replicas("wine")] == [first.url]
        with pytest.raises(ValueError, match="at least 1"):
            target.scale("wine", 0)
        with pytest.raises(ValueError, match="deploy it first"):
            target.scale("llm", 2)
    finally:
        target.teardown()


def test_a_rollout_whose_replica_never_gets_ready_leaves_the_old_one_serving(model_dir, tmp_path):
    target = get_target("local")
    try:
        service = target.deploy_wine(model_dir, max_batch_size="50")
        old_url = service.url
        with pytest.raises(RolloutFailedError) as failed:
            target.roll_out("wine", model_dir=str(tmp_path / "no-model"), timeout=5)
        message = str(failed.value)
        assert "never became ready" in message and "HTTP 503" in message and "old replicas keep serving" in message
        assert service.url == old_url and service.running
        assert WineClient(service.url).predict(WINE)["quality"] > 0
        assert len(target.replicas("wine")) == 1, "the failed replica is stopped"
        assert service.env["WINE_MODEL_DIR"] == str(model_dir.resolve())
    finally:
        target.teardown()


def test_a_new_model_rolls_out_and_the_old_replica_still_answers_whoever_read_its_url_just_before(
        model_dir, model_copy):
    """A request that picked the old URL just before it moved still gets its answer: the old process drains
    (LOCAL_DRAIN_S) before it stops, as a pod's preStop sleep keeps it serving."""
    import threading

    target = get_target("local")
    try:
        service = target.deploy_wine(model_dir)
        old_url, old_process = service.url, service.process
        rolling = threading.Thread(target=target.roll_out_model, args=(model_copy,))
        rolling.start()
        wait_for(lambda: service.url != old_url, 60, "the replica's URL to move to the new process",
                 interval=0.005, retry_on=())
        assert httpx.get(f"{old_url}/ready", timeout=5).status_code == 200, "the old replica drains, then stops"
        rolling.join(timeout=60)
        assert not old_process.running
        assert service.env["WINE_MODEL_DIR"] == str(model_copy.resolve())
        assert WineClient(service.url).predict(WINE)["quality"] > 0
    finally:
        target.teardown()


def test_a_successful_rollout_replaces_the_replica_with_the_new_settings(model_dir):
    target = get_target("local")
    try:
        service = target.deploy_wine(model_dir)
        old_process = service.process
        [url] = target.roll_out("wine", max_batch_size="2", timeout=30)
        assert url == service.url and not old_process.running
        too_many = WineClient(url).post_raw("/predict/batch", json.dumps({"instances": [WINE] * 3}))
        assert too_many.status_code == 422 and service.env["WINE_MAX_BATCH_SIZE"] == "2"
    finally:
        target.teardown()
