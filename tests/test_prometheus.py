"""A real Prometheus: it starts, scrapes the real wine service, answers queries and stops cleanly."""

from __future__ import annotations

import shutil

import httpx
import pytest
import yaml
from prometheus_api_client import PrometheusApiClientException

from workshop.process import ProcessError
from workshop.prometheus import (
    INSTALL_HINT,
    LocalPrometheus,
    PrometheusNotInstalledError,
    alerts,
    query,
    scrape_target,
    wait_for,
)
from workshop.targets import LocalTarget

requires_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None, reason=INSTALL_HINT)


def up(url: str) -> dict[str, float]:
    """``up`` of the wine job by instance."""
    frame = query(url, 'up{job="wine"}')
    return dict(zip(frame["instance"], frame["value"], strict=True)) if not frame.empty else {}


def test_a_missing_binary_says_how_to_install_it(tmp_path):
    with pytest.raises(PrometheusNotInstalledError) as missing:
        LocalPrometheus(binary="prometheus-not-installed-here", workdir=tmp_path).start()
    assert "apt-get install prometheus" in str(missing.value)
    assert "brew install prometheus" in str(missing.value)


def test_scrape_targets_are_host_and_port():
    assert scrape_target("http://127.0.0.1:8000") == "127.0.0.1:8000"
    assert scrape_target("127.0.0.1:9") == "127.0.0.1:9"
    with pytest.raises(ValueError, match="not a service URL"):
        scrape_target("http://")


def test_wait_for_returns_the_result_or_names_what_it_waited_for():
    answers = iter([None, 0, "done"])
    assert wait_for(lambda: next(answers), timeout=5, what="an answer", interval=0.01) == "done"

    def broken():
        raise ConnectionError("refused")

    with pytest.raises(TimeoutError, match=r"waiting for the moon \(ConnectionError: refused\)"):
        wait_for(broken, timeout=0.05, what="the moon", interval=0.01)


@pytest.mark.slow
@requires_prometheus
def test_prometheus_scrapes_the_deployed_service_and_stops_cleanly(model_dir, tmp_path):
    target = LocalTarget(log_dir=tmp_path)
    try:
        first = target.deploy_wine(model_dir)
        url = target.start_monitoring(rule_files=[])
        prometheus = target.prometheus
        assert httpx.get(f"{url}/-/ready").status_code == 200
        config = yaml.safe_load(prometheus.config_path.read_text())
        assert config["global"]["scrape_interval"] == "1s"
        assert config["scrape_configs"][0]["job_name"] == "wine"
        wait_for(lambda: up(url).get(scrape_target(first.url)) == 1, timeout=60, what="up == 1")

        # A service deployed after monitoring started is scraped too (config rewritten and reloaded).
        second = target.deploy_wine(model_dir)
        wait_for(lambda: up(url).get(scrape_target(second.url)) == 1, timeout=60, what="the second service up")

        with pytest.raises(PrometheusApiClientException, match="400"):
            query(url, "rate(up[")
        assert alerts(url).empty  # no rules loaded
    finally:
        target.teardown()
    assert target.prometheus is None and not prometheus.running
    assert prometheus.process.pid is not None and prometheus.process.stop() == 0  # exited on SIGTERM, not killed
    assert not (prometheus.workdir / "data").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/-/ready", timeout=2)
    target.teardown()


@pytest.mark.slow
@requires_prometheus
def test_a_broken_rules_file_fails_with_prometheus_own_reason(tmp_path):
    rules = tmp_path / "broken.rules.yml"
    rules.write_text("groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: rate(up[\n")
    prometheus = LocalPrometheus(rule_files=[rules], workdir=tmp_path / "prometheus")
    with pytest.raises(ProcessError, match=r"(?s)exited with code 1 .*broken\.rules\.yml"):
        prometheus.start(timeout=60)
    assert not prometheus.running
