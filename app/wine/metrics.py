"""Prometheus metrics of the wine service, registered once on an explicit registry.

Each app instance owns a :class:`WineMetrics` (and so a registry), so creating a
second app in a test or re-running a notebook cell never raises "Duplicated
timeseries". HTTP metrics come from prometheus-fastapi-instrumentator on the
same registry; the ones here describe the model: what it predicts, how fast,
what it rejects, and what it is fed (for drift against the training means).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from app.wine.features import FEATURE_NAMES

# Per-handler HTTP latency buckets, fine enough for p50/p95/p99 and with the
# SLO thresholds (50 ms, 300 ms) as exact bucket bounds.
HTTP_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
)
INFERENCE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)
QUALITY_BUCKETS = tuple(float(b) for b in np.arange(0.5, 10.01, 0.5))

# Rejection reasons outside pydantic's own error types.
# The field label is bounded to known names: an attacker's extra field must not mint a time series.
KNOWN_FIELDS = frozenset((*FEATURE_NAMES, "color", "instances", "body"))


class WineMetrics:
    """The model-level metrics; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # CPU, memory, open files and GC: the process panels of the dashboard.
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)

        self.predicted_quality = Histogram(
            "wine_predicted_quality", "Predicted quality score (0-10), by wine colour.",
            ["color"], buckets=QUALITY_BUCKETS, registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "wine_model_inference_seconds", "Time spent in the model itself, per call (a batch is one call).",
            ["endpoint"], buckets=INFERENCE_BUCKETS, registry=self.registry,
        )
        self.model_info = Gauge(
            "wine_model_info", "The model being served (value 1), labelled by version and algorithm.",
            ["version", "algorithm"], registry=self.registry,
        )
        self.rejected_inputs = Counter(
            "wine_rejected_inputs", "Requests refused before reaching the model, by reason and field.",
            ["reason", "field"], registry=self.registry,
        )
        # Drift: mean input = rate(sum) / rate(rows); compared with the training mean gauge.
        self.input_feature_sum = Counter(
            "wine_input_feature_sum", "Sum of each input feature over all predicted rows.",
            ["feature"], registry=self.registry,
        )
        self.input_rows = Counter(
            "wine_input_rows", "Rows sent to the model, by colour.", ["color"], registry=self.registry,
        )
        self.training_feature_mean = Gauge(
            "wine_training_feature_mean", "Mean of each feature in the training data (from the model card).",
            ["feature"], registry=self.registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being served right now (scrapes of /metrics excluded).",
            registry=self.registry,
        )
        self.training_quality_mean = Gauge(
            "wine_training_prediction_mean", "Mean prediction on the training data (from the model card).",
            registry=self.registry,
        )
        # Children are resolved once; .labels() on the hot path costs a dict lookup and a lock each.
        self._feature_sums = [self.input_feature_sum.labels(name) for name in FEATURE_NAMES]
        self._quality_by_color = {c: self.predicted_quality.labels(c) for c in ("red", "white")}
        self._rows_by_color = {c: self.input_rows.labels(c) for c in ("red", "white")}

    def set_model(self, card: dict) -> None:
        """Publish what is served, and the training statistics that drift is measured against."""
        self.model_info.clear()
        self.model_info.labels(card["version"], card.get("algorithm", "unknown")).set(1)
        for feature in card["features"]:
            if "train_mean" in feature:
                self.training_feature_mean.labels(feature["name"]).set(feature["train_mean"])
        self.training_quality_mean.set(card["target"]["train_prediction_mean"])

    def observe_predictions(
        self, X: np.ndarray, colors: Sequence[str], qualities: np.ndarray, seconds: float, endpoint: str
    ) -> None:
        self.inference_seconds.labels(endpoint).observe(seconds)
        sums = X[:, : len(FEATURE_NAMES)].sum(axis=0, dtype=np.float64)
        for child, total in zip(self._feature_sums, sums, strict=True):
            child.inc(float(total))
        for color, quality in zip(colors, qualities.tolist(), strict=True):
            self._quality_by_color[color].observe(quality)
        n_red = sum(1 for color in colors if color == "red")
        if n_red:
            self._rows_by_color["red"].inc(n_red)
        if len(colors) - n_red:
            self._rows_by_color["white"].inc(len(colors) - n_red)

    def reject(self, reason: str, field: str) -> None:
        self.rejected_inputs.labels(reason, field if field in KNOWN_FIELDS else "other").inc()


class InFlightRequests:
    """ASGI middleware keeping ``http_requests_in_flight`` on the app's own registry.

    The instrumentator's in-progress gauge always lands on the global default
    registry (prometheus-fastapi-instrumentator#317), which breaks two apps in
    one process; this gauge does not.
    """

    def __init__(self, app: ASGIApp, metrics: WineMetrics, excluded_paths: tuple[str, ...] = ("/metrics",)) -> None:
        self.app = app
        self.gauge = metrics.in_flight
        self.excluded_paths = excluded_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        self.gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gauge.dec()
