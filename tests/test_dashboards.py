"""The dashboards as code: committed JSON up to date, a sound layout, and PromQL that Prometheus accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from workshop.__main__ import main
from workshop.observability import llm_alerts
from workshop.observability.dashboards import (
    DASHBOARDS,
    build_model_dashboard,
    panel_queries,
    render,
)
from workshop.observability.llm_dashboard import build_llm_dashboard

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'job=~"$job", namespace=~"$namespace"'
# What Grafana would substitute: enough for Prometheus to parse and evaluate the expressions.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$job": "wine", "$namespace": ".*"}
PROMTOOL_HINT = "promtool not on PATH: install Prometheus (apt-get install prometheus, or the release tarball)"

# Each topic of the dashboard, and the metrics its queries must read.
TOPICS = {
    "request rate": {"http_requests_total"},
    "error ratio": {"http_requests_total"},
    "latency": {"http_request_duration_seconds_bucket"},
    "in-flight": {"http_requests_in_flight"},
    "predicted quality": {"wine_predicted_quality_bucket"},
    "mean prediction": {"wine_predicted_quality_sum", "wine_predicted_quality_count", "wine_training_prediction_mean"},
    "drift": {"wine_input_feature_sum_total", "wine_input_rows_total", "wine_training_feature_mean"},
    "rejected": {"wine_rejected_inputs_total"},
    "model version": {"wine_model_info"},
    "cpu": {"process_cpu_seconds_total"},
    "memory": {"process_resident_memory_bytes"},
}
KNOWN_METRICS = set().union(*TOPICS.values())
# The LLM dashboard's topics and the metrics each reads (the names app/llm exports).
LLM_TOPICS = {
    "lifecycle state": {"llm_lifecycle_state"},
    "state history": {"llm_lifecycle_state"},
    "serving model": {"llm_model_info"},
    "completions by outcome": {"llm_completions_total"},
    "tokens per second in": {"llm_prompt_tokens_total", "llm_completion_tokens_total"},
    "generation latency": {"llm_generation_seconds_bucket", "http_request_duration_seconds_bucket"},
    "generation speed": {"llm_tokens_per_second_bucket"},
    "time to first token": {"llm_time_to_first_token_seconds_bucket"},
    "queue depth": {"llm_queue_depth"},
    "load duration": {"llm_model_load_seconds_sum", "llm_model_load_seconds_count"},
    "swaps": {"llm_model_swaps_total"},
    "request rate": {"http_requests_total"},
    "error ratio": {"http_requests_total"},
    "cpu": {"process_cpu_seconds_total"},
    "memory": {"process_resident_memory_bytes"},
}
LLM_METRICS = set().union(*LLM_TOPICS.values())


@dataclass(frozen=True)
class Expected:
    """What each dashboard must be: its identity, the job it watches and the metrics it may read."""

    title: str
    uid: str
    job: str
    discovery_metric: str
    metrics: frozenset[str]


EXPECTED = {
    "model.json": Expected("Wine model", "wine-model", "wine", "wine_model_info", frozenset(KNOWN_METRICS)),
    "llm.json": Expected("LLM service", "llm-service", "llm", "llm_lifecycle_state", frozenset(LLM_METRICS)),
}
SELECTOR_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return build_model_dashboard()


@pytest.fixture(scope="module")
def llm() -> dict:
    return build_llm_dashboard()


@pytest.fixture(scope="module", params=sorted(DASHBOARDS))
def named(request: pytest.FixtureRequest) -> tuple[str, dict]:
    """Each dashboard by file name: the checks every dashboard of the workshop must pass."""
    return request.param, DASHBOARDS[request.param]()


def all_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def content_panels(dashboard: dict) -> list[dict]:
    """Panels that show data (rows are only headers)."""
    return [p for p in all_panels(dashboard["panels"]) if p["type"] != "row"]


def panel_by_topic(dashboard: dict, topic: str) -> dict:
    matches = [p for p in content_panels(dashboard) if topic in p["title"].lower()]
    assert len(matches) == 1, f"expected one panel titled with {topic!r}, got {[p['title'] for p in matches]}"
    return matches[0]


def substitute(expr: str, job: str = "wine") -> str:
    for variable, value in {**SUBSTITUTIONS, "$job": job}.items():
        expr = expr.replace(variable, value)
    return expr


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(PROMTOOL_HINT)
    return path


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_committed_json_is_up_to_date(name: str) -> None:
    committed = PROJECT_ROOT / "dashboards" / name
    assert committed.is_file(), f"dashboards/{name} is missing: run `python -m workshop dashboards`"
    assert committed.read_text(encoding="utf-8") == render(DASHBOARDS[name]()), (
        f"dashboards/{name} is stale: run `python -m workshop dashboards` and commit the result"
    )


def test_check_flag_names_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "--check", "--out", str(tmp_path)]) == 1
    assert "model.json" in capsys.readouterr().err
    assert main(["dashboards", "--out", str(tmp_path)]) == 0
    assert main(["dashboards", "--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "model.json").write_text("{}\n", encoding="utf-8")
    assert main(["dashboards", "--check", "--out", str(tmp_path)]) == 1


def test_every_dashboard_is_expected() -> None:
    assert set(DASHBOARDS) == set(EXPECTED)


def test_render_is_stable(named: tuple[str, dict]) -> None:
    name, dashboard = named
    text = render(dashboard)
    assert text.endswith("}\n")
    assert text == render(DASHBOARDS[name]())
    assert json.loads(text) == dashboard


def test_dashboard_identity(named: tuple[str, dict]) -> None:
    name, dashboard = named
    assert dashboard["title"] == EXPECTED[name].title
    assert dashboard["uid"] == EXPECTED[name].uid
    assert len({DASHBOARDS[n]()["uid"] for n in DASHBOARDS}) == len(DASHBOARDS), "Grafana keys dashboards by uid"
    assert dashboard.get("id") is None, "a numeric id belongs to one Grafana instance; import assigns it"
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["annotations"] == {"list": []}


def test_panel_ids_are_unique(named: tuple[str, dict]) -> None:
    _, dashboard = named
    ids = [p.get("id") for p in all_panels(dashboard["panels"])]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(ids) == len(set(ids)), ids


def test_panels_fit_the_grid_without_overlapping(named: tuple[str, dict]) -> None:
    _, dashboard = named
    rectangles = []
    for panel in all_panels(dashboard["panels"]):
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"{panel['title']} leaves the 24 columns: {pos}"
        rectangles.append((panel["title"], pos))
    for index, (title_a, a) in enumerate(rectangles):
        for title_b, b in rectangles[index + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{title_a} {a} overlaps {title_b} {b}"


def test_every_panel_and_target_uses_the_datasource_variable(named: tuple[str, dict]) -> None:
    _, dashboard = named
    for panel in all_panels(dashboard["panels"]):
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        for target in panel.get("targets") or []:
            assert target.get("datasource") == DATASOURCE, (panel["title"], target.get("refId"))


def test_template_variables(named: tuple[str, dict]) -> None:
    name, dashboard = named
    expected = EXPECTED[name]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) >= {"datasource", "job", "namespace"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    job, namespace = variables["job"], variables["namespace"]
    assert job["type"] == namespace["type"] == "query"
    assert job["query"] == f"label_values({expected.discovery_metric}, job)"
    assert job["current"]["value"] == expected.job
    assert namespace["query"] == f"label_values({expected.discovery_metric}, namespace)"
    # ".*" also matches a series without the label: the local Prometheus has no namespace.
    assert namespace["includeAll"] is True
    assert namespace["allValue"] == ".*"
    assert job["datasource"] == namespace["datasource"] == DATASOURCE


def test_every_panel_teaches_what_it_shows(named: tuple[str, dict]) -> None:
    _, dashboard = named
    for panel in content_panels(dashboard):
        assert len(panel.get("description", "").strip()) > 80, f"{panel['title']} needs a description"


def test_every_target_has_ref_id_and_legend(named: tuple[str, dict]) -> None:
    _, dashboard = named
    for panel in content_panels(dashboard):
        targets = panel.get("targets") or []
        assert targets, f"{panel['title']} has no query"
        ref_ids = [t.get("refId") for t in targets]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), (panel["title"], ref_ids)
        assert all(t.get("legendFormat") for t in targets), panel["title"]


def test_every_selector_filters_job_and_namespace(named: tuple[str, dict]) -> None:
    file_name, dashboard = named
    known = EXPECTED[file_name].metrics
    for title, ref_id, expr in panel_queries(dashboard):
        selectors = SELECTOR_RE.findall(expr)
        assert selectors, (title, ref_id, expr)
        for name, matchers in selectors:
            assert name in known, f"{title}/{ref_id}: unknown metric {name}"
            assert matchers.startswith(SELECTOR), f"{title}/{ref_id}: {name} is not filtered on job and namespace"
        # A metric name used bare (without braces) would escape the filter.
        for name in known:
            assert len(re.findall(rf"\b{name}\b", expr)) == len(re.findall(rf"\b{name}\{{", expr)), (title, name)


def test_rate_windows_use_rate_interval(named: tuple[str, dict]) -> None:
    _, dashboard = named
    for title, ref_id, expr in panel_queries(dashboard):
        windows = re.findall(r"\[([^\]]*)\]", expr)
        assert all(w == "$__rate_interval" for w in windows), (title, ref_id, windows)


def test_panels_cover_the_topics(dashboard: dict) -> None:
    for topic, metrics in TOPICS.items():
        panel = panel_by_topic(dashboard, topic)
        used = {name for target in panel["targets"] for name, _ in SELECTOR_RE.findall(target["expr"])}
        assert metrics <= used, f"{panel['title']} should read {metrics - used}"


def test_latency_percentiles_per_handler_without_probes(dashboard: dict) -> None:
    panel = panel_by_topic(dashboard, "latency")
    exprs = [t["expr"] for t in panel["targets"]]
    assert [re.match(r"histogram_quantile\(([0-9.]+),", e).group(1) for e in exprs] == ["0.5", "0.95", "0.99"]
    for expr in exprs:
        assert "sum by (le, handler) (rate(http_request_duration_seconds_bucket{" in expr
        assert 'handler!~"/health|/ready|/metrics"' in expr
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_quality_heatmap_reads_buckets(dashboard: dict) -> None:
    panel = panel_by_topic(dashboard, "predicted quality")
    assert panel["type"] == "heatmap"
    (target,) = panel["targets"]
    assert target["format"] == "heatmap"
    assert target["expr"].startswith("sum by (le) (increase(wine_predicted_quality_bucket{")
    assert panel["options"]["calculate"] is False, "the buckets are already a histogram"


def test_model_version_shows_the_version(dashboard: dict) -> None:
    panel = panel_by_topic(dashboard, "model version")
    assert [t["legendFormat"] for t in panel["targets"]] == ["{{version}}"]


def test_drift_is_one_line_per_feature(dashboard: dict) -> None:
    (target,) = panel_by_topic(dashboard, "drift")["targets"]
    assert target["legendFormat"] == "{{feature}}"


def test_units(dashboard: dict) -> None:
    units = {topic: panel_by_topic(dashboard, topic)["fieldConfig"]["defaults"].get("unit") for topic in TOPICS}
    assert units["cpu"] == "percentunit"
    assert units["memory"] == "bytes"
    assert units["error ratio"] == "percentunit"
    assert units["request rate"] == "reqps"


def test_panel_queries_include_nested_panels() -> None:
    dashboard = {
        "panels": [
            {
                "type": "row",
                "title": "collapsed",
                "panels": [{"title": "inner", "targets": [{"refId": "A", "expr": "up"}]}],
            },
            {"title": "outer", "targets": [{"refId": "B", "expr": "vector(1)"}]},
        ]
    }
    assert panel_queries(dashboard) == [("inner", "A", "up"), ("outer", "B", "vector(1)")]


def test_every_expression_parses(named: tuple[str, dict], tmp_path: Path) -> None:
    """promtool parses each expression, as a recording rule, with the variables substituted."""
    binary = promtool()
    _, dashboard = named
    queries = panel_queries(dashboard)
    assert len(queries) >= 10
    rules = [
        {"record": f"dashboard:panel_{index}:{ref_id.lower()}", "expr": substitute(expr)}
        for index, (_, ref_id, expr) in enumerate(queries)
    ]
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([binary, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def evaluate(
    tmp_path: Path, series: dict[str, str], expr: str, expected: list[tuple[str, float]], job: str = "wine"
) -> None:
    """Evaluate ``expr`` at 10m on synthetic series with ``promtool test rules``; assert its samples.

    Rate windows widen to 5m (five samples) and values are rounded: promtool compares floats exactly.
    """
    binary = promtool()
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "promql_expr_test": [
                    {
                        "expr": f"round({substitute(expr, job).replace('[1m]', '[5m]')}, 0.0001)",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": labels, "value": value} for labels, value in expected],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "dashboard_test.yml"
    test_file.write_text(json.dumps(test), encoding="utf-8")
    result = subprocess.run([binary, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_drift_is_mean_input_over_training_mean(dashboard: dict, tmp_path: Path) -> None:
    """Two colours, two instances, no namespace label: alcohol at twice its training mean reads 2.0."""
    (target,) = panel_by_topic(dashboard, "drift")["targets"]
    series = {
        # 4 rows a minute in all, alcohol summing to 40 a minute: a mean input of 10.
        'wine_input_rows_total{job="wine", instance="a", color="red"}': "0+1x10",
        'wine_input_rows_total{job="wine", instance="b", color="white"}': "0+3x10",
        'wine_input_feature_sum_total{job="wine", instance="a", feature="alcohol"}': "0+10x10",
        'wine_input_feature_sum_total{job="wine", instance="b", feature="alcohol"}': "0+30x10",
        'wine_input_feature_sum_total{job="wine", instance="a", feature="density"}': "0+1x10",
        'wine_input_feature_sum_total{job="wine", instance="b", feature="density"}': "0+3x10",
        'wine_training_feature_mean{job="wine", instance="a", feature="alcohol"}': "5x10",
        'wine_training_feature_mean{job="wine", instance="b", feature="alcohol"}': "5x10",
        'wine_training_feature_mean{job="wine", instance="a", feature="density"}': "1x10",
        'wine_training_feature_mean{job="wine", instance="b", feature="density"}': "1x10",
        # Another job is filtered out.
        'wine_input_rows_total{job="other", instance="c", color="red"}': "0+100x10",
    }
    evaluate(tmp_path, series, target["expr"], [('{feature="alcohol"}', 2.0), ('{feature="density"}', 1.0)])


def test_error_ratio_is_zero_without_5xx(dashboard: dict, tmp_path: Path) -> None:
    """No 5xx series at all must read 0 (not "no data"); 4xx is its own share."""
    target = panel_by_topic(dashboard, "error ratio")["targets"][0]
    assert target["legendFormat"] == "5xx share"
    series = {
        'http_requests_total{job="wine", instance="a", handler="/predict", method="POST", status="2xx"}': "0+30x10",
        'http_requests_total{job="wine", instance="a", handler="/predict", method="POST", status="4xx"}': "0+10x10",
    }
    evaluate(tmp_path, series, target["expr"], [("{}", 0.0)])
    series['http_requests_total{job="wine", instance="a", handler="/predict", method="POST", status="5xx"}'] = "0+10x10"
    evaluate(tmp_path, series, target["expr"], [("{}", 0.2)])


# --- The LLM dashboard ----------------------------------------------------------------------------------


def test_llm_panels_cover_the_topics(llm: dict) -> None:
    for topic, metrics in LLM_TOPICS.items():
        panel = panel_by_topic(llm, topic)
        used = {name for target in panel["targets"] for name, _ in SELECTOR_RE.findall(target["expr"])}
        assert metrics <= used, f"{panel['title']} should read {metrics - used}"


def test_llm_dashboard_reads_only_what_the_service_exports() -> None:
    """Every metric the dashboard and the alert rules read is on a real LLM app's /metrics (no model needed)."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from app.llm.api import create_app
    from app.llm.config import Settings

    with TestClient(create_app(Settings(default_model=""))) as client:
        assert client.get("/health").status_code == 200
        text = client.get("/metrics").text
    families = list(text_string_to_metric_families(text))
    # A labelled gauge with no series yet (llm_model_info while nothing serves) has only its family.
    exported = {sample.name for family in families for sample in family.samples}
    exported |= {family.name for family in families if family.type == "gauge"}
    read_by_dashboard = {name for _, _, expr in panel_queries(build_llm_dashboard()) for name, _ in
                         SELECTOR_RE.findall(expr)}
    assert read_by_dashboard <= exported, read_by_dashboard - exported
    read_by_alerts = {name for expr in llm_alerts.LLM_ALERTS.expressions().values()
                      for name, _ in SELECTOR_RE.findall(expr)} - {"up"}  # up is Prometheus' own
    assert read_by_alerts <= exported, read_by_alerts - exported


def test_llm_state_and_model_are_stats_naming_the_state_and_model(llm: dict) -> None:
    state, model = panel_by_topic(llm, "lifecycle state"), panel_by_topic(llm, "serving model")
    assert state["type"] == model["type"] == "stat"
    assert [t["legendFormat"] for t in state["targets"]] == ["{{state}}"]
    assert "{{model_id}}" in model["targets"][0]["legendFormat"]
    assert all(t.get("instant") for t in state["targets"] + model["targets"])


def test_llm_generation_latency_draws_the_alert_threshold(llm: dict) -> None:
    panel = panel_by_topic(llm, "generation latency")
    *generation, request = [t["expr"] for t in panel["targets"]]
    assert [re.match(r"histogram_quantile\(([0-9.]+),", e).group(1) for e in generation] == ["0.5", "0.95", "0.99"]
    assert all("llm_generation_seconds_bucket{" in expr for expr in generation)
    # What the client waits, queueing included, for comparison.
    assert request.startswith("histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{")
    assert 'handler="/completion"' in request
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"
    steps = [step["value"] for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert llm_alerts.GENERATION_P95_SECONDS in steps


def test_llm_state_counts_instances_per_state(llm: dict, tmp_path: Path) -> None:
    """Two pods, one RUNNING and one LOADING (a rollout), and another job's state filtered out."""
    (target,) = panel_by_topic(llm, "lifecycle state")["targets"]
    series = {}
    for pod, current in (("a", "RUNNING"), ("b", "LOADING")):
        for state in ("NOT_DEPLOYED", "LOADING", "RUNNING", "FAILED"):
            series[f'llm_lifecycle_state{{job="llm", instance="{pod}", state="{state}"}}'] = (
                f"{int(state == current)}x10"
            )
    series['llm_lifecycle_state{job="other", instance="c", state="FAILED"}'] = "1x10"
    evaluate(tmp_path, series, target["expr"], [('{state="RUNNING"}', 1.0), ('{state="LOADING"}', 1.0)], job="llm")


def test_llm_serving_model_ignores_models_no_longer_serving(llm: dict, tmp_path: Path) -> None:
    (target,) = panel_by_topic(llm, "serving model")["targets"]
    labels = 'dtype="float32", revision="main", source="local"'
    series = {
        f'llm_model_info{{job="llm", instance="a", model_id="tiny-b", {labels}}}': "1x10",
        f'llm_model_info{{job="llm", instance="b", model_id="tiny-b", {labels}}}': "1x10",
        f'llm_model_info{{job="llm", instance="b", model_id="tiny-a", {labels}}}': "0x10",
    }
    expected = [(f'{{model_id="tiny-b", {labels}}}', 2.0)]
    evaluate(tmp_path, series, target["expr"], expected, job="llm")


def test_llm_load_duration_is_the_mean_of_the_loads_in_the_window(llm: dict, tmp_path: Path) -> None:
    """Two successful loads of 3 s and 5 s at minute 6, one failure of 1 s: means 4 s and 1 s."""
    in_window, since_start = (t["expr"] for t in panel_by_topic(llm, "load duration")["targets"])
    series = {
        'llm_model_load_seconds_sum{job="llm", instance="a", outcome="success"}': "2x5 10x5",
        'llm_model_load_seconds_count{job="llm", instance="a", outcome="success"}': "1x5 3x5",
        'llm_model_load_seconds_sum{job="llm", instance="a", outcome="failure"}': "0x5 1x5",
        'llm_model_load_seconds_count{job="llm", instance="a", outcome="failure"}': "0x5 1x5",
    }
    evaluate(tmp_path, series, in_window, [('{outcome="success"}', 4.0), ('{outcome="failure"}', 1.0)], job="llm")
    # Since start, the load at start-up (2 s) counts too: 10 s over 3 loads.
    evaluate(tmp_path, series, since_start, [('{outcome="success"}', 3.3333), ('{outcome="failure"}', 1.0)],
             job="llm")
