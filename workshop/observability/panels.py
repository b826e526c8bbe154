"""The building blocks every dashboard of the workshop shares: queries, panel styles, variables, layout.

Every query goes through the ``datasource`` variable and filters on ``job`` and ``namespace``
(:func:`metric`), so one JSON works against the local Prometheus (no namespace label: the namespace
variable's "All" is ``.*``, which also matches a missing label) and on Kubernetes. The HTTP and process
panels read metrics both services export (prometheus-fastapi-instrumentator, prometheus-client's
process collector), so they are written once here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import count

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

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


def quantile_targets(bucket_rate: str, quantiles: tuple[float, ...] = QUANTILES, *, by: str = "le",
                     legend_suffix: str = "") -> list[prometheus.Dataquery]:
    """One ``histogram_quantile`` target per quantile (legend ``p50``, ``p95``...; refIds A, B, C...)."""
    return [
        query(f"histogram_quantile({q}, sum by ({by}) ({bucket_rate}))", f"p{round(q * 100)}{legend_suffix}", ref_id)
        for q, ref_id in zip(quantiles, "ABCDEF", strict=False)
    ]


def thresholds(base: str, *steps: tuple[float, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds: the colour below the first step, then the colour from each step up."""
    return (
        dash.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=None, color=base), *(models.Threshold(value=v, color=c) for v, c in steps)])
    )


def timeseries_panel(title: str, description: str, unit: str) -> timeseries.Panel:
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


def dashed_thresholds(panel: timeseries.Panel, base: str, *steps: tuple[float, str]) -> timeseries.Panel:
    """Draw the threshold steps as dashed lines: a reference to compare with, not an alert."""
    return panel.thresholds(thresholds(base, *steps)).thresholds_style(
        common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
    )



# --- Panels every service has ---------------------------------------------------------------------


def request_rate_panel() -> PanelBuilder:
    """Load first: every other panel reads differently at 1 request/s and at 1,000."""
    return timeseries_panel(
        "Request rate by handler and status",
        "Requests per second, by route and status class (2xx, 4xx, 5xx). It shows how much traffic each "
        "endpoint gets and what share fails. A sudden drop to zero means clients cannot reach the service "
        "(or Prometheus cannot scrape it); a growing 4xx line means clients send invalid input; any 5xx "
        "line is the service's fault.",
        "reqps",
    ).with_target(query(f"sum by (handler, status) ({rate('http_requests_total')})", "{{handler}} {{status}}"))


def error_ratio_panel(threshold: float = 0.01) -> PanelBuilder:
    """The share of failed requests: an error rate alone means nothing without the load. ``threshold`` is the
    dashed line: the service's alert threshold where it has one, so the graph shows when the alert would fire."""
    # `> 0`: no traffic is "no data", not 0/0; `or vector(0)`: traffic without any 5xx series is 0, not "no data".
    total = f"(sum({rate('http_requests_total')}) > 0)"
    share = {
        status: f"(sum({rate('http_requests_total', matcher)}) or vector(0)) / {total}"
        for status, matcher in (("5xx", 'status="5xx"'), ("4xx", 'status="4xx"'))
    }
    return dashed_thresholds(
        timeseries_panel(
            "Error ratio (5xx share)",
            "Share of all requests answered with a server error (5xx), and, for comparison, with a client "
            "error (4xx). 5xx should be 0: any sustained value is a bug, a missing model (503 before /ready) "
            "or an overloaded replica, and burns the error budget. 4xx is the client's fault (invalid input, "
            "too large a body); a jump usually means a client changed its payload. The dashed line marks "
            f"{threshold * 100:g} %.",
            "percentunit",
        ).min(0),
        "green",
        (threshold, "red"),
    ).targets(
        [
            query(share["5xx"], "5xx share"),
            query(share["4xx"], "4xx share", "B"),
        ]
    )


def cpu_panel() -> PanelBuilder:
    """CPU per instance, as a share of one core: a Python worker cannot use more than about one."""
    return dashed_thresholds(
        timeseries_panel(
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
        timeseries_panel(
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

Row = tuple[str, list[PanelBuilder]]


def variables(job: str, discovery_metric: str) -> list[Builder[models.VariableModel]]:
    """Datasource, job and namespace: one JSON for a local Prometheus and for any cluster.

    ``discovery_metric`` is a series every instance of the service always exports: the job and
    namespace lists are read from its labels.
    """
    return [
        dash.DatasourceVariable("datasource").id("datasource").label("Data source").type("prometheus"),
        dash.QueryVariable("job")
        .id("job")
        .label("Job")
        .query(f"label_values({discovery_metric}, job)")
        .datasource(DATASOURCE)
        .current(models.VariableOption(selected=True, text=job, value=job))
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC),
        dash.QueryVariable("namespace")
        .id("namespace")
        .label("Namespace")
        .query(f"label_values({discovery_metric}, namespace)")
        .datasource(DATASOURCE)
        .include_all(True)
        .all_value(".*")  # matches a missing label too: local Prometheus has no namespace
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC),
    ]


def sized(panel: PanelBuilder, width: int, height: int = 8) -> PanelBuilder:
    """Each line of panels must add up to the 24 columns: the SDK's auto-layout wraps only after a full line."""
    return panel.grid_pos(models.GridPos(h=height, w=width))


def to_dict(built: models.Dashboard) -> dict:
    """The dashboard as plain JSON data, with what the SDK leaves out that Grafana expects."""
    data = json.loads(json.dumps(built, cls=JSONEncoder))
    # The SDK writes `"annotations": {}` without annotations; Grafana's model reads `annotations.list`.
    data.setdefault("annotations", {}).setdefault("list", [])
    return data


def process_panels() -> list[PanelBuilder]:
    """CPU and memory side by side, half the width each: the process row every service's dashboard ends with."""
    return [sized(cpu_panel(), 12), sized(memory_panel(), 12)]


def build_dashboard(
    *,
    title: str,
    uid: str,
    description: str,
    tags: Sequence[str],
    job: str,
    discovery_metric: str,
    rows: Sequence[Row],
) -> dict:
    """A dashboard with the workshop's common settings, its rows of panels numbered in order from 1."""
    builder = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(list(tags))
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .time("now-30m", "now")
        .refresh("10s")
        .variables(variables(job, discovery_metric))
    )
    ids: Iterator[int] = count(1)
    for row_title, row_panels in rows:
        builder.with_row(dash.Row(row_title).id(next(ids)).datasource(DATASOURCE))
        for panel in row_panels:
            builder.with_panel(panel.id(next(ids)))
    return to_dict(builder.build())
