"""One reader of both services' answers: a refusal is one error type with the status and the JSON body, and a
``/metrics`` sample means the same in the wine client's frames, the LLM client's series and the targets' sums."""

from __future__ import annotations

import httpx
import pytest

from workshop import client as wine_client
from workshop import llm_client
from workshop.exceptions import ServiceError
from workshop.service_client import combined_metrics_frame, metrics_by_series, metrics_frame, read_json

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
