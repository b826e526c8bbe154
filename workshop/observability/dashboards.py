"""Grafana dashboards as code, built with grafana-foundation-sdk and committed as JSON under ``dashboards/``.

``python -m workshop dashboards`` writes every file of :data:`DASHBOARDS`;
``--check`` writes nothing and exits 1 naming the files that differ from what the builders
produce now (CI runs it, so an edit to the code without the regenerated JSON fails).

Every query goes through the ``datasource`` variable and filters on ``job`` and ``namespace``
(see :mod:`workshop.observability.panels`): the same JSON works against the local Prometheus and on
Kubernetes. ``model.json`` is the wine service's dashboard (built here), ``llm.json`` the LLM
service's (:mod:`workshop.observability.llm_dashboard`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import heatmap, stat
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from workshop.observability.alerts import ERROR_RATIO_THRESHOLD, FEATURE_DRIFT_THRESHOLD, LATENCY_SLO_SECONDS
from workshop.observability.llm_dashboard import build_llm_dashboard
from workshop.observability.panels import (
    DATASOURCE,
    NOT_USER_TRAFFIC,
    RATE,
    PanelBuilder,
    Row,
    build_dashboard,
    dashed_thresholds,
    error_ratio_panel,
    metric,
    process_panels,
    quantile_targets,
    query,
    rate,
    request_rate_panel,
    sized,
    timeseries_panel,
)
from workshop.paths import project_root

# --- Traffic -------------------------------------------------------------------------------------


def latency_panel() -> PanelBuilder:
    """Percentiles per handler: a mean hides the slow tail users complain about."""
    bucket_rate = rate("http_request_duration_seconds_bucket", NOT_USER_TRAFFIC)
    return dashed_thresholds(
        timeseries_panel(
            "Latency p50 / p95 / p99 by handler",
            "Server-side request duration percentiles per route, from the http_request_duration_seconds "
            "histogram (health, readiness and metrics scrapes excluded). p50 is the typical request, p99 the "
            f"slowest 1 %. The dashed lines are the SLO bounds of the alert rules, p50 under "
            f"{LATENCY_SLO_SECONDS[0.5] * 1000:.0f} ms and p99 under {LATENCY_SLO_SECONDS[0.99] * 1000:.0f} ms. "
            "A p99 far above p50 means queueing (CPU saturation, garbage collection, too few replicas); all "
            "three rising together means every request got slower (a bigger model, a noisy neighbour).",
            "s",
        ),
        "green",
        (LATENCY_SLO_SECONDS[0.5], "orange"),
        (LATENCY_SLO_SECONDS[0.99], "red"),
    ).targets(quantile_targets(bucket_rate, by="le, handler", legend_suffix=" {{handler}}"))


def in_flight_panel() -> PanelBuilder:
    """Concurrency, per replica: the queue that turns into latency before it turns into errors."""
    return timeseries_panel(
        "In-flight requests",
        "Requests being served right now, per instance (scrapes of /metrics excluded), sampled at each "
        "scrape. Near 0 or 1 is normal for a fast service. A value that keeps growing means requests arrive "
        "faster than they are served: latency rises next, then timeouts; add replicas or CPU.",
        "short",
    ).with_target(query(f"sum by (instance) ({metric('http_requests_in_flight')})", "{{instance}}"))


def model_version_panel() -> PanelBuilder:
    """Which model answers: the first thing to check when predictions change."""
    return (
        stat.Panel()
        .title("Model version")
        .description(
            "The model version each instance serves (from wine_model_info), with the number of instances "
            "serving it. One version is normal; two during a rollout. Two versions for long means a stuck "
            "rollout: clients get different answers depending on the replica. No value means no instance "
            "has loaded a model (check /ready)."
        )
        .datasource(DATASOURCE)
        .unit("short")
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(common.BigValueColorMode.NONE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query(f"count by (version) ({metric('wine_model_info')})", "{{version}}").instant())
    )

# --- Model ---------------------------------------------------------------------------------------


def predicted_quality_panel() -> PanelBuilder:
    """The distribution, not only the mean: a model can keep its mean and lose its spread."""
    return (
        heatmap.Panel()
        .title("Predicted quality distribution")
        .description(
            "How many predictions fell in each 0.5-wide quality band over time (wine_predicted_quality "
            "histogram, both colours). Most wines score 5 to 7, so the bright band should sit there. A band "
            "that moves, widens or collapses to a single value means the inputs or the model changed: compare "
            "with the drift panel and the model version."
        )
        .datasource(DATASOURCE)
        .calculate(False)
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .y_axis(heatmap.YAxisConfig().unit("none").decimals(1))
        .cell_values(heatmap.CellValues().unit("short"))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .fill("dark-orange")
            .reverse(False)
        )
        .show_legend()
        .show_tooltip()
        .with_target(
            query(f"sum by (le) (increase({metric('wine_predicted_quality_bucket')}[{RATE}]))", "{{le}}").format(
                PromQueryFormat.HEATMAP
            )
        )
    )


def mean_prediction_panel() -> PanelBuilder:
    """The cheapest drift signal: the served mean against the mean on the training data."""
    served = f"sum({rate('wine_predicted_quality_sum')}) / sum({rate('wine_predicted_quality_count')})"
    return (
        timeseries_panel(
            "Mean prediction vs training",
            "Mean predicted quality of the wines served (sum of predictions / number of predictions) against "
            "the mean prediction on the training data (from the model card). Close lines mean the traffic "
            "looks like the training data. A gap of more than a few tenths means the wines sent differ from "
            "the training wines (another producer, a broken sensor, a unit change) or the model was swapped.",
            "none",
        )
        .decimals(2)
        .targets(
            [
                query(served, "served"),
                query(f"max({metric('wine_training_prediction_mean')})", "training", "B"),
            ]
        )
    )


def input_drift_panel() -> PanelBuilder:
    """Drift per feature, on one scale: the mean input divided by the training mean (1.0 = like training)."""
    feature_rate = f"sum by (feature) ({rate('wine_input_feature_sum_total')})"
    # `> 0`: without traffic the ratio is "no data", not a division by zero.
    rows_rate = f"(sum({rate('wine_input_rows_total')}) > 0)"
    training_mean = f"max by (feature) ({metric('wine_training_feature_mean')})"
    return dashed_thresholds(
        timeseries_panel(
            "Input drift per feature (mean input / training mean)",
            "For each of the 11 input features, the mean value sent to the model divided by its mean in the "
            "training data. 1.0 means the traffic looks like the training data on that feature. A line "
            "drifting away (the dashed lines mark "
            f"±{FEATURE_DRIFT_THRESHOLD * 100:g} %, where the drift alert fires) means the model is fed wines unlike "
            "those it learnt from: its predictions are less trustworthy there. One feature far off while the "
            "others hold is often a unit or sensor error in the client (g/L sent as mg/L).",
            "none",
        ).decimals(2),
        "orange",
        (round(1 - FEATURE_DRIFT_THRESHOLD, 6), "green"),
        (round(1 + FEATURE_DRIFT_THRESHOLD, 6), "orange"),
    ).with_target(query(f"{feature_rate} / on() group_left() {rows_rate} / on(feature) {training_mean}", "{{feature}}"))


def rejected_inputs_panel() -> PanelBuilder:
    """Input the service refused never reaches the model's panels: count it here, by reason."""
    return timeseries_panel(
        "Rejected inputs by reason",
        "Refused input per second, by reason (one count per invalid field: a value out of its physical "
        "bounds, a missing or unknown field, malformed JSON, too large a body). A few are normal with public "
        "clients. A steady stream of one reason usually means one client sends a wrong schema or unit; a "
        "burst of everything can be a fuzzer or an attack.",
        "short",
    ).with_target(query(f"sum by (reason) ({rate('wine_rejected_inputs_total')})", "{{reason}}"))



# --- Dashboard -----------------------------------------------------------------------------------


def _model_rows() -> list[Row]:
    """The layout, top to bottom: is it up and fast, is the model sane, is the process healthy."""
    return [
        (
            "Traffic",
            [
                sized(model_version_panel(), 4),
                sized(request_rate_panel(), 10),
                sized(error_ratio_panel(ERROR_RATIO_THRESHOLD), 10),
                sized(latency_panel(), 16, 9),
                sized(in_flight_panel(), 8, 9),
            ],
        ),
        (
            "Model",
            [
                sized(predicted_quality_panel(), 12, 9),
                sized(mean_prediction_panel(), 12, 9),
                sized(input_drift_panel(), 16, 10),
                sized(rejected_inputs_panel(), 8, 10),
            ],
        ),
        ("Process", process_panels()),
    ]


def build_model_dashboard() -> dict:
    """The wine service's dashboard: traffic, model behaviour and drift, process resources."""
    return build_dashboard(
        title="Wine model",
        uid="wine-model",
        description=(
            "The wine-quality service: traffic, latency and errors, what the model predicts and is fed, "
            "and the process behind it."
        ),
        tags=["wine", "ml-serving-workshop"],
        job="wine",
        discovery_metric="wine_model_info",
        rows=_model_rows(),
    )


DASHBOARDS: dict[str, Callable[[], dict]] = {
    "model.json": build_model_dashboard,
    "llm.json": build_llm_dashboard,
}


def _all_panels(panels: list[dict]) -> Iterator[dict]:
    """Top-level panels and those nested in (collapsed) rows, in order."""
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels") or [])


def panel_queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every target, rows' nested panels included: what a preview renders."""
    return [
        (panel.get("title", ""), target.get("refId", ""), target["expr"])
        for panel in _all_panels(dashboard.get("panels") or [])
        for target in panel.get("targets") or []
        if "expr" in target
    ]


def render(dashboard: dict) -> str:
    """Stable text: sorted keys and a final newline, so a regenerated file only differs where the dashboard does."""
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def dashboards_dir() -> Path:
    return project_root() / "dashboards"


def generated_files(folder: Path) -> dict[Path, str]:
    """Each dashboard file in ``folder`` and the text its builder produces now."""
    return {folder / name: render(build()) for name, build in DASHBOARDS.items()}
