"""One reader of both services' answers: a refusal is one error type with the status and the JSON body, and a
``/metrics`` sample means the same in the wine client's frames, the LLM client's series and the targets' sums;
the clients' kept connections never outlive the services' idle timeout."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from app.common.server import ServerSettings
from tests.conftest import PROJECT_ROOT
from tests.http_stand_ins import LaggingForward
from workshop import client as wine_client
from workshop import llm_client
from workshop.exceptions import ServiceError
from workshop.process import ManagedProcess, free_port
from workshop.service_client import (
    KEEPALIVE_EXPIRY_S,
    combined_metrics_frame,
    http_client,
    metrics_by_series,
    metrics_frame,
    read_json,
)

METRICS = """\
# HELP llm_completions_total Completions by outcome.
# TYPE llm_completions_total counter
llm_completions_total{outcome="ok"} 3.0
llm_completions_total{outcome="invalid"} 1.0
llm_completions_created{outcome="ok"} 1.7e9
# HELP llm_queue_depth Requests waiting.
# TYPE llm_queue_depth gauge
llm_queue_depth 2.0
# HELP llm_latency_seconds Latency.
# TYPE llm_latency_seconds histogram
llm_latency_seconds_bucket{le="0.5",handler="/completion"} 1.0
llm_latency_seconds_bucket{le="+Inf",handler="/completion"} 2.0
llm_latency_seconds_count{handler="/completion"} 2.0
llm_latency_seconds_sum{handler="/completion"} 1.25
"""


def test_a_refusal_from_either_service_is_one_error_type_with_status_and_body() -> None:
    body = {"error": "validation_error", "message": "invalid request: alcohol: too high", "details": []}
    response = httpx.Response(422, json=body)
    with pytest.raises(ServiceError) as refused:
        read_json(response)
    assert (refused.value.status_code, refused.value.body) == (422, body)
    assert str(refused.value) == "HTTP 422: invalid request: alcohol: too high"
    assert wine_client.ServiceError is llm_client.LLMServiceError is ServiceError, "the names notebooks import"
    assert read_json(httpx.Response(200, json={"status": "ready"})) == {"status": "ready"}
    with pytest.raises(ServiceError, match="HTTP 502: Bad Gateway"):
        read_json(httpx.Response(502, text="Bad Gateway"))  # a proxy's plain-text answer keeps its text


def test_a_refused_metrics_read_is_the_refusal_not_a_parse_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's 502 (a port-forward that reached no pod) says so, from either client's ``metrics()``."""
    gateway = httpx.Response(502, text="port-forward to Service llm in ns: No ready pod behind Service llm")
    monkeypatch.setattr(wine_client.WineClient, "_request", lambda *_args, **_kw: gateway)
    monkeypatch.setattr(llm_client.LLMClient, "_request", lambda *_args, **_kw: gateway)
    for client in (wine_client.WineClient("http://wine"), llm_client.LLMClient("http://llm")):
        with pytest.raises(ServiceError, match="HTTP 502: port-forward to Service llm in ns: No ready pod"):
            client.metrics()


def test_the_llm_clients_series_are_the_samples_of_the_wine_clients_frame() -> None:
    series = metrics_by_series(METRICS)
    assert series['llm_completions_total{outcome="ok"}'] == 3.0
    assert series["llm_queue_depth"] == 2.0
    assert series['llm_latency_seconds_bucket{handler="/completion",le="0.5"}'] == 1.0, "labels sorted"
    assert not any("_created" in key for key in series), "when a series began is no measurement"
    frame = metrics_frame(METRICS)
    assert len(frame) == len(series)
    assert dict(zip(frame["name"], frame["value"], strict=False))["llm_latency_seconds_sum"] == 1.25


def test_replicas_add_up_counters_and_keep_one_gauge() -> None:
    combined = combined_metrics_frame([METRICS, METRICS])
    values = {(row.name, tuple(sorted(row.labels.items()))): row.value for row in combined.itertuples()}
    assert values[("llm_completions_total", (("outcome", "ok"),))] == 6.0
    assert values[("llm_latency_seconds_count", (("handler", "/completion"),))] == 4.0
    assert values[("llm_queue_depth", ())] == 2.0, "a gauge is each replica's state, not a share of a total"


@pytest.mark.slow
def test_a_connection_the_service_is_closing_is_not_reused_through_a_lagging_port_forward(
        model_dir: Path, tmp_path: Path) -> None:
    """A pause just under the services' idle timeout, then a request: through a port-forward the server's close
    arrives late, so a client that keeps connections as long as the server (httpx's default, 5 s) sends on a
    connection already closed and gets "Server disconnected without sending a response" (notebook 07 did, on
    the kubernetes target). The workshop's clients open a new connection there, and still reuse one within
    KEEPALIVE_EXPIRY_S."""
    idle_timeout_s, lag_s = ServerSettings().idle_timeout_s, 0.3  # the default both services run with
    assert idle_timeout_s - 2 * lag_s > KEEPALIVE_EXPIRY_S + 1.0, "the clients drop a connection well before"
    port = free_port()
    service = ManagedProcess("wine", [sys.executable, "-m", "app.wine", "--host", "127.0.0.1", "--port", str(port)],
                             env={"WINE_MODEL_DIR": str(model_dir)}, cwd=PROJECT_ROOT,
                             log_path=tmp_path / "wine.log").start()
    try:
        service.wait_for_http(f"http://127.0.0.1:{port}/ready", timeout=120)
        with LaggingForward(port, lag_s) as forward, http_client(forward.url, 10) as plain, \
                llm_client.LLMClient(forward.url, timeout=10) as llm:
            reads = {"http_client": lambda: plain.get("/metrics").raise_for_status().text,
                     "LLMClient.metrics": lambda: llm.metrics()}
            for number, (name, read) in enumerate(reads.items()):
                read(), read()
                assert forward.connections == 2 * number + 1, f"{name}: two requests in a row share a connection"
                time.sleep(idle_timeout_s - lag_s / 2)  # the server closes meanwhile; the close arrives late
                assert read(), f"{name}: no answer after a pause just under the idle timeout"
                assert forward.connections == 2 * number + 2, f"{name}: after the pause, a new connection"
    finally:
        service.stop()
