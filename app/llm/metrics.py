"""Prometheus metrics of the LLM service, registered once on an explicit registry.

Each app owns an :class:`LLMMetrics` (and so a registry): a second app in a
test or a re-run notebook cell never raises "Duplicated timeseries". The names
are a contract with the dashboard and the alert rules:

- ``llm_completions_total{outcome}``: success, invalid, unavailable, overloaded, error, cancelled
  (the client went away before it had the whole answer, plain or streamed: while it waited, while it
  ran, and the generation stopped at its next token, or as it ended);
- ``llm_prompt_tokens_total``, ``llm_completion_tokens_total``;
- ``llm_generation_seconds``, ``llm_tokens_per_second``, ``llm_time_to_first_token_seconds`` (streaming);
- ``llm_model_load_seconds{outcome}``: every load attempt;
- ``llm_model_info{model_id,revision,dtype,source}``: 1 for the model serving, no series for others;
- ``llm_lifecycle_state{state}``: 1 for the current state, 0 for the three others;
- ``llm_model_swaps_total{outcome}``, ``llm_queue_depth``.

HTTP request counts and latencies come from prometheus-fastapi-instrumentator on the same registry.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)

from app.llm.generation import Completion
from app.llm.lifecycle import Snapshot, State
from app.llm.loader import LoadedModel

OUTCOMES = ("success", "invalid", "unavailable", "overloaded", "error", "cancelled")
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
HTTP_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LLMMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        r = self.registry
        self.completions = Counter("llm_completions", "Completion requests by outcome.", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.completions.labels(outcome)
        self.prompt_tokens = Counter("llm_prompt_tokens", "Prompt tokens (after the chat template) read.", registry=r)
        self.completion_tokens = Counter("llm_completion_tokens", "Tokens generated.", registry=r)
        self.generation_seconds = Histogram(
            "llm_generation_seconds",
            "Time of a whole generation, from a thread taking it to its last token (queueing excluded).",
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "llm_tokens_per_second", "Completion tokens per second of generation, per request.",
            buckets=TOKENS_PER_SECOND_BUCKETS, registry=r,
        )
        self.time_to_first_token = Histogram(
            "llm_time_to_first_token_seconds",
            "Time from a streaming request's admission to its first token (queueing included).",
            buckets=TTFT_BUCKETS, registry=r,
        )
        self.load_seconds = Histogram(
            "llm_model_load_seconds", "Duration of each model load attempt, by outcome.", ["outcome"],
            buckets=LOAD_BUCKETS, registry=r,
        )
        self.model_info = Gauge(
            "llm_model_info", "The model serving (value 1).", ["model_id", "revision", "dtype", "source"], registry=r
        )
        self.lifecycle_state = Gauge(
            "llm_lifecycle_state", "1 for the lifecycle's current state, 0 for the others.", ["state"], registry=r
        )
        self.swaps = Counter("llm_model_swaps", "Model loads (the first one included), by outcome.", ["outcome"],
                             registry=r)
        for outcome in ("success", "failure"):
            self.swaps.labels(outcome)
            self.load_seconds.labels(outcome)
        self._info_labels: tuple[str, str, str, str] | None = None
        self.queue_depth = Gauge("llm_queue_depth", "Generations running plus waiting.", registry=r)

    def completion(self, outcome: str) -> None:
        self.completions.labels(outcome).inc()

    def observe_completion(self, completion: Completion) -> None:
        """Every generation that ran, once: as its answer is handed over (success), or with ``finish_reason``
        "cancelled" once its client is known to have left, even if the generation had ended by then.

        A cancelled one counts its tokens (the work was done) but not its durations: a generation cut
        short would make the latency look better than what clients get.
        """
        self.prompt_tokens.inc(completion.prompt_tokens)
        self.completion_tokens.inc(completion.completion_tokens)
        if completion.finish_reason == "cancelled":
            self.completions.labels("cancelled").inc()
            return
        self.completions.labels("success").inc()
        self.generation_seconds.observe(completion.seconds)
        self.tokens_per_second.observe(completion.tokens_per_second)
        if completion.first_token_seconds is not None:
            self.time_to_first_token.observe(completion.first_token_seconds)

    def observe_load(self, seconds: float, ok: bool) -> None:
        outcome = "success" if ok else "failure"
        self.load_seconds.labels(outcome).observe(seconds)
        self.swaps.labels(outcome).inc()

    def on_lifecycle(self, snapshot: Snapshot[LoadedModel]) -> None:
        """A lifecycle listener: the state gauge, and the info gauge of what serves."""
        for state in State:
            self.lifecycle_state.labels(state.value).set(1 if state is snapshot.state else 0)
        serving = snapshot.serving
        labels = (serving.model_id, serving.revision or "", serving.dtype, serving.source) if serving else None
        if labels != self._info_labels:
            # Set the new series before removing the old, so no scrape sees no model at all.
            if labels is not None:
                self.model_info.labels(*labels).set(1)
            if self._info_labels is not None:
                self.model_info.remove(*self._info_labels)
            self._info_labels = labels
