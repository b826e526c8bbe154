"""A Grafana dashboard drawn with matplotlib, from the dashboard's own JSON.

The workshop has no Grafana on the local target, yet the notebook should show
what the dashboard will show. So the queries are read from the JSON file that
Grafana imports (never from a second copy that could drift from it), Grafana's
variables are substituted, each query is run against a real Prometheus, and
each panel drawn as Grafana would, roughly: time series as lines (with the
panel's legend format), heatmaps as bucket counts over time, stats as the last
value. It works on any dashboard whose panels have ``targets[].expr``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from workshop.prometheus import query_range

# For a dashboard that does not define these variables (the workshop's own define job and namespace).
DEFAULT_VARIABLES = {"job": "wine", "namespace": ".*", "datasource": "prometheus"}
# ${name}, ${name:format}, $name and the old [[name]]: Grafana's variable syntaxes.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LEGEND = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
STAT_TYPES = {"stat", "singlestat", "gauge", "bargauge", "table"}
# Grafana's own palette would repeat after ten series: more lines than this become small multiples.
MAX_LINES_PER_PANEL = 10
GRAFANA_COLORS = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c", "yellow": "#fade2a", "blue": "#5794f2"}


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, with Grafana's variables already substituted."""

    panel: str
    panel_type: str
    ref_id: str
    expr: str
    legend: str
    heatmap: bool
    unit: str
    instant: bool = False  # Grafana evaluates it once, at the end of the range (a stat's current value)
    # The panel's threshold steps drawn on the graph (Grafana's thresholdsStyle): (value, colour), ascending.
    thresholds: tuple[tuple[float, str], ...] = ()


def seconds(duration: str) -> float:
    """Prometheus/Grafana duration (``1m30s``, ``5s``) in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, in order: top-level ones, those inside (collapsed) rows, and old-style ``rows[].panels``."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside it
    for row in dashboard.get("rows", []):
        yield from row.get("panels", [])


def template_defaults(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """A value for each dashboard variable: its current value, or ``.*`` for "All" (what Grafana sends)."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            continue
        current = (variable.get("current") or {}).get("value")
        if isinstance(current, list):
            current = current[0] if len(current) == 1 else None
        all_value = variable.get("allValue") or ".*"
        values[variable["name"]] = all_value if current in (None, "", "$__all") else str(current)
    return values


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana variables in ``expr``; unknown ones are left as they are (the query will say so)."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        return str(variables.get(name, match.group(0)))

    return _VARIABLE.sub(replace, expr)


def legend(fmt: str, labels: Mapping[str, Any]) -> str:
    """Grafana's ``legendFormat``: ``{{label}}`` replaced by the series' label; empty means all labels."""
    present = {k: v for k, v in labels.items() if isinstance(v, str)}
    if fmt and fmt != "__auto":
        # Stripped: a label that is empty at the end (an unset revision) leaves no dangling space.
        return _LEGEND.sub(lambda m: present.get(m.group(1), ""), fmt).strip()
    name = present.pop("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(present.items()))
    return f"{name}{{{inner}}}" if inner or not name else name


def panel_queries(
    dashboard: Mapping[str, Any],
    variables: Mapping[str, str] | None = None,
    rate_interval: str = "20s",
    interval: str = "5s",
    time_range: str = "5m",
) -> list[PanelQuery]:
    """Every query of the dashboard, ready to run: variables and Grafana's ``$__*`` intervals substituted."""
    # The dashboard's own defaults win over the generic ones: the LLM dashboard's job is "llm", not "wine".
    values = {**DEFAULT_VARIABLES, **template_defaults(dashboard), **(variables or {}),
              "__rate_interval": rate_interval, "__interval": interval, "__range": time_range}
    queries = []
    for panel in panels(dashboard):
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit", "")
        for target in panel.get("targets", []):
            if not target.get("expr") or target.get("hide"):
                continue
            queries.append(PanelQuery(
                panel=panel.get("title", ""), panel_type=panel.get("type", "timeseries"),
                ref_id=target.get("refId", "A"), expr=substitute(target["expr"], values),
                legend=target.get("legendFormat", ""),
                heatmap=panel.get("type") == "heatmap" or target.get("format") == "heatmap", unit=unit,
                instant=bool(target.get("instant")), thresholds=drawn_thresholds(defaults),
            ))
    return queries


def drawn_thresholds(defaults: Mapping[str, Any]) -> tuple[tuple[float, str], ...]:
    """The threshold steps a time series panel draws (its ``thresholdsStyle`` is not ``off``); the base step,
    whose value is null, starts below everything and is not a line."""
    if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off") == "off":
        return ()
    steps = defaults.get("thresholds", {}).get("steps", [])
    return tuple(sorted((float(step["value"]), GRAFANA_COLORS.get(step.get("color", ""), step.get("color", "grey")))
                        for step in steps if step.get("value") is not None))


def _series(frame: pd.DataFrame) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """A query_range frame split into its series: (labels, rows sorted by time)."""
    labels = [c for c in frame.columns if c not in ("timestamp", "value")]
    if not labels:
        yield {}, frame.sort_values("timestamp")
        return
    for key, rows in frame.groupby(labels, dropna=False, sort=True):
        values = dict(zip(labels, key if isinstance(key, tuple) else (key,), strict=True))
        yield values, rows.sort_values("timestamp")


def _format(value: float, unit: str) -> str:
    """A value in the panel's unit, as Grafana writes it: req/s, %, ms or s, MiB."""
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value:.1%}"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit == "reqps":
        return f"{value:.3g} req/s"
    if unit == "bytes":
        return f"{value / 2 ** 20:.3g} MiB"
    return f"{value:.3g}{' ' + unit if unit and unit not in ('short', 'none') else ''}"


def _bucket_bound(le: object) -> float:
    return math.inf if str(le) in ("+Inf", "inf") else float(str(le))


def _draw_heatmap(axes: Axes, frame: pd.DataFrame) -> None:
    """Cumulative ``le`` buckets -> count per bucket and time step, as an image (darker: more)."""
    grid = frame.pivot_table(index="le", columns="timestamp", values="value", aggfunc="sum")
    grid = grid.loc[sorted(grid.index, key=_bucket_bound)]
    counts = np.clip(np.diff(grid.to_numpy(), axis=0, prepend=0), 0, None)  # cumulative -> per bucket
    times = grid.columns
    axes.imshow(counts, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest",
                extent=(0, len(times), 0, len(grid.index)))
    ticks = range(0, len(grid.index), max(1, len(grid.index) // 6))
    axes.set_yticks([t + 0.5 for t in ticks], [str(grid.index[t]) for t in ticks])
    axes.set_ylabel("le (bucket upper bound)")
    xticks = range(0, len(times), max(1, len(times) // 4))
    axes.set_xticks([t + 0.5 for t in xticks], [times[t].strftime("%H:%M:%S") for t in xticks])


def _stat_lines(query: PanelQuery, frame: pd.DataFrame) -> list[str]:
    """A stat panel's numbers: the last value of each series, with its legend.

    An instant query only has the series present at the end of the range: one that stopped matching
    earlier (a state left, a model swapped out) is not shown, as Grafana would not show it.
    """
    if query.instant and not frame.empty:
        frame = frame[frame["timestamp"] == frame["timestamp"].max()]
    return [f"{legend(query.legend, labels) or query.ref_id}: {_format(rows['value'].iloc[-1], query.unit)}"
            for labels, rows in _series(frame)]


def _draw_panel(axes: Axes, results: list[tuple[PanelQuery, pd.DataFrame]]) -> None:
    """One subplot from the results of all the panel's queries."""
    first = results[0][0]
    if all(frame.empty for _, frame in results):
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, color="grey")
        axes.set_xticks([])
        axes.set_yticks([])
        return
    if first.panel_type in STAT_TYPES:
        lines = [line for query, frame in results for line in _stat_lines(query, frame)]
        axes.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", transform=axes.transAxes,
                  fontsize=14 if len(lines) == 1 else 9)
        axes.set_axis_off()
        return
    series = [(query, labels, rows) for query, frame in results if not (query.heatmap and "le" in frame.columns)
              for labels, rows in _series(frame)]
    for query, frame in results:
        if query.heatmap and "le" in frame.columns:
            _draw_heatmap(axes, frame)
    if len(series) > MAX_LINES_PER_PANEL:
        _draw_small_multiples(axes, series, first)
        return
    for query, labels, rows in series:
        sparse = len(rows) < 20  # a short range: show each point, or a lone one would be invisible
        axes.plot(rows["timestamp"], rows["value"], label=legend(query.legend, labels) or query.ref_id,
                  marker="o" if sparse else None, markersize=3)
    if axes.lines:
        _time_axis(axes, [rows for _, _, rows in series])
        _draw_thresholds(axes, first)
        if not first.heatmap:
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _format(value, first.unit)))
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="upper left")


def _time_axis(axes: Axes, frames: list[pd.DataFrame]) -> None:
    """Clock times on x; a range holding a single instant gets a minute either side, not a zero-width axis."""
    axes.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
    axes.tick_params(axis="x", labelrotation=20, labelsize=7)
    stamps = pd.concat([rows["timestamp"] for rows in frames])
    if stamps.min() == stamps.max():
        axes.set_xlim(stamps.min() - pd.Timedelta(minutes=1), stamps.max() + pd.Timedelta(minutes=1))


def _draw_thresholds(axes: Axes, query: PanelQuery) -> None:
    """The panel's thresholds as dashed lines over a faint band, as Grafana draws them. One far above the
    data (more than twice its top) would squash the lines to the floor: it is named in a corner instead."""
    if not query.thresholds:
        return
    low, high = axes.get_ylim()
    top = max(high, 0.0)
    shown = [(value, colour) for value, colour in query.thresholds if value <= 2 * top or top == 0]
    for index, (value, colour) in enumerate(shown):
        upper = shown[index + 1][0] if index + 1 < len(shown) else max(2 * top, value)
        axes.axhline(value, color=colour, linestyle="--", linewidth=1)
        axes.axhspan(value, upper, color=colour, alpha=0.08)
    above = [_format(value, query.unit) for value, colour in query.thresholds if (value, colour) not in shown]
    if above:
        axes.text(0.99, 0.97, "thresholds above: " + ", ".join(above), transform=axes.transAxes, ha="right",
                  va="top", fontsize=7, color="grey")
    axes.set_ylim(low, max(high, *(value for value, _ in shown)) if shown else high)


def _draw_small_multiples(axes: Axes, series: list[tuple[PanelQuery, dict[str, Any], pd.DataFrame]],
                          first: PanelQuery) -> None:
    """One small graph per series inside the panel, on a shared y scale: eleven features in ten colours
    cannot be told apart, eleven small graphs can."""
    axes.set_axis_off()
    columns = math.ceil(math.sqrt(len(series)))
    rows_needed = math.ceil(len(series) / columns)
    values = pd.concat([rows["value"] for _, _, rows in series])
    lower, upper = float(values.min()), float(values.max())
    for value, _ in first.thresholds:
        lower, upper = min(lower, value), max(upper, value)
    margin = (upper - lower) * 0.1 or 0.1
    width, height = 1 / columns, 1 / rows_needed
    for index, (query, labels, rows) in enumerate(series):
        column, row = index % columns, index // columns
        inset = axes.inset_axes((column * width + 0.02, 1 - (row + 1) * height + 0.08, width - 0.04, height - 0.16))
        inset.plot(rows["timestamp"], rows["value"], color="#1f77b4", marker="o" if len(rows) < 20 else None,
                   markersize=2, linewidth=1)
        for value, colour in first.thresholds:
            inset.axhline(value, color=colour, linestyle="--", linewidth=0.8)
        inset.set_ylim(lower - margin, upper + margin)
        inset.set_title(legend(query.legend, labels) or query.ref_id, fontsize=7, pad=2)
        inset.set_xticks([])
        inset.tick_params(axis="y", labelsize=6)
        inset.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _format(value, first.unit)))


def preview_dashboard(
    dashboard_path: Path | str,
    prometheus_url: str,
    start: datetime,
    end: datetime | None = None,
    step: str = "5s",
    variables: Mapping[str, str] | None = None,
    rate_interval: str | None = None,
    only: Iterable[str] | None = None,
    columns: int = 2,
) -> Figure:
    """Each panel of the dashboard (those whose title contains one of ``only``, if given) as a subplot.

    The figure's ``empty_panels`` lists the panels that drew nothing (no query returned a sample): with a
    rate window shorter than two scrapes, every ``rate()`` panel would be one of them.

    ``$__rate_interval`` defaults to four steps, what Grafana uses at a 1 s scrape interval: every
    rate() window then holds several scrapes.
    """
    dashboard = json.loads(Path(dashboard_path).read_text())
    end = end or datetime.now(tz=start.tzinfo)
    rate_interval = rate_interval or f"{round(4 * seconds(step))}s"
    queries = panel_queries(dashboard, variables, rate_interval=rate_interval, interval=step,
                            time_range=f"{max(1, round((end - start).total_seconds()))}s")
    wanted = list(only or [])
    if wanted:
        queries = [q for q in queries if any(w.lower() in q.panel.lower() for w in wanted)]
    titles = list(dict.fromkeys(q.panel for q in queries))
    rows = max(1, math.ceil(len(titles) / columns))
    figure = Figure(figsize=(6 * min(columns, max(1, len(titles))), 3.2 * rows), layout="constrained")
    grid = figure.subplots(rows, min(columns, max(1, len(titles))), squeeze=False).ravel()
    for axes in grid[len(titles):]:
        axes.set_axis_off()
    figure.empty_panels = []  # titles of panels none of whose queries returned a sample
    for axes, title in zip(grid, titles, strict=False):
        results = [(q, query_range(prometheus_url, q.expr, start, end, step)) for q in queries if q.panel == title]
        if all(frame.empty for _, frame in results):
            figure.empty_panels.append(title)
        _draw_panel(axes, results)
        axes.set_title(title, fontsize=10)
    return figure


def recent(minutes: float) -> datetime:
    """``minutes`` ago, timezone-aware: a convenient ``start``."""
    return datetime.now().astimezone() - timedelta(minutes=minutes)
