"""The dashboard preview: Grafana's variables and legends, then every panel drawn from a real Prometheus."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime, timedelta

import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from tests.conftest import PROJECT_ROOT
from workshop.preview import (
    PanelQuery,
    _draw_panel,
    _stat_lines,
    legend,
    panel_queries,
    panels,
    preview_dashboard,
    seconds,
    substitute,
)
from workshop.prometheus import INSTALL_HINT, next_scrape
from workshop.targets import LocalTarget
from workshop.traffic import send_traffic

SELECTOR = 'job=~"$job", namespace=~"$namespace"'

# A small dashboard written by hand, in the shapes Grafana exports: a top-level panel, a collapsed row
# holding its panels, and an old-style rows[] section.
DASHBOARD = {
    "title": "handwritten",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus"},
        {"name": "job", "type": "query", "current": {"text": "wine", "value": "wine"}},
        {"name": "namespace", "type": "query", "allValue": ".*", "current": {"text": "All", "value": "$__all"}},
    ]},
    "panels": [
        {"type": "timeseries", "title": "Requests", "fieldConfig": {"defaults": {"unit": "reqps"}},
         "datasource": {"uid": "${datasource}"},
         "targets": [{"refId": "A", "legendFormat": "{{handler}} {{ status }}",
                      "expr": f"sum by (handler, status) "
                              f"(rate(http_requests_total{{{SELECTOR}}}[$__rate_interval]))"}]},
        {"type": "row", "title": "Model", "collapsed": True, "panels": [
            {"type": "stat", "title": "Version",
             "targets": [{"refId": "A", "legendFormat": "{{version}}",
                          "expr": f"count by (version) (wine_model_info{{{SELECTOR}}})"}]},
            {"type": "heatmap", "title": "Predictions",
             "targets": [{"refId": "A", "format": "heatmap", "legendFormat": "{{le}}",
                          "expr": "sum by (le) (increase(wine_predicted_quality_bucket{job=~\"${job}\"}"
                                  "[$__rate_interval]))"}]},
        ]},
    ],
    "rows": [{"panels": [
        {"type": "graph", "title": "Up", "targets": [{"refId": "A", "expr": "up{job=\"[[job]]\"}"}]},
    ]}],
}


def test_every_panel_is_found_rows_included():
    assert [p["title"] for p in panels(DASHBOARD)] == ["Requests", "Model", "Version", "Predictions", "Up"]


def test_variables_are_substituted_in_every_syntax():
    values = {"job": "wine", "namespace": ".*", "__rate_interval": "20s"}
    assert substitute('x{job="$job", ns=~"${namespace}", j="[[job]]"}[$__rate_interval]', values) == \
        'x{job="wine", ns=~".*", j="wine"}[20s]'
    assert substitute('x{job="${job:regex}", y="$unknown"}', values) == 'x{job="wine", y="$unknown"}'


def test_queries_take_the_dashboards_defaults_and_the_callers_variables():
    queries = panel_queries(DASHBOARD, {"job": "other"}, rate_interval="8s")
    assert [(q.panel, q.heatmap) for q in queries] == [
        ("Requests", False), ("Version", False), ("Predictions", True), ("Up", False)]
    assert queries[0].expr == 'sum by (handler, status) (rate(http_requests_total{job=~"other", namespace=~".*"}[8s]))'
    assert queries[0].unit == "reqps"
    assert "$" not in "".join(q.expr for q in queries)


def test_legend_format_substitutes_labels():
    labels = {"__name__": "up", "handler": "/predict", "status": "2xx", "missing": float("nan")}
    assert legend("{{handler}} {{ status }}", labels) == "/predict 2xx"
    assert legend("{{missing}}!", labels) == "!"
    assert legend("{{handler}} {{missing}}", labels) == "/predict"
    assert legend("", labels) == 'up{handler="/predict", status="2xx"}'


def test_an_instant_stat_shows_only_the_series_present_at_the_end():
    """A state left during the range (RUNNING, then FAILED) is not the current value of an instant stat."""
    times = pd.to_datetime([0, 1, 2, 3], unit="s", utc=True)
    frame = pd.DataFrame({
        "timestamp": [*times[:2], *times[2:]],
        "state": ["RUNNING", "RUNNING", "FAILED", "FAILED"],
        "value": [1.0, 1.0, 1.0, 1.0],
    })
    query = PanelQuery(panel="State", panel_type="stat", ref_id="A", expr="x", legend="{{state}}", heatmap=False,
                       unit="short", instant=True)
    assert _stat_lines(query, frame) == ["FAILED: 1"]
    assert _stat_lines(replace(query, instant=False), frame) == ["FAILED: 1", "RUNNING: 1"]


def test_durations():
    assert seconds("5s") == 5 and seconds("1m30s") == 90 and seconds("250ms") == 0.25
    with pytest.raises(ValueError, match="not a duration"):
        seconds("soon")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason=INSTALL_HINT)
def test_preview_draws_each_panel_from_a_real_prometheus(model_dir, tmp_path):
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(DASHBOARD))
    target = LocalTarget(log_dir=tmp_path)
    try:
        service = target.deploy_wine(model_dir)
        start = datetime.now().astimezone() - timedelta(seconds=2)
        url = target.start_monitoring(rule_files=[])
        for seed in (1, 2):  # two rounds, a scrape after each: every rate() has something to say
            assert send_traffic(service.url, "valid", 30, seed=seed) == {200: 30}
            assert send_traffic(service.url, "invalid", 5, seed=seed) == {422: 5}
            next_scrape(url)
        # One more scrape: a range query's last step can fall just before the latest sample.
        next_scrape(url)

        figure = preview_dashboard(path, url, start, step="1s", rate_interval="30s")
    finally:
        target.teardown()

    assert isinstance(figure, Figure)
    drawn = {axes.get_title(): axes for axes in figure.axes if axes.get_title()}
    assert set(drawn) == {"Requests", "Version", "Predictions", "Up"}
    requests = {line.get_label() for line in drawn["Requests"].get_lines()}
    assert {"/predict 2xx", "/predict 4xx"} <= requests
    version = json.loads((model_dir / "model_card.json").read_text())["version"]
    assert [t.get_text() for t in drawn["Version"].texts] == [f"{version}: 1"]
    assert any(isinstance(image, AxesImage) for image in drawn["Predictions"].get_images())
    assert drawn["Predictions"].get_images()[0].get_array().sum() > 0
    assert [line.get_label() for line in drawn["Up"].get_lines()] == [
        f'up{{instance="{service.url.removeprefix("http://")}", job="wine"}}']


def test_each_workshop_dashboard_queries_its_own_job():
    """The dashboard's job variable wins over the generic default: llm.json must not query job "wine"."""
    for name, job in (("model.json", "wine"), ("llm.json", "llm")):
        dashboard = json.loads((PROJECT_ROOT / "dashboards" / name).read_text())
        queries = panel_queries(dashboard)
        assert queries, name
        for query in queries:
            assert f'job=~"{job}"' in query.expr, (name, query.panel, query.expr)
            assert "$" not in query.expr, (name, query.panel, query.expr)
    # Without a job variable of its own, a dashboard gets the generic default.
    bare = {"panels": [{"title": "Up", "targets": [{"refId": "A", "expr": 'up{job="$job"}'}]}]}
    assert panel_queries(bare)[0].expr == 'up{job="wine"}'
    assert panel_queries(bare, {"job": "llm"})[0].expr == 'up{job="llm"}'


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason=INSTALL_HINT)
def test_preview_draws_the_llm_dashboard_from_a_real_service(tmp_path):
    """A tiny model served, chatted with, swapped once and failed once; every LLM panel then has data."""
    pytest.importorskip("transformers", reason="the LLM service needs the llm extra: pip install -e '.[llm]'")
    from workshop.llm_client import LLMClient
    from workshop.tiny_llm import build_broken_model, build_tiny_chat_model

    models = tmp_path / "models"
    build_tiny_chat_model(models / "tiny-a", seed=0, name="tiny-a")
    build_tiny_chat_model(models / "tiny-b", seed=1, name="tiny-b")
    build_broken_model(models / "no-template", "no-chat-template")
    target = LocalTarget(log_dir=tmp_path / "logs")
    try:
        service = target.deploy_llm(models, default_model="tiny-a", timeout=120)
        start = datetime.now().astimezone() - timedelta(seconds=2)
        url = target.start_monitoring(rule_files=[])
        client = LLMClient(service.url)
        for seed in range(3):
            answer = client.complete(f"Hello {seed}", max_new_tokens=8)
            assert answer["model"] == "tiny-a"
        assert [event["event"] for event in client.stream("Stream, please", max_new_tokens=4)][-1] == "done"
        next_scrape(url, job="llm")
        assert client.swap_and_wait("tiny-b", timeout=60)["state"] == "RUNNING"
        assert client.complete("And now?", max_new_tokens=8)["model"] == "tiny-b"
        assert client.swap_and_wait("no-template", timeout=60)["state"] == "FAILED"
        next_scrape(url, job="llm")
        next_scrape(url, job="llm")

        dashboard = PROJECT_ROOT / "dashboards" / "llm.json"
        figure = preview_dashboard(dashboard, url, start, step="1s", rate_interval="30s")
    finally:
        target.teardown()

    drawn = {axes.get_title(): axes for axes in figure.axes if axes.get_title()}
    titles = {panel["title"] for panel in panels(json.loads(dashboard.read_text())) if panel["type"] != "row"}
    assert set(drawn) == titles
    assert [t.get_text() for t in drawn["Lifecycle state"].texts] == ["FAILED: 1"]
    assert [t.get_text() for t in drawn["Serving model"].texts] == ["tiny-b (float32, local): 1"]
    outcomes = {line.get_label() for line in drawn["Completions by outcome"].get_lines()}
    assert "success" in outcomes
    swaps_axes = drawn["Model swaps by outcome (since start)"]
    swaps = {line.get_label(): line.get_ydata()[-1] for line in swaps_axes.get_lines()}
    assert swaps == {"success": 2, "failure": 1}  # the load at start, the swap to tiny-b; the broken model
    for title in ("Generation latency p50 / p95 / p99", "Time to first token p50 / p95 (streaming)",
                  "Tokens per second in (prompt) and out (completion)", "Model load duration"):
        assert drawn[title].get_lines(), f"{title} has no data"


def _frame(times, values, **labels):
    return pd.DataFrame({**{k: [v] * len(values) for k, v in labels.items()},
                         "timestamp": pd.to_datetime(times, unit="s", utc=True), "value": values})


def _drawn(query, *frames):
    figure = Figure()
    axes = figure.subplots()
    _draw_panel(axes, [(query, frame) for frame in frames])
    figure.canvas.draw()
    return axes


@pytest.mark.parametrize(("unit", "value", "text"), [
    ("reqps", 12.5, "12.5 req/s"), ("percentunit", 0.1667, "16.7%"), ("s", 0.0042, "4.2 ms"), ("s", 2.5, "2.5 s"),
    ("bytes", 64 * 2 ** 20, "64 MiB"), ("short", 3.0, "3"),
])
def test_the_y_axis_speaks_the_panels_unit(unit, value, text):
    query = PanelQuery(panel="P", panel_type="timeseries", ref_id="A", expr="x", legend="", heatmap=False, unit=unit)
    axes = _drawn(query, _frame([0, 15, 30], [value, value, value]))
    assert axes.yaxis.get_major_formatter()(value, 0) == text


def test_the_dashboards_thresholds_are_the_alert_rules_and_are_drawn_near_the_data():
    from workshop.observability.alerts import ERROR_RATIO_THRESHOLD, FEATURE_DRIFT_THRESHOLD, LATENCY_SLO_SECONDS

    queries = {q.panel: q for q in panel_queries(json.loads((PROJECT_ROOT / "dashboards" / "model.json").read_text()))}
    latency = queries["Latency p50 / p95 / p99 by handler"]
    assert [v for v, _ in latency.thresholds] == [LATENCY_SLO_SECONDS[0.5], LATENCY_SLO_SECONDS[0.99]]
    assert [v for v, _ in queries["Error ratio (5xx share)"].thresholds] == [ERROR_RATIO_THRESHOLD]
    drift = queries["Input drift per feature (mean input / training mean)"]
    assert [v for v, _ in drift.thresholds] == [1 - FEATURE_DRIFT_THRESHOLD, 1 + FEATURE_DRIFT_THRESHOLD]

    fast = _drawn(latency, _frame([0, 15, 30], [0.004, 0.005, 0.006]))
    assert not [line for line in fast.lines if line.get_linestyle() == "--"], "300 ms would squash 5 ms to the floor"
    assert "thresholds above: 50 ms, 300 ms" in [text.get_text() for text in fast.texts]
    slow = _drawn(latency, _frame([0, 15, 30], [0.1, 0.2, 0.25]))
    dashed = sorted(line.get_ydata()[0] for line in slow.lines if line.get_linestyle() == "--")
    assert dashed == [0.05, 0.3] and slow.get_ylim()[1] >= 0.3
    assert len(slow.patches) == 2, "a faint band above each threshold"


def test_more_series_than_colours_become_small_multiples_on_one_scale():
    features = [f"feature_{n}" for n in range(11)]
    query = PanelQuery(panel="Drift", panel_type="timeseries", ref_id="A", expr="x", legend="{{feature}}",
                       heatmap=False, unit="none", thresholds=((0.75, "green"), (1.25, "orange")))
    frame = pd.concat([_frame([0, 15, 30], [1.0, 1.0 + n / 10, 1.1], feature=name) for n, name in enumerate(features)])
    axes = _drawn(query, frame)
    insets = axes.child_axes
    assert [inset.get_title() for inset in insets] == sorted(features)
    assert len({inset.get_ylim() for inset in insets}) == 1, "one scale, so the graphs compare"
    assert all(len(inset.lines) == 3 for inset in insets), "the series and its two threshold lines"


def test_a_range_with_a_single_instant_gets_a_readable_time_axis():
    query = PanelQuery(panel="P", panel_type="timeseries", ref_id="A", expr="x", legend="", heatmap=False,
                       unit="short")
    axes = _drawn(query, _frame([100], [1.0]))
    low, high = axes.get_xlim()
    assert (high - low) * 24 * 60 == pytest.approx(2), "a minute either side, in matplotlib's days"
