"""A real Prometheus: it starts, scrapes the real wine service, answers queries and stops cleanly."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    last_scrapes,
    next_scrape,
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


@pytest.fixture
def metrics_servers() -> Iterator[list[str]]:
    """Two small HTTP servers answering ``/metrics`` with one gauge: targets to scrape, and to stop scraping."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"# TYPE workshop_test gauge\nworkshop_test 1\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{server.server_address[1]}" for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@requires_prometheus
def test_next_scrape_waits_for_the_targets_scraped_now_not_for_series_a_removed_job_left(metrics_servers, tmp_path):
    """A scrape job removed whole (on a cluster: a namespace deleted with its ServiceMonitor) gets no staleness
    markers, so its ``up`` series still answer instant queries for five minutes. A new job of the same name (the
    next notebook's pods) must not wait for those: next_scrape follows the active targets."""
    old, new = metrics_servers
    with LocalPrometheus(targets={"wine": [old]}, workdir=tmp_path) as prometheus:
        prometheus.set_targets({"other": [new]})
        assert scrape_target(old) in up(prometheus.url), "Prometheus keeps the removed job's series (no markers)"
        prometheus.set_targets({"wine": [new], "other": [new]})
        next_scrape(prometheus.url, timeout=10)
        assert last_scrapes(prometheus.url).keys() == {f"{new}/metrics"}


def test_a_range_grid_ending_at_the_end_starts_at_most_one_step_earlier():
    from datetime import UTC, datetime, timedelta

    from workshop.prometheus import grid_ending_at

    start = datetime(2026, 12, 2, 13, 49, 11, tzinfo=UTC)
    end = start + timedelta(seconds=146)
    first = grid_ending_at(start, end, 15)
    assert first <= start < first + timedelta(seconds=15)
    assert (end - first).total_seconds() % 15 == 0
    assert grid_ending_at(start, start + timedelta(seconds=150), 15) == start
