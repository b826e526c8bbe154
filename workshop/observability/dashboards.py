"""Grafana dashboards as code, built with grafana-foundation-sdk and committed as JSON under ``dashboards/``.

``python -m workshop.observability.dashboards`` writes every file of :data:`DASHBOARDS`;
``--check`` writes nothing and exits 1 naming the files that differ from what the builders
produce now (CI runs it, so an edit to the code without the regenerated JSON fails).

Every query goes through the ``datasource`` variable and filters on ``job`` and ``namespace``:
the same JSON works against the local Prometheus (``job="wine"``, no namespace label: the
namespace variable's "All" is ``.*``, which also matches a missing label) and on Kubernetes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from workshop.observability import generated
from workshop.paths import project_root

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
SELECTOR = 'job=~"$job", namespace=~"$namespace"'
RATE = "$__rate_interval"
# Probes and the scrape itself are not user traffic: their latency would flatter the percentiles.
NOT_USER_TRAFFIC = 'handler!~"/health|/ready|/metrics"'
QUANTILES = (0.5, 0.95, 0.99)

PanelBuilder = Builder[models.Panel]


def metric(name: str, *matchers: str) -> str:
    """A series selector with the dashboard's job/namespace filter, so no query forgets it."""
    return f"{name}{{{', '.join((SELECTOR, *matchers))}}}"


def rate(name: str, *matchers: str) -> str:
    """``rate()`` over ``$__rate_interval``: always at least four scrapes, whatever the zoom."""
    return f"rate({metric(name, *matchers)}[{RATE}])"


def query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    """A Prometheus target; the datasource is repeated on the target because Grafana reads it there."""
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)


def _thresholds(base: str, *steps: tuple[float, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds: the colour below the first step, then the colour from each step up."""
    return (
        dash.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=None, color=base), *(models.Threshold(value=v, color=c) for v, c in steps)])
    )


def _timeseries(title: str, description: str, unit: str) -> timeseries.Panel:
    """A time series with the legend as a table (last and max values), so numbers can be read, not guessed."""
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
    )


def _dashed_thresholds(panel: timeseries.Panel, base: str, *steps: tuple[float, str]) -> timeseries.Panel:
    """Draw the threshold steps as dashed lines: a reference to compare with, not an alert."""
    return panel.thresholds(_thresholds(base, *steps)).thresholds_style(
        common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
    )


# --- Traffic -------------------------------------------------------------------------------------


def request_rate_panel() -> PanelBuilder:
    """Load first: every other panel reads differently at 1 request/s and at 1,000."""
    return _timeseries(
        "Request rate by handler and status",
        "Requests per second, by route and status class (2xx, 4xx, 5xx). It shows how much traffic each "
        "endpoint gets and what share fails. A sudden drop to zero means clients cannot reach the service "
        "(or Prometheus cannot scrape it); a growing 4xx line means clients send invalid input; any 5xx "
        "line is the service's fault.",
        "reqps",
    ).with_target(query(f"sum by (handler, status) ({rate('http_requests_total')})", "{{handler}} {{status}}"))


def error_ratio_panel() -> PanelBuilder:
    """The share of failed requests: an error rate alone means nothing without the load."""
    # `> 0`: no traffic is "no data", not 0/0; `or vector(0)`: traffic without any 5xx series is 0, not "no data".
    total = f"(sum({rate('http_requests_total')}) > 0)"
    share = {
        status: f"(sum({rate('http_requests_total', matcher)}) or vector(0)) / {total}"
        for status, matcher in (("5xx", 'status="5xx"'), ("4xx", 'status="4xx"'))
    }
    return _dashed_thresholds(
        _timeseries(
            "Error ratio (5xx share)",
            "Share of all requests answered with a server error (5xx), and, for comparison, with a client "
            "error (4xx). 5xx should be 0: any sustained value is a bug, a missing model (503 before /ready) "
            "or an overloaded replica, and burns the error budget. 4xx is the client's fault (invalid input, "
            "too large a body); a jump usually means a client changed its payload. The dashed line marks 1 %.",
            "percentunit",
        ).min(0),
        "green",
        (0.01, "red"),
    ).targets(
        [
            query(share["5xx"], "5xx share"),
            query(share["4xx"], "4xx share", "B"),
        ]
    )


def latency_panel() -> PanelBuilder:
    """Percentiles per handler: a mean hides the slow tail users complain about."""
    bucket_rate = rate("http_request_duration_seconds_bucket", NOT_USER_TRAFFIC)
    return _dashed_thresholds(
        _timeseries(
            "Latency p50 / p95 / p99 by handler",
            "Server-side request duration percentiles per route, from the http_request_duration_seconds "
            "histogram (health, readiness and metrics scrapes excluded). p50 is the typical request, p99 the "
            "slowest 1 %. The dashed lines are the SLO bounds, 50 ms (single prediction) and 300 ms (batch). "
            "A p99 far above p50 means queueing (CPU saturation, garbage collection, too few replicas); all "
            "three rising together means every request got slower (a bigger model, a noisy neighbour).",
            "s",
        ),
        "green",
        (0.05, "orange"),
        (0.3, "red"),
    ).targets(
        [
            query(
                f"histogram_quantile({q}, sum by (le, handler) ({bucket_rate}))",
                f"p{round(q * 100)} {{{{handler}}}}",
                ref_id,
            )
            for q, ref_id in zip(QUANTILES, "ABC", strict=True)
        ]
    )


def in_flight_panel() -> PanelBuilder:
    """Concurrency, per replica: the queue that turns into latency before it turns into errors."""
    return _timeseries(
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
        _timeseries(
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
    return _dashed_thresholds(
        _timeseries(
            "Input drift per feature (mean input / training mean)",
            "For each of the 11 input features, the mean value sent to the model divided by its mean in the "
            "training data. 1.0 means the traffic looks like the training data on that feature. A line "
            "drifting away (the dashed lines mark ±20 %) means the model is fed wines unlike those it learnt "
            "from: its predictions are less trustworthy there. One feature far off while the others hold is "
            "often a unit or sensor error in the client (g/L sent as mg/L).",
            "none",
        ).decimals(2),
        "orange",
        (0.8, "green"),
        (1.2, "orange"),
    ).with_target(query(f"{feature_rate} / on() group_left() {rows_rate} / on(feature) {training_mean}", "{{feature}}"))


def rejected_inputs_panel() -> PanelBuilder:
    """Input the service refused never reaches the model's panels: count it here, by reason."""
    return _timeseries(
        "Rejected inputs by reason",
        "Refused input per second, by reason (one count per invalid field: a value out of its physical "
        "bounds, a missing or unknown field, malformed JSON, too large a body). A few are normal with public "
        "clients. A steady stream of one reason usually means one client sends a wrong schema or unit; a "
        "burst of everything can be a fuzzer or an attack.",
        "short",
    ).with_target(query(f"sum by (reason) ({rate('wine_rejected_inputs_total')})", "{{reason}}"))


# --- Process -------------------------------------------------------------------------------------


def cpu_panel() -> PanelBuilder:
    """CPU per instance, as a share of one core: a Python worker cannot use more than about one."""
    return _dashed_thresholds(
        _timeseries(
            "Process CPU",
            "CPU time used by each service process, as a share of one core (100 % = one core busy). A single "
            "Python worker saturates near 100 %: latency then climbs while this line stays flat. Compare "
            "with the CPU limit of the container; sustained values near it mean adding replicas.",
            "percentunit",
        ).min(0),
        "green",
        (0.8, "orange"),
    ).with_target(query(f"sum by (instance) ({rate('process_cpu_seconds_total')})", "{{instance}}"))


def memory_panel() -> PanelBuilder:
    """Resident memory per instance: a slow climb is a leak, a cliff is an OOM kill and restart."""
    return (
        _timeseries(
            "Process memory (resident)",
            "Resident memory (RSS) of each service process. It should be flat after start-up (model loaded, "
            "caches warm). A steady climb under constant load is a leak, and ends with the container killed at "
            "its memory limit (the line drops and restarts from the bottom).",
            "bytes",
        )
        .min(0)
        .with_target(query(f"sum by (instance) ({metric('process_resident_memory_bytes')})", "{{instance}}"))
    )


# --- Dashboard -----------------------------------------------------------------------------------


def _variables() -> list[Builder[models.VariableModel]]:
    """Datasource, job and namespace: one JSON for a local Prometheus and for any cluster."""
    return [
        dash.DatasourceVariable("datasource").id("datasource").label("Data source").type("prometheus"),
        dash.QueryVariable("job")
        .id("job")
        .label("Job")
        .query("label_values(wine_model_info, job)")
        .datasource(DATASOURCE)
        .current(models.VariableOption(selected=True, text="wine", value="wine"))
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC),
        dash.QueryVariable("namespace")
        .id("namespace")
        .label("Namespace")
        .query("label_values(wine_model_info, namespace)")
        .datasource(DATASOURCE)
        .include_all(True)
        .all_value(".*")  # matches a missing label too: local Prometheus has no namespace
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC),
    ]


def _sized(panel: PanelBuilder, width: int, height: int = 8) -> PanelBuilder:
    """Each line of panels must add up to the 24 columns: the SDK's auto-layout wraps only after a full line."""
    return panel.grid_pos(models.GridPos(h=height, w=width))


def _model_rows() -> list[tuple[str, list[PanelBuilder]]]:
    """The layout, top to bottom: is it up and fast, is the model sane, is the process healthy."""
    return [
        (
            "Traffic",
            [
                _sized(model_version_panel(), 4),
                _sized(request_rate_panel(), 10),
                _sized(error_ratio_panel(), 10),
                _sized(latency_panel(), 16, 9),
                _sized(in_flight_panel(), 8, 9),
            ],
        ),
        (
            "Model",
            [
                _sized(predicted_quality_panel(), 12, 9),
                _sized(mean_prediction_panel(), 12, 9),
                _sized(input_drift_panel(), 16, 10),
                _sized(rejected_inputs_panel(), 8, 10),
            ],
        ),
        ("Process", [_sized(cpu_panel(), 12), _sized(memory_panel(), 12)]),
    ]


def to_dict(built: models.Dashboard) -> dict:
    """The dashboard as plain JSON data, with what the SDK leaves out that Grafana expects."""
    data = json.loads(json.dumps(built, cls=JSONEncoder))
    # The SDK writes `"annotations": {}` without annotations; Grafana's model reads `annotations.list`.
    data.setdefault("annotations", {}).setdefault("list", [])
    return data


def build_model_dashboard() -> dict:
    """The wine service's dashboard: traffic, model behaviour and drift, process resources."""
    builder = (
        dash.Dashboard("Wine model")
        .uid("wine-model")
        .description(
            "The wine-quality service: traffic, latency and errors, what the model predicts and is fed, "
            "and the process behind it."
        )
        .tags(["wine", "ml-serving-workshop"])
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .time("now-30m", "now")
        .refresh("10s")
        .variables(_variables())
    )
    ids: Iterator[int] = count(1)
    for title, panels in _model_rows():
        builder.with_row(dash.Row(title).id(next(ids)).datasource(DATASOURCE))
        for panel in panels:
            builder.with_panel(panel.id(next(ids)))
    return to_dict(builder.build())


DASHBOARDS: dict[str, Callable[[], dict]] = {
    "model.json": build_model_dashboard,
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


def main(argv: list[str] | None = None) -> int:
    def add_out(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, default=None, help="folder to write to (default: dashboards/)")

    return generated.cli(
        argv,
        module="workshop.observability.dashboards",
        description=__doc__.splitlines()[0],
        files=lambda args: generated_files(args.out or dashboards_dir()),
        add_arguments=add_out,
    )


if __name__ == "__main__":
    sys.exit(main())
