"""The local target runs the real service under uvicorn; the client talks to it over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from workshop.client import ServiceError, WineClient, metrics_frame
from workshop.process import ProcessError
from workshop.targets import TargetUnavailableError, get_target

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
    target.teardown()
    assert not deployment.process.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{deployment.url}/health", timeout=2)
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


@pytest.mark.parametrize(("name", "message"), [
    ("kubernetes", "not part of this version"),
    ("docker-swarm", "Unknown target 'docker-swarm'; choose one of local, kubernetes"),
])
def test_unavailable_targets_say_what_to_do(name, message):
    with pytest.raises(TargetUnavailableError, match=message):
        get_target(name)
