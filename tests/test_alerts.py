"""The alert rules: generated files in sync with the source, valid for promtool, and unit-tested by it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workshop.observability import alerts

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROMTOOL_TESTS = PROJECT_ROOT / "tests" / "promtool" / "wine-alerts.test.yml"
PROMTOOL_HINT = "promtool not found: apt-get install prometheus (Debian/Ubuntu) or brew install prometheus"


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
    assert not stale, f"stale: {[str(p) for p in stale]}; run python -m workshop.observability.alerts"


def test_check_names_the_stale_file_and_write_fixes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert alerts.main([], root=tmp_path) == 0
    assert alerts.main(["--check"], root=tmp_path) == 0
    (tmp_path / alerts.MANIFEST_FILE).write_text("edited by hand\n")
    capsys.readouterr()
    assert alerts.main(["--check"], root=tmp_path) == 1
    err = capsys.readouterr().err
    assert str(alerts.MANIFEST_FILE) in err
    assert str(alerts.RULES_FILE) not in err


def test_promtool_check_rules(promtool: str):
    result = run_promtool(promtool, "check", "rules", PROJECT_ROOT / alerts.RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERT_NAMES)} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str):
    result = run_promtool(promtool, "test", "rules", PROMTOOL_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_tests_cover_every_alert_firing_and_quiet():
    """A new alert without a firing and a quiet promtool case fails here, not in production."""
    cases = [case for test in load(PROMTOOL_TESTS)["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == set(alerts.ALERT_NAMES)
    assert quiet == set(alerts.ALERT_NAMES)


def test_every_alert_says_how_bad_what_happened_and_what_to_do():
    for group in alerts.prometheus_rules()["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
            assert all(text.strip() for text in rule["annotations"].values()), rule["alert"]


def test_expressions_select_the_wine_job_and_keep_namespace_apart():
    expressions = alerts.alert_expressions()
    assert tuple(expressions) == alerts.ALERT_NAMES
    assert len(set(alerts.ALERT_NAMES)) == len(alerts.ALERT_NAMES)
    for name, expr in expressions.items():
        assert 'job="wine"' in expr, name
        # Every aggregation and every match keeps job and namespace: pods of one deployment sum up,
        # two deployments (namespaces) never mix, and an absent namespace is the same empty value on both sides.
        for labels in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            assert {"job", "namespace"} <= {label.strip() for label in labels.split(",")}, (name, labels)


def test_manifest_wraps_the_same_groups_for_kube_prometheus_stack():
    manifest = load(PROJECT_ROOT / alerts.MANIFEST_FILE)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["name"] == "wine-alerts"
    assert manifest["metadata"]["namespace"] == "wine-workshop"
    assert manifest["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert manifest["spec"] == load(PROJECT_ROOT / alerts.RULES_FILE)
    assert alerts.prometheus_rule_manifest("team-a")["metadata"]["namespace"] == "team-a"


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
