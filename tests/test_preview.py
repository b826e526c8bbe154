"""The dashboard preview: Grafana's variables and legends, then every panel drawn from a real Prometheus."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import pytest
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from workshop.preview import legend, panel_queries, panels, preview_dashboard, seconds, substitute
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
    assert legend("", labels) == 'up{handler="/predict", status="2xx"}'


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
