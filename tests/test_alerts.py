"""The alert rules: generated files in sync with the source, valid for promtool, and unit-tested by it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workshop.__main__ import main
from workshop.observability import alerts, llm_alerts
from workshop.observability.rules import AlertSet

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROMTOOL_DIR = PROJECT_ROOT / "tests" / "promtool"
# Each service's alerts and the promtool unit tests that exercise them.
ALERT_SETS = {
    "wine": (alerts.WINE_ALERTS, PROMTOOL_DIR / "wine-alerts.test.yml"),
    "llm": (llm_alerts.LLM_ALERTS, PROMTOOL_DIR / "llm-alerts.test.yml"),
}
# The LLM service's metric names (the shared contract of app/llm): an alert reading anything else is a typo.
LLM_METRICS = {
    "up",
    "llm_completions_total",
    "llm_prompt_tokens_total",
    "llm_completion_tokens_total",
    "llm_generation_seconds_bucket",
    "llm_tokens_per_second_bucket",
    "llm_time_to_first_token_seconds_bucket",
    "llm_model_load_seconds_bucket",
    "llm_model_info",
    "llm_lifecycle_state",
    "llm_model_swaps_total",
    "llm_queue_depth",
}
PROMTOOL_HINT = "promtool not found: apt-get install prometheus (Debian/Ubuntu) or brew install prometheus"
PROMETHEUS_HINT = "prometheus not found: apt-get install prometheus (Debian/Ubuntu) or brew install prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(PROMTOOL_HINT)
    return path


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_committed_files_are_up_to_date():
    stale = alerts.stale_files(PROJECT_ROOT)
    assert not stale, f"stale: {[str(p) for p in stale]}; run python -m workshop alerts"


def test_check_names_the_stale_file_and_write_fixes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("workshop.cli.alerts.project_root", lambda: tmp_path)
    assert main(["alerts"]) == 0
    assert main(["alerts", "--check"]) == 0
    (tmp_path / alerts.MANIFEST_FILE).write_text("edited by hand\n")
    capsys.readouterr()
    assert main(["alerts", "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / alerts.MANIFEST_FILE} is stale: run python -m workshop alerts" in err
    assert str(alerts.RULES_FILE) not in err


def test_every_service_has_its_alerts_generated():
    assert [alert_set.job for alert_set in alerts.ALERT_SETS] == list(ALERT_SETS)
    files = alerts.generated_files(PROJECT_ROOT)
    for alert_set in alerts.ALERT_SETS:
        assert PROJECT_ROOT / alert_set.rules_file in files
        assert PROJECT_ROOT / alert_set.manifest_file in files
    names = [name for alert_set in alerts.ALERT_SETS for name in alert_set.names]
    assert len(names) == len(set(names)), "an alert name must say which service it is about"


@pytest.mark.parametrize("service", ALERT_SETS)
def test_promtool_check_rules(promtool: str, service: str):
    alert_set, _ = ALERT_SETS[service]
    result = run_promtool(promtool, "check", "rules", PROJECT_ROOT / alert_set.rules_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_set.names)} rules found" in result.stdout


@pytest.mark.parametrize("service", ALERT_SETS)
def test_promtool_unit_tests_pass(promtool: str, service: str):
    _, tests = ALERT_SETS[service]
    result = run_promtool(promtool, "test", "rules", tests)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", ALERT_SETS)
def test_promtool_tests_cover_every_alert_firing_and_quiet(service: str):
    """A new alert without a firing and a quiet promtool case fails here, not in production."""
    alert_set, tests = ALERT_SETS[service]
    document = load(tests)
    assert document["rule_files"] == [f"../../{alert_set.rules_file}"]
    cases = [case for test in document["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == set(alert_set.names)
    assert quiet == set(alert_set.names)


@pytest.mark.parametrize("service", ALERT_SETS)
def test_every_alert_says_how_bad_what_happened_and_what_to_do(service: str):
    alert_set, _ = ALERT_SETS[service]
    for group in alert_set.prometheus_rules()["groups"]:
        assert group["name"].startswith(f"{service}-"), group["name"]
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
            assert all(text.strip() for text in rule["annotations"].values()), rule["alert"]


@pytest.mark.parametrize("service", ALERT_SETS)
def test_expressions_select_the_job_and_keep_namespace_apart(service: str):
    alert_set: AlertSet = ALERT_SETS[service][0]
    expressions = alert_set.expressions()
    assert tuple(expressions) == alert_set.names
    assert len(set(alert_set.names)) == len(alert_set.names)
    assert alert_set.job == service
    for name, expr in expressions.items():
        # Every selector of the expression names the job: another service's series never leak in.
        selectors = re.findall(r"\b[a-z_:][a-z0-9_:]*\{([^}]*)\}", expr)
        assert selectors, name
        assert all(f'job="{service}"' in matchers for matchers in selectors), (name, selectors)
        # Every aggregation and every match keeps job and namespace: pods of one deployment sum up,
        # two deployments (namespaces) never mix, and an absent namespace is the same empty value on both sides.
        for labels in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            assert {"job", "namespace"} <= {label.strip() for label in labels.split(",")}, (name, labels)


@pytest.mark.parametrize(
    ("service", "manifest_file"),
    [("wine", "k8s/base/prometheus-rule.yaml"), ("llm", "k8s/llm/prometheus-rule.yaml")],
)
def test_manifest_wraps_the_same_groups_for_kube_prometheus_stack(service: str, manifest_file: str):
    alert_set: AlertSet = ALERT_SETS[service][0]
    assert alert_set.manifest_file == Path(manifest_file)
    manifest = load(PROJECT_ROOT / manifest_file)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["name"] == f"{service}-alerts"
    assert manifest["metadata"]["namespace"] == "wine-workshop"
    assert manifest["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert manifest["metadata"]["labels"]["app.kubernetes.io/name"] == service
    assert manifest["spec"] == load(PROJECT_ROOT / alert_set.rules_file)
    assert alert_set.manifest("team-a")["metadata"]["namespace"] == "team-a"
    assert alerts.prometheus_rule_manifest("team-a") == alerts.WINE_ALERTS.manifest("team-a")


def test_each_manifest_is_listed_by_its_kustomization():
    """A generated PrometheusRule that no kustomization lists is never applied."""
    for alert_set in alerts.ALERT_SETS:
        kustomization = load(PROJECT_ROOT / alert_set.manifest_file.parent / "kustomization.yaml")
        assert alert_set.manifest_file.name in kustomization["resources"], alert_set.manifest_file


def test_production_holds_by_default():
    holds = {rule["alert"]: rule["for"] for group in alerts.prometheus_rules()["groups"] for rule in group["rules"]}
    assert holds == {
        "WineServiceDown": "1m",
        "WineTargetMissing": "5m",
        "WineHighErrorRatio": "5m",
        "WineLatencyP99High": "5m",
        "WineLatencyP50High": "5m",
        "WinePredictionDrift": "10m",
        "WineFeatureDrift": "10m",
    }


def test_llm_production_holds():
    holds = {rule.name: rule.hold for rule in llm_alerts.LLM_ALERTS.alerts.values()}
    assert holds == {
        "LLMServiceDown": "1m",
        "LLMNoModelServing": "10m",
        "LLMModelSwapFailed": "0s",  # a failed swap is an event: tell at once
        "LLMGenerationLatencyHigh": "10m",
        "LLMOverloaded": "5m",
    }


def test_llm_alerts_read_only_the_services_metrics():
    for name, expr in llm_alerts.LLM_ALERTS.expressions().items():
        used = set(re.findall(r"\b([a-z_:][a-z0-9_:]*)\{", expr))
        assert used and used <= LLM_METRICS, (name, used - LLM_METRICS)


def test_the_llm_latency_alert_and_dashboard_share_the_threshold():
    from workshop.observability.llm_dashboard import generation_latency_panel

    panel = generation_latency_panel().build()
    steps = [step.value for step in panel.field_config.defaults.thresholds.steps]
    assert llm_alerts.GENERATION_P95_SECONDS in steps
    assert f"> {llm_alerts.GENERATION_P95_SECONDS:g}" in llm_alerts.LLM_ALERTS.alerts["LLMGenerationLatencyHigh"].expr


def test_workshop_rules_hold_every_service_and_take_any_services_overrides():
    combined = alerts.workshop_rules({"WineFeatureDrift": "15s", "LLMNoModelServing": "30s"})
    expected = [g for s in alerts.ALERT_SETS for g in s.prometheus_rules()["groups"]]
    assert [g["name"] for g in combined["groups"]] == [g["name"] for g in expected]
    holds = {rule["alert"]: rule["for"] for group in combined["groups"] for rule in group["rules"]}
    assert holds["WineFeatureDrift"] == "15s"
    assert holds["LLMNoModelServing"] == "30s"
    assert holds["LLMServiceDown"] == "1m"
    with pytest.raises(ValueError, match="unknown alert name"):
        alerts.workshop_rules({"LLMSwapFailed": "1m"})
    with pytest.raises(ValueError, match="invalid Prometheus duration"):
        alerts.workshop_rules({"LLMServiceDown": "soon"})


def test_workshop_rules_are_valid(promtool: str, tmp_path: Path):
    rules = tmp_path / "workshop.rules.yml"
    names = [name for alert_set in alerts.ALERT_SETS for name in alert_set.names]
    rules.write_text(alerts.to_yaml(alerts.workshop_rules(dict.fromkeys(names, "15s"))))
    result = run_promtool(promtool, "check", "rules", rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(names)} rules found" in result.stdout


def test_hold_overrides_shorten_only_the_named_alerts():
    default = alerts.prometheus_rules()
    demo = alerts.prometheus_rules({"WineFeatureDrift": "15s", "WineServiceDown": "1m30s"})
    for default_group, demo_group in zip(default["groups"], demo["groups"], strict=True):
        for before, after in zip(default_group["rules"], demo_group["rules"], strict=True):
            expected = {"WineFeatureDrift": "15s", "WineServiceDown": "1m30s"}.get(before["alert"], before["for"])
            assert after == {**before, "for": expected}
    assert alerts.prometheus_rules() == default, "overrides must not leak into the definitions"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"WineFeatureDrfit": "15s"}, "unknown alert name"),
        ({"WineFeatureDrift": "15 seconds"}, "invalid Prometheus duration"),
        ({"WineFeatureDrift": ""}, "invalid Prometheus duration"),
    ],
)
def test_bad_overrides_raise(overrides: dict[str, str], message: str):
    with pytest.raises(ValueError, match=message):
        alerts.prometheus_rules(overrides)


def test_overridden_rules_are_still_valid(promtool: str, tmp_path: Path):
    rules = tmp_path / "demo.rules.yml"
    rules.write_text(alerts.to_yaml(alerts.prometheus_rules(dict.fromkeys(alerts.ALERT_NAMES, "15s"))))
    result = run_promtool(promtool, "check", "rules", rules)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_llm_alerts_on_real_services(tmp_path: Path):
    """Two real instances of job llm scraped by a real Prometheus with the generated rules: quiet while a
    model serves, LLMNoModelServing's condition holds for the instance without a model, and a failed swap
    fires LLMModelSwapFailed while that instance keeps its model."""
    if shutil.which("prometheus") is None:
        pytest.skip(PROMETHEUS_HINT)
    pytest.importorskip("transformers", reason="the LLM service needs the llm extra: pip install -e '.[llm]'")
    from workshop.llm_client import LLMClient
    from workshop.prometheus import alerts as prometheus_alerts
    from workshop.prometheus import next_scrape, query, wait_for
    from workshop.targets import LocalTarget
    from workshop.tiny_llm import build_broken_model, build_tiny_chat_model

    models = tmp_path / "models"
    build_tiny_chat_model(models / "tiny-a", seed=0, name="tiny-a")
    build_broken_model(models / "no-template", "no-chat-template")
    expressions = llm_alerts.LLM_ALERTS.expressions()
    target = LocalTarget(log_dir=tmp_path / "logs")
    try:
        serving = target.deploy_llm(models, default_model="tiny-a", timeout=120)
        empty = target.deploy_llm(models, default_model="", timeout=120)  # NOT_DEPLOYED, same job
        url = target.start_monitoring(rule_files=[PROJECT_ROOT / llm_alerts.RULES_FILE])
        client = LLMClient(serving.url)
        assert client.complete("Hello", max_new_tokens=4)["model"] == "tiny-a"
        next_scrape(url, job="llm")

        no_model = query(url, expressions["LLMNoModelServing"])
        assert list(no_model["instance"]) == [empty.url.removeprefix("http://")]
        for name in set(expressions) - {"LLMNoModelServing"}:
            assert query(url, expressions[name]).empty, f"{name} holds while all is well"

        assert client.swap_and_wait("no-template", timeout=60)["state"] == "FAILED"

        def firing(name: str):
            frame = prometheus_alerts(url)
            return frame[(frame["name"] == name) & (frame["state"] == "firing")]

        fired = wait_for(lambda: firing("LLMModelSwapFailed"), 30, "LLMModelSwapFailed to fire")
        assert [labels["job"] for labels in fired["labels"]] == ["llm"]
        assert client.complete("Still there?", max_new_tokens=4)["model"] == "tiny-a"
        assert query(url, expressions["LLMServiceDown"]).empty
    finally:
        target.teardown()


def test_the_drift_ratio_the_notebook_shows_is_the_left_side_of_the_drift_alert():
    from workshop.observability.alerts import WINDOW, alert_expressions, feature_drift_ratio

    rule = " ".join(alert_expressions()["WineFeatureDrift"].split())
    assert f"abs( {feature_drift_ratio(WINDOW)} - 1 )".replace("( ", "(").replace(" )", ")") in rule.replace(
        "( ", "(").replace(" )", ")")
    assert "[1m]" in feature_drift_ratio("1m") and "[5m]" not in feature_drift_ratio("1m")
