"""Checks for notebook 05's exercises."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from workshop.exercises import Verdict, done, not_done, wrong
from workshop.preview import panel_queries
from workshop.prometheus import PrometheusQueryError, query

RELATIVE_TOLERANCE = 1e-6


def dashboard_query(dashboard: Path, panel: str, legend: str, window: str) -> str:
    """The query of ``dashboard`` drawn as ``legend`` in the panel whose title starts with ``panel``, with
    Grafana's ``$__rate_interval`` set to ``window``: the file Grafana imports is the reference, never a copy."""
    queries = panel_queries(json.loads(Path(dashboard).read_text()), rate_interval=window)
    return next(q.expr for q in queries if q.panel.startswith(panel) and q.legend == legend)


def check_share_query(prometheus_url: str, learner_query: str | None, dashboard: Path, *, at: datetime,
                      panel: str = "Error ratio", legend: str = "4xx share", window: str = "5m") -> Verdict:
    """Exercise: write the PromQL of one line of a dashboard panel. Both queries run at the same instant ``at``;
    they agree when they compute the same number, however they are written."""
    if not learner_query:
        return not_done("set `share_query` to your PromQL query, then run this check")
    reference = dashboard_query(dashboard, panel, legend, window)
    try:
        yours = query(prometheus_url, learner_query, at=at)
    except PrometheusQueryError as error:
        return wrong(str(error))
    if yours.empty:
        return wrong("the query returns no series: check the metric name and the labels' values")
    if len(yours) > 1:
        labels = ", ".join(sorted(set(yours.columns) - {"value", "timestamp"}))
        return wrong(f"the query returns {len(yours)} series (by {labels}): `sum` them into one number")
    expected = float(query(prometheus_url, reference, at=at)["value"].iloc[0])
    value = float(yours["value"].iloc[0])
    if math.isclose(value, expected, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12):
        return done(f"{value:.1%} of the requests got a 4xx, the same as the dashboard's query: {reference}")
    return wrong(f"your query says {value:.4g}, the dashboard's {legend!r} says {expected:.4g}: the rate of the "
                 f"4xx requests divided by the rate of all requests, both summed over the replicas, over [{window}]")
