"""A real Prometheus: it starts, scrapes the real wine service, answers queries and stops cleanly."""

from __future__ import annotations

import json
import math
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pandas as pd
import pytest
import yaml

from tests.http_stand_ins import QuietHandler, background_server
from workshop.process import ProcessError
from workshop.prometheus import (
    INSTALL_HINT,
    LocalPrometheus,
    PrometheusNotInstalledError,
    PrometheusQueryError,
    alerts,
    last_scrapes,
    next_scrape,
    query,
    query_range,
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


def test_the_notebooks_wait_for_is_the_projects_one():
    """Notebooks 05 and 07 import ``wait_for`` from here: the one of workshop.waiting (tests/test_waiting.py)."""
    from workshop.waiting import wait_for as the_one

    assert wait_for is the_one


class FakePrometheus(ThreadingHTTPServer):
    """Prometheus' HTTP API as far as a query goes: each GET is recorded and answered with ``answer``."""

    answer: tuple[int, str, bytes] = (200, "application/json", b"{}")
    requests: list[tuple[str, dict[str, list[str]]]]

    def reply(self, status: int, body: dict | str) -> None:
        encoded = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
        self.answer = (status, "application/json" if isinstance(body, dict) else "text/plain", encoded)

    def success(self, result_type: str, result: object) -> None:
        self.reply(200, {"status": "success", "data": {"resultType": result_type, "result": result}})


@pytest.fixture
def fake_prometheus() -> Iterator[FakePrometheus]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            self.server.requests.append((url.path, parse_qs(url.query)))
            status, content_type, body = self.server.answer
            self.answer(status, body, content_type)

    server = background_server(Handler, FakePrometheus)
    server.requests = []
    yield server
    server.shutdown()


def _url(server: FakePrometheus) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


AT = datetime(2026, 12, 2, 13, 49, 11, 250000, tzinfo=UTC)


def test_an_instant_query_asks_at_the_instant_and_gives_one_row_per_series(fake_prometheus):
    stamp = AT.timestamp()
    fake_prometheus.success("vector", [
        {"metric": {"job": "wine", "instance": "127.0.0.1:8000"}, "value": [stamp, "1"]},
        {"metric": {"job": "wine", "instance": "127.0.0.1:8001"}, "value": [stamp, "0.25"]},
    ])
    frame = query(_url(fake_prometheus), 'up{job="wine"}', at=AT)
    [(path, params)] = fake_prometheus.requests
    assert path == "/api/v1/query"
    assert params == {"query": ['up{job="wine"}'], "time": [str(stamp)]}
    assert list(frame.columns) == ["job", "instance", "timestamp", "value"]
    assert frame["instance"].tolist() == ["127.0.0.1:8000", "127.0.0.1:8001"]
    assert frame["value"].tolist() == [1.0, 0.25]
    assert (frame["timestamp"] == pd.Timestamp(AT)).all() and str(frame["timestamp"].dt.tz) == "UTC"

    query(_url(fake_prometheus), "up")
    assert fake_prometheus.requests[-1][1] == {"query": ["up"]}, "no time: Prometheus evaluates it now"


def test_a_range_query_asks_whole_seconds_and_gives_one_row_per_series_and_step(fake_prometheus):
    start, end = AT, AT + timedelta(seconds=10)
    first = round(start.timestamp())
    fake_prometheus.success("matrix", [
        {"metric": {"handler": "/predict"}, "values": [[first, "1.5"], [first + 5, "2"], [first + 10, "NaN"]]},
    ])
    frame = query_range(_url(fake_prometheus), "sum by (handler) (rate(x[1m]))", start, end, step="5s")
    [(path, params)] = fake_prometheus.requests
    assert path == "/api/v1/query_range"
    assert params == {"query": ["sum by (handler) (rate(x[1m]))"], "start": [str(first)],
                      "end": [str(round(end.timestamp()))], "step": ["5s"]}
    assert list(frame.columns) == ["handler", "timestamp", "value"] and len(frame) == 3
    assert frame["timestamp"].tolist() == [pd.Timestamp(first + 5 * i, unit="s", tz="UTC") for i in range(3)]
    assert frame["value"].iloc[:2].tolist() == [1.5, 2.0] and math.isnan(frame["value"].iloc[2])


def test_a_scalar_is_one_row_and_no_series_an_empty_frame(fake_prometheus):
    fake_prometheus.success("scalar", [AT.timestamp(), "0.5"])
    frame = query(_url(fake_prometheus), "scalar(sum(up))")
    assert list(frame.columns) == ["timestamp", "value"] and frame["value"].tolist() == [0.5]
    fake_prometheus.success("vector", [])
    empty = query(_url(fake_prometheus), "up{job='none'}")
    assert empty.empty and list(empty.columns) == ["timestamp", "value"]


def test_a_refused_query_names_the_url_the_status_and_what_prometheus_said(fake_prometheus):
    url = _url(fake_prometheus)
    fake_prometheus.reply(422, {"status": "error", "errorType": "execution", "error": "query timed out"})
    with pytest.raises(PrometheusQueryError) as refused:
        query(url, "sum(rate(x[30d]))")
    assert str(refused.value) == (f"Prometheus at {url}/api/v1/query refused the query 'sum(rate(x[30d]))': "
                                  "HTTP 422, execution: query timed out")
    assert (refused.value.status, refused.value.error_type) == (422, "execution")

    fake_prometheus.reply(502, "upstream connect error")  # a proxy in front of Prometheus: no JSON
    with pytest.raises(PrometheusQueryError, match=r"query_range refused .*: HTTP 502, upstream connect error$"):
        query_range(url, "up", AT, AT)


def test_a_prometheus_that_does_not_answer_is_a_query_error_naming_its_url():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PrometheusQueryError, match=rf"127\.0\.0\.1:{port}/api/v1/query did not answer .*ConnectError"):
        query(f"http://127.0.0.1:{port}", "up")


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

        with pytest.raises(PrometheusQueryError) as refused:
            query(url, "rate(up[")
        assert refused.value.status == 400 and refused.value.error_type == "bad_data"
        message = str(refused.value)
        assert f"{url}/api/v1/query" in message and "'rate(up['" in message, message
        assert "HTTP 400, bad_data: " in message and "parse error" in message, message
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
    from workshop.prometheus import grid_ending_at

    start = datetime(2026, 12, 2, 13, 49, 11, tzinfo=UTC)
    end = start + timedelta(seconds=146)
    first = grid_ending_at(start, end, 15)
    assert first <= start < first + timedelta(seconds=15)
    assert (end - first).total_seconds() % 15 == 0
    assert grid_ending_at(start, start + timedelta(seconds=150), 15) == start
