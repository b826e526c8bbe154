"""What the clients of both services share: their HTTP connections, reading an answer (or its error) and ``/metrics``.

:class:`~workshop.client.WineClient`, :class:`~workshop.llm_client.LLMClient` and the targets (which read every
replica's ``/metrics``) parse with these functions, so a refusal reads alike from either service
(:class:`~workshop.exceptions.ServiceError`) and a sample means the same in every table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from workshop.exceptions import ServiceError

COLUMNS = ["name", "labels", "value"]
# Families whose samples add up across replicas: counts and sums of events. Gauges (model info, training
# statistics, queue depths) and summary quantiles are a state each replica holds, not a share of a total.
SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
# The services close a connection idle for IDLE_TIMEOUT_S (5 s by default). httpx keeps an idle connection
# for 5 s as well, so a request sent just as the server closes it fails with "Server disconnected without
# sending a response"; through a port-forward the close arrives late and that window is wider. A connection
# idle for longer than this is dropped by the client first, with seconds to spare.
KEEPALIVE_EXPIRY_S = 2.0


def http_client(url: str, timeout: float, **options: Any) -> httpx.Client:
    """An httpx client for ``url`` that reuses a connection only while the service surely keeps it open;
    ``options``: more of ``httpx.Client``'s (``headers=``)."""
    return httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S), **options)


def read_json(response: httpx.Response) -> Any:
    """The body of a service's answer (JSON, else text); a 4xx or 5xx raises :class:`ServiceError` with it."""
    is_json = response.headers.get("content-type", "").startswith("application/json")
    body = response.json() if is_json else response.text
    if response.is_error:
        raise ServiceError(response.status_code, body)
    return body


class Sample(NamedTuple):
    """One sample of ``/metrics``; ``summed``: whether replicas' values of it add up to the service's."""

    name: str
    labels: dict[str, str]
    value: float
    summed: bool


def samples(text: str, prefix: str = "") -> Iterator[Sample]:
    """Each sample of the Prometheus text format whose name starts with ``prefix``; ``_created`` timestamps are
    left out (they are when a series began, not a measurement)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                summed = family.type in SUMMED_TYPES and "quantile" not in sample.labels
                yield Sample(sample.name, dict(sample.labels), sample.value, summed)


def sample_key(name: str, labels: dict[str, str]) -> str:
    """``name{label="v",...}`` with the labels sorted: how PromQL writes one series."""
    inside = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inside}}}" if inside else name


def metrics_by_series(text: str, prefix: str = "") -> dict[str, float]:
    """Every sample as ``{'name{label="v",...}': value}`` (see :func:`sample_key`)."""
    return {sample_key(s.name, s.labels): s.value for s in samples(text, prefix)}


def metrics_frame(text: str, prefix: str = "") -> pd.DataFrame:
    """Parse the Prometheus text format into one row per sample."""
    rows = [{"name": s.name, "labels": s.labels, "value": s.value} for s in samples(text, prefix)]
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
        for sample in samples(text, prefix):
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key not in rows:
                rows[key] = {"name": sample.name, "labels": sample.labels, "value": sample.value}
            elif sample.summed:
                rows[key]["value"] += sample.value
    return pd.DataFrame(list(rows.values()), columns=COLUMNS)
