"""Talk to the wine service as any client would: over HTTP, with plain JSON."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families


class ServiceError(RuntimeError):
    """The service refused a request; carries the status and its JSON error body."""

    def __init__(self, status_code: int, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.body = body


@dataclass
class WineClient:
    url: str
    timeout: float = 10.0

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url.rstrip('/')}{path}", timeout=self.timeout, **kwargs)

    def _json(self, response: httpx.Response) -> Any:
        is_json = response.headers.get("content-type", "").startswith("application/json")
        body = response.json() if is_json else response.text
        if response.is_error:
            raise ServiceError(response.status_code, body)
        return body

    def predict(self, wine: dict[str, Any]) -> dict[str, Any]:
        return self._json(self._request("POST", "/predict", json=wine))

    def predict_batch(self, wines: list[dict[str, Any]]) -> dict[str, Any]:
        return self._json(self._request("POST", "/predict/batch", json={"instances": wines}))

    def post_raw(self, path: str, content: bytes | str, content_type: str = "application/json") -> httpx.Response:
        """Send a body exactly as given: for showing what the service does with bad input."""
        return self._request("POST", path, content=content, headers={"content-type": content_type})

    def rejections(self, cases: dict[str, tuple]) -> pd.DataFrame:
        """Send each bad body (``name: (path, body[, content_type])``); tabulate status, field and reason."""
        rows = []
        for case, (path, body, *content_type) in cases.items():
            response = self.post_raw(path, body, *content_type)
            error = response.json()
            first = (error.get("details") or [{"field": "-", "reason": error.get("message", "")}])[0]
            rows.append({"case": case, "status": response.status_code, "error": error.get("error"),
                         "field": first["field"], "reason": first["reason"]})
        return pd.DataFrame(rows).set_index("case")

    def ready(self) -> bool:
        return self._request("GET", "/ready").status_code == 200

    def model_card(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/model"))

    def metrics(self, prefix: str = "") -> pd.DataFrame:
        """The /metrics samples as a frame: name, labels, value (optionally only names with ``prefix``)."""
        return metrics_frame(self._request("GET", "/metrics").text, prefix)


COLUMNS = ["name", "labels", "value"]
# Families whose samples add up across replicas: counts and sums of events. Gauges (model info, training
# statistics, queue depths) and summary quantiles are a state each replica holds, not a share of a total.
SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})


def _samples(text: str, prefix: str = "") -> Iterator[tuple[bool, str, dict[str, str], float]]:
    """(summed across replicas, name, labels, value) of each sample; ``_created`` timestamps are left out."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                summed = family.type in SUMMED_TYPES and "quantile" not in sample.labels
                yield summed, sample.name, dict(sample.labels), sample.value


def metrics_frame(text: str, prefix: str = "") -> pd.DataFrame:
    """Parse the Prometheus text format into one row per sample."""
    rows = [{"name": name, "labels": labels, "value": value} for _, name, labels, value in _samples(text, prefix)]
    return pd.DataFrame(rows, columns=COLUMNS)


def combined_metrics_frame(texts: Iterable[str], prefix: str = "") -> pd.DataFrame:
    """The /metrics of several replicas of one service as one frame, like :func:`metrics_frame`.

    Samples of the same name and labels become one row: counters and histogram (or summary) counts and sums
    are added up, so the frame counts the traffic of every replica; gauges and anything untyped keep the first
    replica's value, because each replica reports the same state (``wine_model_info``, the training feature
    means) and a sum would multiply it by the replica count. The family type comes from the ``# TYPE`` lines.
    """
    rows: dict[tuple[str, tuple[tuple[str, str], ...]], dict] = {}
    for text in texts:
        for summed, name, labels, value in _samples(text, prefix):
            key = (name, tuple(sorted(labels.items())))
            if key not in rows:
                rows[key] = {"name": name, "labels": labels, "value": value}
            elif summed:
                rows[key]["value"] += value
    return pd.DataFrame(list(rows.values()), columns=COLUMNS)
