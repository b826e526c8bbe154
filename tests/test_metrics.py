"""GET /metrics: what the dashboards and alerts read, checked after real traffic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.wine.features import FEATURE_NAMES
from app.wine.metrics import KNOWN_FIELDS
from app.wine.schemas import EXAMPLE_WINE


@pytest.fixture(scope="module")
def card(model_dir: Path) -> dict:
    return json.loads((model_dir / "model_card.json").read_text())


@pytest.fixture
def traffic(client: TestClient, wines: list[dict]) -> dict[str, list[float]]:
    """Each wine once through /predict, then all of them in one batch; the returned qualities by colour."""
    qualities: dict[str, list[float]] = {"red": [], "white": []}
    for wine in wines:
        response = client.post("/predict", json=wine)
        assert response.status_code == 200, response.text
        qualities[wine["color"]].append(response.json()["quality"])
    response = client.post("/predict/batch", json={"instances": wines})
    assert response.status_code == 200, response.text
    for wine, prediction in zip(wines, response.json()["predictions"], strict=True):
        qualities[wine["color"]].append(prediction["quality"])
    return qualities


def test_predicted_quality_histogram_per_colour(client, traffic, scrape) -> None:
    """Every predicted row is observed once, under its colour, with its predicted value."""
    metrics = scrape(client)
    for color, qualities in traffic.items():
        assert metrics.value("wine_predicted_quality_count", color=color) == len(qualities)
        assert metrics.value("wine_predicted_quality_sum", color=color) == pytest.approx(sum(qualities))
        assert metrics.value("wine_predicted_quality_bucket", color=color, le="+Inf") == len(qualities)
    assert traffic["red"] and traffic["white"]


def test_inference_time_has_sub_millisecond_buckets(client, traffic, wines, scrape) -> None:
    """Model time is a histogram fine enough for a model that answers in microseconds; a batch is one call."""
    metrics = scrape(client)
    bounds = {float(s.labels["le"]) for s in metrics.samples if s.name == "wine_model_inference_seconds_bucket"}
    assert min(bounds) <= 0.0001
    assert metrics.value("wine_model_inference_seconds_count", endpoint="predict") == len(wines)
    assert metrics.value("wine_model_inference_seconds_count", endpoint="predict_batch") == 1


def test_model_info_names_the_served_version(client, card, scrape) -> None:
    """wine_model_info is 1 for the version being served, and there is only one such series."""
    metrics = scrape(client)
    assert metrics.value("wine_model_info", version=card["version"], algorithm=card["algorithm"]) == 1
    assert metrics.label_values("wine_model_info", "version") == {card["version"]}


def test_rejected_inputs_are_counted_by_reason_and_field(client, scrape) -> None:
    """Each refused request counts under its reason and field; 413 and 415 count too."""
    nan_alcohol = json.dumps({**EXAMPLE_WINE, "alcohol": "X"}).replace('"X"', "NaN")
    assert client.post("/predict", content=nan_alcohol, headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/predict", json={**EXAMPLE_WINE, "ph": 15.0}).status_code == 422
    assert client.post("/predict", json={**EXAMPLE_WINE, "ph": 16.0}).status_code == 422
    assert client.post("/predict", content="{", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/predict", content="x", headers={"content-type": "text/plain"}).status_code == 415
    big = json.dumps({"instances": [EXAMPLE_WINE] * 5000})
    assert client.post("/predict/batch", content=big, headers={"content-type": "application/json"}).status_code == 413

    metrics = scrape(client)
    name = "wine_rejected_inputs_total"
    assert metrics.value(name, reason="finite_number", field="alcohol") == 1
    assert metrics.value(name, reason="less_than_equal", field="ph") == 2
    assert metrics.value(name, reason="json_invalid", field="body") == 1
    assert metrics.value(name, reason="unsupported_media_type", field="body") == 1
    assert metrics.value(name, reason="payload_too_large", field="body") == 1
    # Nothing refused reached the model.
    assert metrics.value("wine_input_rows_total", color="red") == 0


def test_attacker_chosen_field_names_do_not_create_series(client, scrape) -> None:
    """Unknown field names are counted as "other", so a client cannot mint time series."""
    for i in range(3):
        response = client.post("/predict", json={**EXAMPLE_WINE, f"attacker_field_{i}": 1})
        assert response.status_code == 422
    response = client.post("/predict/batch", json={"instances": [{**EXAMPLE_WINE, "attacker_field_x": 1}]})
    assert response.status_code == 422

    metrics = scrape(client)
    assert metrics.value("wine_rejected_inputs_total", reason="extra_forbidden", field="other") == 4
    assert metrics.label_values("wine_rejected_inputs_total", "field") <= KNOWN_FIELDS | {"other"}


def test_input_sums_give_the_mean_of_sent_features(client, traffic, wines, scrape) -> None:
    """sum / rows per feature is the mean of what was sent: the drift panel's numerator."""
    metrics = scrape(client)
    rows = {color: metrics.value("wine_input_rows_total", color=color) for color in ("red", "white")}
    assert rows == {color: len(qualities) for color, qualities in traffic.items()}
    sent = [wine for wine in wines for _ in range(2)]  # each wine alone, then in the batch
    for feature in FEATURE_NAMES:
        mean = metrics.value("wine_input_feature_sum_total", feature=feature) / sum(rows.values())
        # The model sees float32, so the sums are of float32 values.
        expected = np.mean([np.float32(wine[feature]) for wine in sent], dtype=np.float64)
        assert mean == pytest.approx(expected, rel=1e-6), feature


def test_training_means_match_the_model_card(client, card, scrape) -> None:
    """The drift baseline exposed for dashboards is the model card's training statistics."""
    metrics = scrape(client)
    for feature in card["features"]:
        if feature["name"] in FEATURE_NAMES:
            got = metrics.value("wine_training_feature_mean", feature=feature["name"])
            assert got == pytest.approx(feature["train_mean"]), feature["name"]
    assert metrics.value("wine_training_prediction_mean") == pytest.approx(card["target"]["train_prediction_mean"])


def test_http_requests_are_counted(client, scrape) -> None:
    """The HTTP instrumentation counts requests by handler, method and status class, errors included."""
    for _ in range(2):
        assert client.post("/predict", json=EXAMPLE_WINE).status_code == 200
    assert client.post("/predict", json={**EXAMPLE_WINE, "ph": 15.0}).status_code == 422
    assert client.get("/health").status_code == 200

    metrics = scrape(client)
    assert metrics.value("http_requests_total", handler="/predict", method="POST", status="2xx") == 2
    assert metrics.value("http_requests_total", handler="/predict", method="POST", status="4xx") == 1
    assert metrics.value("http_requests_total", handler="/health", method="GET", status="2xx") == 1
    assert "/metrics" not in metrics.label_values("http_requests_total", "handler")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process metrics need /proc (Linux)")
def test_process_metrics_are_exposed(client, scrape) -> None:
    """The memory panel reads process_resident_memory_bytes from the app's own registry."""
    assert scrape(client).value("process_resident_memory_bytes") > 0


def test_in_flight_requests_are_counted_on_the_apps_own_registry() -> None:
    """The in-flight gauge is 1 while a request is served, 0 after, and lives in this app's registry only."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from app.wine.metrics import InFlightRequests, WineMetrics

    metrics = WineMetrics()

    async def seen_from_inside(request):
        return JSONResponse({"in_flight": metrics.registry.get_sample_value("http_requests_in_flight")})

    app = Starlette(routes=[Route("/work", seen_from_inside), Route("/metrics", seen_from_inside)])
    app.add_middleware(InFlightRequests, metrics=metrics)
    with TestClient(app) as client:
        assert client.get("/work").json() == {"in_flight": 1.0}
        assert client.get("/metrics").json() == {"in_flight": 0.0}  # scrapes are not traffic
    assert metrics.registry.get_sample_value("http_requests_in_flight") == 0
