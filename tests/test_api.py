"""The HTTP API: probes, predictions that match the model, and a 4xx (never a 500) for any bad input."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from app.wine.api import create_app
from app.wine.config import Settings
from app.wine.features import FEATURE_NAMES, FEATURES
from app.wine.schemas import EXAMPLE_WINE

ERROR_KEYS = {"error", "message", "details"}


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Callable[[list[dict]], np.ndarray]:
    """Predictions straight from onnxruntime for API-shaped wines, without the service's code."""
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(wines: list[dict]) -> np.ndarray:
        X = np.array([[w[f] for f in FEATURE_NAMES] + [float(w["color"] == "red")] for w in wines], np.float32)
        (output,) = session.run(None, {name: X})
        return np.clip(np.asarray(output, dtype=np.float64).reshape(-1), 0, 10)

    return predict


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """``make_client(settings)``: a started app with other settings; closed at the end of the test."""
    with ExitStack() as stack:
        yield lambda settings: stack.enter_context(TestClient(create_app(settings)))


def assert_error(response, status: int, kind: str) -> dict:
    """Every error is JSON of one shape, with the status and kind expected."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == kind
    assert body["message"]
    return body


# --- probes and the model card ----------------------------------------------------------------------


def test_health_is_ok(client: TestClient) -> None:
    """Liveness answers 200 as soon as the process runs."""
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_names_the_loaded_model(client: TestClient, model_dir: Path) -> None:
    """Readiness is 200 with the served model version once the model is loaded."""
    card = json.loads((model_dir / "model_card.json").read_text())
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "model_version": card["version"]}


def test_not_ready_without_a_model(make_client, tmp_path: Path) -> None:
    """An empty model folder leaves the process alive but not ready, and says how to get a model."""
    client = make_client(Settings(model_dir=tmp_path))
    assert client.get("/health").status_code == 200
    body = assert_error(client.get("/ready"), 503, "model_not_ready")
    assert "model_card.json is missing" in body["message"]
    assert "python -m training" in body["message"]


def corrupt_model_file(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(b"this is not an onnx model")


def corrupt_model_file_and_checksum(folder: Path) -> None:
    corrupt_model_file(folder)
    card = json.loads((folder / "model_card.json").read_text())
    del card["model_sha256"]
    (folder / "model_card.json").write_text(json.dumps(card))


def corrupt_card(folder: Path) -> None:
    (folder / "model_card.json").write_text("{not json")


def delete_model_file(folder: Path) -> None:
    (folder / "model.onnx").unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(corrupt_model_file, "does not match the checksum in its model card", id="model-bytes-changed"),
        pytest.param(corrupt_model_file_and_checksum, "cannot load the model", id="model-not-onnx"),
        pytest.param(corrupt_card, "JSONDecodeError", id="card-not-json"),
        pytest.param(delete_model_file, "model.onnx is missing", id="model-file-missing"),
    ],
)
def test_not_ready_with_a_broken_model(make_client, model_copy: Path, damage, reason: str) -> None:
    """A corrupt artifact gives a 503 whose message says what is wrong, not a crash loop."""
    damage(model_copy)
    client = make_client(Settings(model_dir=model_copy))
    assert client.get("/health").status_code == 200
    body = assert_error(client.get("/ready"), 503, "model_not_ready")
    assert reason in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/predict", EXAMPLE_WINE, id="predict"),
        pytest.param("POST", "/predict/batch", {"instances": [EXAMPLE_WINE]}, id="batch"),
        pytest.param("GET", "/model", None, id="model-card"),
    ],
)
def test_model_routes_answer_503_without_a_model(make_client, tmp_path: Path, method: str, path: str, body) -> None:
    """Without a model, a valid request gets a JSON 503 with the reason, never a 500."""
    client = make_client(Settings(model_dir=tmp_path))
    response = client.request(method, path, json=body)
    message = assert_error(response, 503, "model_not_ready")["message"]
    assert "is missing" in message


def test_model_card_is_served(client: TestClient, model_dir: Path) -> None:
    """GET /model returns the model card written by training."""
    response = client.get("/model")
    assert response.status_code == 200
    assert response.json() == json.loads((model_dir / "model_card.json").read_text())


# --- predictions ------------------------------------------------------------------------------------


def test_predict_matches_onnxruntime(client: TestClient, wines: list[dict], reference, model_dir: Path) -> None:
    """Each prediction is a 0-10 quality equal to what the ONNX model gives for that row."""
    version = json.loads((model_dir / "model_card.json").read_text())["version"]
    expected = reference(wines)
    for wine, quality in zip(wines, expected, strict=True):
        response = client.post("/predict", json=wine)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == version
        assert 0.0 <= body["quality"] <= 10.0
        assert body["quality"] == pytest.approx(quality, abs=1e-4)


def test_batch_keeps_request_order(client: TestClient, wines: list[dict]) -> None:
    """Batch prediction i is the prediction for instance i, as a single /predict gives it."""
    singles = [client.post("/predict", json=wine).json()["quality"] for wine in wines]
    assert len({round(q, 4) for q in singles}) > 1, "the wines must have distinct predictions to test the order"
    for batch in (wines, wines[::-1]):
        response = client.post("/predict/batch", json={"instances": batch})
        assert response.status_code == 200, response.text
        got = [p["quality"] for p in response.json()["predictions"]]
        want = singles if batch is wines else singles[::-1]
        assert got == pytest.approx(want, abs=1e-4)


def test_max_batch_size_is_enforced_and_documented(make_client, model_dir: Path) -> None:
    """WINE_MAX_BATCH_SIZE is the limit the API applies and the one its OpenAPI document states."""
    client = make_client(Settings(model_dir=model_dir, max_batch_size=3))
    assert client.post("/predict/batch", json={"instances": [EXAMPLE_WINE] * 3}).status_code == 200
    body = assert_error(client.post("/predict/batch", json={"instances": [EXAMPLE_WINE] * 4}), 422, "validation_error")
    assert [(d["field"], d["type"]) for d in body["details"]] == [("instances", "too_long")]
    assert "instances" in body["message"]

    schema = client.get("/openapi.json").json()["components"]["schemas"]["BatchPredictionRequest"]
    assert schema["properties"]["instances"]["maxItems"] == 3
    assert schema["properties"]["instances"]["minItems"] == 1


# --- bad input: each is a 4xx naming the field and the reason ---------------------------------------


def raw(wine: dict, field: str, token: str) -> str:
    """``wine`` as JSON text with ``field`` set to a raw token such as NaN, which httpx refuses to send."""
    return json.dumps({**wine, field: "__RAW__"}).replace('"__RAW__"', token)


def wine_with(**changes: Any) -> dict:
    return {**EXAMPLE_WINE, **changes}


def wine_without(field: str) -> dict:
    return {k: v for k, v in EXAMPLE_WINE.items() if k != field}


BAD_WINES = [
    # (id, body as JSON text, field, pydantic error type)
    ("nan", raw(EXAMPLE_WINE, "alcohol", "NaN"), "alcohol", "finite_number"),
    ("infinity", raw(EXAMPLE_WINE, "density", "Infinity"), "density", "finite_number"),
    ("minus-infinity", raw(EXAMPLE_WINE, "ph", "-Infinity"), "ph", "finite_number"),
    ("overflow-to-infinity", raw(EXAMPLE_WINE, "chlorides", "1e999"), "chlorides", "finite_number"),
    ("string-number", json.dumps(wine_with(alcohol="9.4")), "alcohol", "float_type"),
    ("boolean", json.dumps(wine_with(sulphates=True)), "sulphates", "float_type"),
    ("null", json.dumps(wine_with(citric_acid=None)), "citric_acid", "float_type"),
    ("missing-field", json.dumps(wine_without("residual_sugar")), "residual_sugar", "missing"),
    ("extra-field", json.dumps(wine_with(vintage=2009)), "vintage", "extra_forbidden"),
    ("unknown-color", json.dumps(wine_with(color="rose")), "color", "literal_error"),
    ("color-wrong-case", json.dumps(wine_with(color="RED")), "color", "literal_error"),
    ("negative", json.dumps(wine_with(fixed_acidity=-1.0)), "fixed_acidity", "greater_than_equal"),
    ("ph-15", json.dumps(wine_with(ph=15.0)), "ph", "less_than_equal"),
    ("density-5", json.dumps(wine_with(density=5.0)), "density", "less_than_equal"),
    ("alcohol-over-25", json.dumps(wine_with(alcohol=96.0)), "alcohol", "less_than_equal"),
    (
        "free-over-total-so2",
        json.dumps(wine_with(free_sulfur_dioxide=50.0, total_sulfur_dioxide=34.0)),
        "total_sulfur_dioxide",
        "free_exceeds_total",
    ),
    ("top-level-array", json.dumps([EXAMPLE_WINE]), "body", "model_attributes_type"),
    ("top-level-number", "7.4", "body", "model_attributes_type"),
    ("top-level-string", '"wine"', "body", "model_attributes_type"),
    ("empty-body", "", "body", "missing"),
    ("malformed-json", '{"alcohol": 9.4,', "body", "json_invalid"),
    ("not-utf8", b'{"color": "r\xe9d"}', "body", "json_invalid"),
    ("nested-too-deep", "[" * 100_000 + "]" * 100_000, "body", "json_invalid"),
]

BAD_BATCHES = [
    ("empty-batch", json.dumps({"instances": []}), "instances", "too_short"),
    ("missing-instances", json.dumps({}), "instances", "missing"),
    ("instances-not-a-list", json.dumps({"instances": EXAMPLE_WINE}), "instances", "list_type"),
    ("extra-top-level-field", json.dumps({"instances": [EXAMPLE_WINE], "k": 1}), "k", "extra_forbidden"),
    (
        "nan-in-second-wine",
        json.dumps({"instances": [EXAMPLE_WINE, "__RAW__"]}).replace('"__RAW__"', raw(EXAMPLE_WINE, "alcohol", "NaN")),
        "instances[1].alcohol",
        "finite_number",
    ),
    ("wine-not-an-object", json.dumps({"instances": [EXAMPLE_WINE, 3]}), "instances[1]", "model_attributes_type"),
    ("top-level-array", json.dumps([EXAMPLE_WINE]), "body", "model_attributes_type"),
    ("malformed-json", '{"instances": [', "body", "json_invalid"),
]


@pytest.mark.parametrize(
    ("path", "body", "field", "error_type"),
    [pytest.param("/predict", *case[1:], id=f"predict-{case[0]}") for case in BAD_WINES]
    + [pytest.param("/predict/batch", *case[1:], id=f"batch-{case[0]}") for case in BAD_BATCHES],
)
def test_bad_input_is_a_422_naming_field_and_reason(
    client: TestClient, path: str, body: str | bytes, field: str, error_type: str
) -> None:
    """Invalid JSON or values get a 422 whose details name the field and why, never a 500."""
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    details = assert_error(response, 422, "validation_error")["details"]
    matching = [d for d in details if d["field"] == field and d["type"] == error_type]
    assert matching, f"no detail for {field} ({error_type}) in {details}"
    assert matching[0]["reason"]
    assert field in response.json()["message"]


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        pytest.param("text/plain", "text/plain", id="text"),
        pytest.param("application/x-www-form-urlencoded", "application/x-www-form-urlencoded", id="form"),
        pytest.param("application/xml", "application/xml", id="xml"),
        pytest.param(None, "none", id="no-content-type"),
    ],
)
@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_wrong_content_type_is_a_415(client: TestClient, path: str, content_type: str | None, shown: str) -> None:
    """A body that is not declared as JSON is refused before it is parsed, saying what was sent."""
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(path, content=json.dumps(EXAMPLE_WINE).encode(), headers=headers)
    body = assert_error(response, 415, "unsupported_media_type")
    assert shown in body["message"]


def test_json_with_charset_is_accepted(client: TestClient) -> None:
    """`application/json; charset=utf-8` is JSON too."""
    response = client.post(
        "/predict", content=json.dumps(EXAMPLE_WINE), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200, response.text


@pytest.fixture
def small_body_client(make_client, model_dir: Path) -> TestClient:
    """A service that takes bodies up to 1024 bytes (batches of up to 4 wines)."""
    return make_client(Settings(model_dir=model_dir, max_batch_size=4, max_body_bytes=1024))


def chunks(instances: int) -> Iterator[bytes]:
    """A batch body streamed in pieces, so the client sends it chunked without a Content-Length."""
    yield b'{"instances": ['
    for i in range(instances):
        yield (b", " if i else b"") + json.dumps(EXAMPLE_WINE).encode()
    yield b"]}"


def test_body_over_the_limit_with_content_length_is_a_413(small_body_client: TestClient) -> None:
    """A body announced larger than WINE_MAX_BODY_BYTES is refused with a 413 that names the setting."""
    body = json.dumps({"instances": [EXAMPLE_WINE] * 5}).encode()
    assert len(body) > 1024
    response = small_body_client.post("/predict/batch", content=body, headers={"content-type": "application/json"})
    assert "WINE_MAX_BODY_BYTES" in assert_error(response, 413, "payload_too_large")["message"]


def test_chunked_body_over_the_limit_is_a_413(small_body_client: TestClient) -> None:
    """A streamed body without Content-Length is cut off at the limit too, not read to the end."""
    response = small_body_client.post(
        "/predict/batch", content=chunks(50), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "WINE_MAX_BODY_BYTES" in assert_error(response, 413, "payload_too_large")["message"]


def test_chunked_body_under_the_limit_is_served(small_body_client: TestClient) -> None:
    """The body guard does not break a streamed request that fits."""
    response = small_body_client.post(
        "/predict/batch", content=chunks(3), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3


def test_unknown_route_and_method_are_json_errors(client: TestClient) -> None:
    """Clients get the same error shape for a wrong URL or verb as for bad input."""
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


# --- several apps, and the OpenAPI document ---------------------------------------------------------


def test_two_apps_in_one_process_do_not_clash(make_client, settings: Settings, scrape) -> None:
    """Each app has its own metrics registry: creating a second never fails and counts stay apart."""
    first, second = make_client(settings), make_client(settings)
    assert first.app.state.metrics.registry is not second.app.state.metrics.registry
    assert first.post("/predict", json=EXAMPLE_WINE).status_code == 200
    assert scrape(first).value("wine_input_rows_total", color="red") == 1
    assert scrape(second).value("wine_input_rows_total", color="red") == 0
    assert second.post("/predict", json=EXAMPLE_WINE).status_code == 200
    assert scrape(second).value("wine_input_rows_total", color="red") == 1


@pytest.fixture(scope="module")
def openapi(model_dir: Path) -> dict:
    with TestClient(create_app(Settings(model_dir=model_dir))) as client:
        return client.get("/openapi.json").json()


def test_openapi_documents_every_feature(openapi: dict) -> None:
    """Each measurement states its physical bounds, its unit and an example inside the bounds."""
    properties = openapi["components"]["schemas"]["WineInput"]["properties"]
    assert set(properties) == {*FEATURE_NAMES, "color"}
    for feature in FEATURES:
        schema = properties[feature.name]
        assert schema["minimum"] == feature.minimum, feature.name
        assert schema["maximum"] == feature.maximum, feature.name
        assert f"Unit: {feature.unit}" in schema["description"], feature.name
        assert schema["examples"], feature.name
        assert all(feature.minimum <= example <= feature.maximum for example in schema["examples"]), feature.name
    assert properties["color"]["enum"] == ["red", "white"]
    assert set(openapi["components"]["schemas"]["WineInput"]["required"]) == {*FEATURE_NAMES, "color"}


def test_openapi_documents_the_error_responses(openapi: dict) -> None:
    """The predict routes document their error statuses with the one error shape."""
    for path in ("/predict", "/predict/batch"):
        responses = openapi["paths"][path]["post"]["responses"]
        for status in ("413", "415", "422", "503"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"] == "#/components/schemas/ErrorResponse", (path, status)


def test_openapi_examples_are_accepted(client: TestClient, openapi: dict) -> None:
    """The examples a learner copies from /docs are valid requests."""
    schemas = openapi["components"]["schemas"]
    for path, name in (("/predict", "WineInput"), ("/predict/batch", "BatchPredictionRequest")):
        for example in schemas[name]["examples"]:
            response = client.post(path, json=example)
            assert response.status_code == 200, (path, response.text)
