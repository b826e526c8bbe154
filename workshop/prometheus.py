"""A real Prometheus on 127.0.0.1, and the few queries the notebooks need.

The dashboards and alerts of the workshop are PromQL; the only honest test of
PromQL is a real Prometheus scraping a real service. :class:`LocalPrometheus`
runs the ``prometheus`` binary with a generated config (scrape every second,
evaluate rules every second) and throw-away storage, so a notebook sees its
traffic on a graph within seconds and an alert can fire within a minute.

Queries are two GET requests of Prometheus' HTTP API (``/api/v1/query`` and
``/api/v1/query_range``) and come back as pandas frames: one column per label,
then ``timestamp`` (UTC) and ``value``. A refused query raises
:class:`PrometheusQueryError` with the URL, the HTTP status and Prometheus' own
error.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pandas as pd
import yaml

from workshop.process import ManagedProcess, ProcessError, on_a_free_port
from workshop.waiting import wait_for

INSTALL_HINT = (
    "Install Prometheus: on Debian/Ubuntu `sudo apt-get install prometheus`, on macOS `brew install prometheus`, "
    "or put the binary from https://prometheus.io/download/ on PATH."
)
JOB = "wine"
QUERY_TIMEOUT_S = 10.0


class PrometheusNotInstalledError(RuntimeError):
    """No ``prometheus`` binary on PATH; the message says how to install one."""


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query, or did not answer it: the message names the URL, the HTTP status and
    Prometheus' own ``errorType`` and ``error`` (a PromQL syntax error says where it is)."""

    def __init__(self, message: str, *, url: str, status: int | None = None, error_type: str | None = None):
        super().__init__(message)
        self.url = url
        self.status = status
        self.error_type = error_type


def find_prometheus(binary: str = "prometheus") -> str:
    """The path of the Prometheus server binary, or an error with the install command."""
    path = shutil.which(binary)
    if path is None:
        raise PrometheusNotInstalledError(f"`{binary}` was not found on PATH. {INSTALL_HINT}")
    return path


def scrape_target(url: str) -> str:
    """``http://127.0.0.1:8000`` -> ``127.0.0.1:8000``: Prometheus targets are host:port."""
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if not parts.netloc:
        raise ValueError(f"not a service URL: {url!r}")
    return parts.netloc


Targets = Sequence[str] | Mapping[str, Sequence[str]]


def by_job(targets: Targets, job: str = JOB) -> dict[str, list[str]]:
    """Service URLs grouped by job: a plain list is all ``job``; a mapping is {job: URLs} already."""
    if isinstance(targets, Mapping):
        return {name: list(urls) for name, urls in targets.items()}
    return {job: list(targets)}


def prometheus_config(
    targets: Targets, rule_files: Sequence[Path] = (), *, job: str = JOB, interval: str = "1s"
) -> dict:
    """A config scraping ``targets`` and evaluating ``rule_files``, every ``interval``.

    ``targets`` is a list of service URLs (scraped as ``job``) or {job: URLs}: each service gets its own
    ``job`` label (``wine``, ``llm``), which is what the dashboards and alerts select on, as on the cluster
    where the job is the Service's name. One second is far shorter than production (15-60 s), so that a
    workshop sees its traffic at once.
    """
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(Path(path).resolve()) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": name,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [scrape_target(url) for url in urls]}],
            }
            for name, urls in by_job(targets, job).items()
        ],
    }


@dataclass
class LocalPrometheus:
    """``prometheus`` as a child process scraping ``targets``; storage in a temporary folder.

    Use it as a context manager, or ``start()`` / ``stop()``. ``set_targets`` changes what is
    scraped while it runs (config rewritten, then ``/-/reload``).
    """

    targets: list[str] | dict[str, list[str]] = field(default_factory=list)  # URLs (job "wine") or {job: URLs}
    rule_files: list[Path] = field(default_factory=list)
    interval: str = "1s"
    port: int = 0
    workdir: Path | None = None
    binary: str = "prometheus"
    process: ManagedProcess | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("Prometheus has not been started yet")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def config_path(self) -> Path:
        return self._workdir() / "prometheus.yml"

    def _workdir(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="wine-prometheus-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir

    def _write_config(self) -> None:
        config = prometheus_config(self.targets, self.rule_files, interval=self.interval)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, timeout: float = 60.0) -> LocalPrometheus:
        """Start; return once ``/-/ready`` answers 200 and every target has been scraped once.

        The first scrape takes a few seconds (Prometheus batches discovery updates every 5 s). Waiting
        for it matters: ``rate()`` and ``increase()`` count from the first sample, so traffic sent
        before it would never show up.
        """
        if self.running:
            return self
        return on_a_free_port(lambda port: self._start_on(port, timeout), self.port)

    def _start_on(self, port: int, timeout: float) -> LocalPrometheus:
        binary = find_prometheus(self.binary)
        self.port = port
        self._write_config()
        argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self._workdir() / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload after set_targets
            "--storage.tsdb.retention.time=1d",
        ]
        # One log per port: a retry's log must not carry the previous attempt's "address already in use".
        self.process = ManagedProcess("prometheus", argv, cwd=self._workdir(),
                                      log_path=self._workdir() / f"prometheus-{port}.log").start()
        try:
            self.process.wait_for_http(f"{self.url}/-/ready", timeout=timeout)
            self.wait_until_scraped(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def unscraped(self) -> str | None:
        """Which targets have no successful scrape yet (None when all have one)."""
        health = {target["labels"].get("instance"): target["health"] for target in active_targets(self.url)}
        urls = [url for group in by_job(self.targets).values() for url in group]
        waiting = [t for t in map(scrape_target, urls) if health.get(t) != "up"]
        return f"not scraped yet: {', '.join(waiting)}" if waiting else None

    def wait_until_scraped(self, timeout: float = 60.0) -> None:
        if self.process is not None:
            self.process.wait_until(self.unscraped, timeout, "scraping every target")

    def set_targets(self, targets: Targets, timeout: float = 60.0) -> None:
        """Scrape these service URLs (or {job: URLs}) from now on; if running, return once each has been scraped."""
        self.targets = by_job(targets) if isinstance(targets, Mapping) else list(targets)
        if not self.running:
            return
        self._write_config()
        response = httpx.post(f"{self.url}/-/reload", timeout=10.0)
        if response.status_code != 200:
            raise ProcessError(f"Prometheus refused the new config: HTTP {response.status_code} {response.text}")
        self.wait_until_scraped(timeout)

    def stop(self) -> int | None:
        """Stop the server and delete its storage; the config and log stay for inspection."""
        code = self.process.stop() if self.process is not None else None
        if self.workdir is not None:
            shutil.rmtree(self.workdir / "data", ignore_errors=True)
        return code

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _api(url: str, path: str, params: Mapping[str, str | float]) -> list[dict]:
    """GET ``/api/v1/<path>``; the ``result`` of a successful answer, as a list of series."""
    endpoint = f"{url.rstrip('/')}/api/v1/{path}"
    try:
        response = httpx.get(endpoint, params=params, timeout=QUERY_TIMEOUT_S)
    except httpx.HTTPError as error:
        raise PrometheusQueryError(f"Prometheus at {endpoint} did not answer the query {params['query']!r}: "
                                   f"{type(error).__name__}: {error}", url=endpoint) from error
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        error_type = body.get("errorType") if isinstance(body, dict) else None
        said = f"{error_type}: {body.get('error')}" if error_type else response.text[:300].strip() or "no body"
        raise PrometheusQueryError(f"Prometheus at {endpoint} refused the query {params['query']!r}: "
                                   f"HTTP {response.status_code}, {said}",
                                   url=endpoint, status=response.status_code, error_type=error_type)
    data = body["data"]
    if data["resultType"] == "scalar":  # [time, value]: one sample without labels
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def _frame(results: list[dict]) -> pd.DataFrame:
    """Prometheus' ``result`` list (vector or matrix) as one row per sample."""
    rows = []
    for series in results:
        labels = series.get("metric", {})
        samples = series["values"] if "values" in series else [series["value"]]
        rows.extend({**labels, "timestamp": stamp, "value": float(value)} for stamp, value in samples)
    if not rows:
        return pd.DataFrame(columns=["timestamp", "value"])
    frame = pd.DataFrame(rows)
    milliseconds = (frame["timestamp"].astype(float) * 1000).round().astype("int64")
    frame["timestamp"] = pd.to_datetime(milliseconds, unit="ms", utc=True)
    columns = [c for c in frame.columns if c not in ("timestamp", "value")]
    return frame[[*columns, "timestamp", "value"]]


def query(url: str, promql: str, at: datetime | None = None) -> pd.DataFrame:
    """An instant query (``at``, else now): one row per series; a scalar is one row without labels.

    A PromQL error, or a Prometheus that does not answer, raises :class:`PrometheusQueryError`."""
    params: dict[str, str | float] = {"query": promql}
    if at is not None:
        params["time"] = at.timestamp()
    return _frame(_api(url, "query", params))


def query_range(url: str, promql: str, start: datetime, end: datetime, step: str = "5s") -> pd.DataFrame:
    """A range query (what a graph panel runs): one row per series and step; ``start`` and ``end`` are
    whole seconds (rounded), ``step`` a Prometheus duration (``5s``) or a number of seconds."""
    params = {"query": promql, "start": round(start.timestamp()), "end": round(end.timestamp()), "step": step}
    return _frame(_api(url, "query_range", params))


def grid_ending_at(start: datetime, end: datetime, step_s: float) -> datetime:
    """A range query's start, at most one step before ``start``, whose grid of steps ends exactly at ``end``.

    Prometheus evaluates a range query at start, start + step, ... up to ``end``: from an arbitrary start the
    last point can fall up to a step before ``end`` and miss the latest scrape (a version that began serving
    a few seconds ago).
    """
    steps = math.ceil((end - start).total_seconds() / step_s)
    return end - timedelta(seconds=steps * step_s)


def alerts(url: str) -> pd.DataFrame:
    """The alerts Prometheus holds now (``/api/v1/alerts``): pending while their ``for:`` runs, then firing."""
    response = httpx.get(f"{url.rstrip('/')}/api/v1/alerts", timeout=10.0)
    response.raise_for_status()
    rows = [
        {
            "name": alert["labels"].get("alertname", ""),
            "state": alert["state"],
            "active_at": pd.Timestamp(alert["activeAt"]) if alert.get("activeAt") else pd.NaT,
            "value": float(alert["value"]) if alert.get("value") not in (None, "") else float("nan"),
            "labels": {k: v for k, v in alert["labels"].items() if k != "alertname"},
            "summary": alert.get("annotations", {}).get("summary", ""),
        }
        for alert in response.json()["data"]["alerts"]
    ]
    return pd.DataFrame(rows, columns=["name", "state", "active_at", "value", "labels", "summary"])


def active_targets(url: str) -> list[dict]:
    """What Prometheus scrapes now (``/api/v1/targets``): labels, health and last scrape of each target."""
    response = httpx.get(f"{url.rstrip('/')}/api/v1/targets", params={"state": "active"}, timeout=10.0)
    response.raise_for_status()
    return response.json()["data"]["activeTargets"]


def last_scrapes(url: str, job: str = JOB) -> dict[str, str]:
    """When Prometheus last scraped each active target of ``job`` (``/api/v1/targets``), by scrape URL.

    Targets, not ``up`` series: an instant query of ``up`` also returns, for five minutes, the series of pods
    that are gone when their scrape job was removed whole (a namespace deleted with its ServiceMonitor), since
    Prometheus writes no staleness markers then. The times are Prometheus' own RFC 3339 strings, compared
    only with each other, so a cluster's clock need not match this machine's.
    """
    return {target["scrapeUrl"]: target["lastScrape"] for target in active_targets(url)
            if target["labels"].get("job") == job}


NEVER_SCRAPED = "0001-01-01T00:00:00Z"


def next_scrape(url: str, job: str = JOB, timeout: float = 15.0) -> None:
    """Return once every active target of ``job`` has been scraped after this call (and there is one).

    Counters that first appear with traffic (a new status or reason label) start at their first
    scraped value: ``rate()`` only sees what they gain after it. Waiting for a scrape between rounds
    of traffic makes every round show on the graphs.
    """
    try:
        before = last_scrapes(url, job)
    except httpx.HTTPError:
        before = {}  # not answering yet (still starting): every scrape from now on is after this call

    def scraped_since() -> bool:
        now = last_scrapes(url, job)
        return bool(now) and all(_rfc3339(stamp) > _rfc3339(before.get(target, NEVER_SCRAPED))
                                 for target, stamp in now.items())

    wait_for(scraped_since, timeout, f"a scrape of every target of job {job!r}", interval=0.2)


def _rfc3339(stamp: str) -> datetime:
    """Prometheus' times carry nanoseconds; Python's datetime takes six digits of a second."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp.replace("Z", "+00:00")))

