"""Prometheus metrics of the wine service, registered once on an explicit registry.

Each app instance owns a :class:`WineMetrics` (and so a registry), so creating a
second app in a test or re-running a notebook cell never raises "Duplicated
timeseries". HTTP metrics come from prometheus-fastapi-instrumentator on the
same registry; the ones here describe the model: what it predicts, how fast,
what it rejects, and what it is fed (for drift against the training means).

What is observed on every prediction (per row: the predicted quality, each
input feature) is aggregated in numpy arrays by :class:`ModelTraffic` and only
turned into metric families when Prometheus scrapes: one vectorised update per
request instead of a locked counter or histogram call per row and feature.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    gc_collector,
    platform_collector,
    process_collector,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Receive, Scope, Send

from app.wine.features import COLORS, FEATURE_NAMES

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
ENDPOINTS = ("predict", "predict_batch")

# The field label is bounded to known names: an attacker's extra field must not mint a time series.
KNOWN_FIELDS = frozenset((*FEATURE_NAMES, "color", "instances", "body"))


def _histogram_buckets(bounds: tuple[float, ...], counts: np.ndarray) -> list[tuple[str, float]]:
    """Prometheus buckets are cumulative and end with +Inf."""
    cumulative = np.cumsum(counts).tolist()
    return [*((floatToGoString(b), c) for b, c in zip(bounds, cumulative, strict=False)), ("+Inf", cumulative[-1])]


class ModelTraffic(Collector):
    """Per-row statistics of what the model saw and said, exposed as metric families on scrape.

    Updates happen under one lock (uncontended on the event loop), so a scrape
    from the metrics thread never reads a half-applied batch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quality_bounds = np.asarray(QUALITY_BUCKETS)
        # Row 0 is red, row 1 white: the model input's last column is is_red.
        self._quality_counts = np.zeros((2, len(QUALITY_BUCKETS) + 1), dtype=np.int64)
        self._quality_sums = np.zeros(2)
        self._rows = np.zeros(2, dtype=np.int64)
        self._feature_sums = np.zeros(len(FEATURE_NAMES))
        self._inference_counts = {e: [0] * (len(INFERENCE_BUCKETS) + 1) for e in ENDPOINTS}
        self._inference_sums = dict.fromkeys(ENDPOINTS, 0.0)

    def observe(self, X: np.ndarray, qualities: np.ndarray, seconds: float, endpoint: str) -> None:
        """Record one model call: its inputs ``X`` (model columns), outputs and duration."""
        if len(X) == 1:
            self._observe_one(X[0], float(qualities[0]), seconds, endpoint)
            return
        white = (X[:, -1] < 0.5).astype(np.intp)
        buckets = np.searchsorted(self._quality_bounds, qualities)  # first bound >= value: Prometheus' "le"
        feature_sums = X[:, : len(FEATURE_NAMES)].sum(axis=0, dtype=np.float64)
        n_white = int(white.sum())
        with self._lock:
            np.add.at(self._quality_counts, (white, buckets), 1)
            np.add.at(self._quality_sums, white, qualities)
            self._rows += (len(X) - n_white, n_white)
            self._feature_sums += feature_sums
            self._inference_counts[endpoint][bisect_left(INFERENCE_BUCKETS, seconds)] += 1
            self._inference_sums[endpoint] += seconds

    def _observe_one(self, row: np.ndarray, quality: float, seconds: float, endpoint: str) -> None:
        """The single-prediction path with scalar updates: numpy's vector calls cost more than they save."""
        white = 0 if row[-1] > 0.5 else 1
        bucket = bisect_left(QUALITY_BUCKETS, quality)
        with self._lock:
            self._quality_counts[white, bucket] += 1
            self._quality_sums[white] += quality
            self._rows[white] += 1
            self._feature_sums += row[: len(FEATURE_NAMES)]
            self._inference_counts[endpoint][bisect_left(INFERENCE_BUCKETS, seconds)] += 1
            self._inference_sums[endpoint] += seconds

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            quality_counts, quality_sums = self._quality_counts.copy(), self._quality_sums.copy()
            rows, feature_sums = self._rows.copy(), self._feature_sums.copy()
            inference = {e: (list(c), self._inference_sums[e]) for e, c in self._inference_counts.items()}
        quality = HistogramMetricFamily(
            "wine_predicted_quality", "Predicted quality score (0-10), by wine colour.", labels=["color"]
        )
        for index, color in enumerate(COLORS):
            quality.add_metric([color], _histogram_buckets(QUALITY_BUCKETS, quality_counts[index]),
                               float(quality_sums[index]))
        yield quality
        seconds = HistogramMetricFamily(
            "wine_model_inference_seconds", "Time spent in the model itself, per call (a batch is one call).",
            labels=["endpoint"],
        )
        for endpoint, (counts, total) in inference.items():
            seconds.add_metric([endpoint], _histogram_buckets(INFERENCE_BUCKETS, np.asarray(counts)), total)
        yield seconds
        row_counter = CounterMetricFamily("wine_input_rows", "Rows sent to the model, by colour.", labels=["color"])
        for index, color in enumerate(COLORS):
            row_counter.add_metric([color], float(rows[index]))
        yield row_counter
        # Drift: mean input = rate(sum) / rate(rows); compared with wine_training_feature_mean.
        sums = CounterMetricFamily(
            "wine_input_feature_sum", "Sum of each input feature over all predicted rows.", labels=["feature"]
        )
        for name, total in zip(FEATURE_NAMES, feature_sums.tolist(), strict=True):
            sums.add_metric([name], total)
        yield sums


class WineMetrics:
    """The model-level metrics; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # CPU, memory, open files and GC: the process panels of the dashboard.
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)

        self.traffic = ModelTraffic()
        self.registry.register(self.traffic)
        self.model_info = Gauge(
            "wine_model_info", "The model being served (value 1), labelled by version and algorithm.",
            ["version", "algorithm"], registry=self.registry,
        )
        self.rejected_inputs = Counter(
            "wine_rejected_inputs", "Requests refused before reaching the model, by reason and field.",
            ["reason", "field"], registry=self.registry,
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

    def set_model(self, card: dict) -> None:
        """Publish what is served, and the training statistics that drift is measured against."""
        self.model_info.clear()
        self.model_info.labels(card["version"], card.get("algorithm", "unknown")).set(1)
        for feature in card["features"]:
            if "train_mean" in feature:
                self.training_feature_mean.labels(feature["name"]).set(feature["train_mean"])
        self.training_quality_mean.set(card["target"]["train_prediction_mean"])

    def observe_predictions(self, X: np.ndarray, qualities: np.ndarray, seconds: float, endpoint: str) -> None:
        self.traffic.observe(X, qualities, seconds, endpoint)

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
