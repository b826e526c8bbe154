"""Talk to the wine service as any client would: over HTTP, with plain JSON.

Refusals raise :class:`~workshop.exceptions.ServiceError`, and ``/metrics`` is parsed by
:mod:`workshop.service_client`, as for the LLM service; both names stay importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd

from workshop.exceptions import ServiceError
from workshop.service_client import combined_metrics_frame, metrics_frame, read_json

__all__ = ["ServiceError", "WineClient", "combined_metrics_frame", "metrics_frame"]


@dataclass
class WineClient:
    """The wine service at ``url``; each call is one request (the notebooks' cells make a few)."""

    url: str
    timeout: float = 10.0

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url.rstrip('/')}{path}", timeout=self.timeout, **kwargs)

    def predict(self, wine: dict[str, Any]) -> dict[str, Any]:
        return read_json(self._request("POST", "/predict", json=wine))

    def predict_batch(self, wines: list[dict[str, Any]]) -> dict[str, Any]:
        return read_json(self._request("POST", "/predict/batch", json={"instances": wines}))

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
        return read_json(self._request("GET", "/model"))

    def metrics(self, prefix: str = "") -> pd.DataFrame:
        """The /metrics samples as a frame: name, labels, value (optionally only names with ``prefix``)."""
        return metrics_frame(read_json(self._request("GET", "/metrics")), prefix)

