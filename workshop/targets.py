"""Where the workshop runs: one small interface, one implementation per target.

Notebook cells call :func:`get_target` and the methods of :class:`~workshop.target_api.Target`, so
the narrative is the same on a laptop and on a cluster; only the plumbing
differs. ``local`` (here) runs everything as processes on 127.0.0.1; ``kubernetes`` (``workshop.k8s``) runs it on
the cluster of the current kubeconfig. What both share lives in :mod:`workshop.target_api` and the errors a
notebook catches in :mod:`workshop.exceptions`; both are re-exported here, where the notebooks import them.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import yaml

from workshop.exceptions import RolloutFailedError, TargetUnavailableError
from workshop.loadtest import LoadTestResult, run_load_test
from workshop.observability.alerts import workshop_rules
from workshop.paths import project_root
from workshop.process import ManagedProcess, ProcessError, on_a_free_port
from workshop.prometheus import LocalPrometheus
from workshop.service_client import combined_metrics_frame
from workshop.target_api import Deployment, GrafanaAccess, Target, Timings, duration_s, settings_env

__all__ = [
    "TARGETS", "Deployment", "GrafanaAccess", "LocalTarget", "RolloutFailedError", "Target", "TargetUnavailableError",
    "Timings", "duration_s", "get_target", "settings_env",
]

TARGETS = ("local", "kubernetes")
# How long a local service process may take to answer /health at all, before any readiness timeout counts.
STARTUP_TIMEOUT_S = 120.0
LOCAL_ROLLOUT_TIMEOUT_S = 60.0
LOCAL_DRAIN_S = 1.0  # how long a replaced replica keeps serving after its URL moved to the new one
LOCAL_FAILED_ROLLOUT_TIMEOUT_S = 10.0  # a replica without a model answers /ready 503 within a second of starting
LOCAL_ALERT_TIMEOUT_S = 90.0  # the demo's shortened holds plus rule evaluations every second


@dataclass
class LocalTarget:
    """Services as child processes on 127.0.0.1, stopped at teardown (or when the kernel exits)."""

    name: str = "local"
    log_dir: Path | None = None
    deployments: list[Deployment] = field(default_factory=list)
    prometheus: LocalPrometheus | None = None

    @property
    def timings(self) -> Timings:
        """The local numbers: the local Prometheus' scrape interval; processes that start and fail in seconds."""
        interval = self.prometheus.interval if self.prometheus is not None else LocalPrometheus.interval
        return Timings(scrape_interval_s=duration_s(interval), rollout_timeout_s=LOCAL_ROLLOUT_TIMEOUT_S,
                       failed_rollout_timeout_s=LOCAL_FAILED_ROLLOUT_TIMEOUT_S, alert_timeout_s=LOCAL_ALERT_TIMEOUT_S)

    def deploy_wine(
        self, model_dir: Path, *, port: int = 0, wait_ready: bool = True, timeout: float = 60.0, **settings: str
    ) -> Deployment:
        """Start ``python -m app.wine``; wait for /ready (or only /health with ``wait_ready=False``).

        ``settings`` are extra service settings by field name, e.g. ``max_batch_size="100"``.
        """
        env = {"WINE_MODEL_DIR": str(Path(model_dir).resolve())}
        env.update(settings_env("wine", settings))
        return self._start("wine", env, port=port, ready_path="/ready" if wait_ready else "/health", timeout=timeout)

    def _start(self, name: str, env: Mapping[str, str], *, port: int = 0, ready_path: str, timeout: float,
               track: bool = True) -> Deployment:
        """One replica of service ``name`` (``wine`` or ``llm``) as a uvicorn process, once ``ready_path`` is 200.

        With ``port`` 0 a free port is picked; if another program binds it first, another one is tried.
        """
        return on_a_free_port(lambda free: self._start_on(name, env, port=free, ready_path=ready_path,
                                                          timeout=timeout, track=track), port)

    def _start_on(self, name: str, env: Mapping[str, str], *, port: int, ready_path: str, timeout: float,
                  track: bool) -> Deployment:
        # The services' own entry point (python -m app.wine / app.llm): uvicorn with their header and time limits.
        argv = [sys.executable, "-m", f"app.{name}", "--host", "127.0.0.1", "--port", str(port)]
        log_path = (self.log_dir / f"{name}-{port}.log") if self.log_dir else None
        process = ManagedProcess(f"{name}-service", argv, env=dict(env), cwd=project_root(), log_path=log_path).start()
        deployment = Deployment(name, f"http://127.0.0.1:{port}", process, dict(env))
        if track:
            self.deployments.append(deployment)
        try:
            # The process must answer at all first (imports and binding take longer on a busy machine):
            # ``timeout`` counts from then, so it measures the service becoming ready, not Python starting.
            process.wait_for_http(f"{deployment.url}/health", timeout=max(timeout, STARTUP_TIMEOUT_S))
            if ready_path != "/health":
                process.wait_for_http(f"{deployment.url}{ready_path}", timeout=timeout)
        except BaseException:
            process.stop()
            raise
        self._update_scraping()
        return deployment

    def replicas(self, name: str) -> list[Deployment]:
        """The running replicas of service ``name``."""
        return [d for d in self.deployments if d.name == name and d.running]

    def _running(self, name: str) -> list[Deployment]:
        running = self.replicas(name)
        if not running:
            raise ValueError(f"no {name} service deployed by this target: deploy it first")
        return running

    def ready_replicas(self, name: str = "wine") -> int:
        """How many replicas of service ``name`` answer /ready with 200 now."""
        table = self.describe(name)["replicas"]
        return int((table["ready"] == 200).sum())

    def metrics(self, name: str = "wine", prefix: str = "") -> pd.DataFrame:
        """The /metrics of every replica of service ``name``, summed (see :func:`combined_metrics_frame`).

        Counters and histograms are the sums over the replicas, the traffic of the whole service; gauges
        (model info, training statistics) are the first replica's value, the same on each.
        """
        texts = []
        for replica in self._running(name):
            response = httpx.get(f"{replica.url}/metrics", timeout=10)
            response.raise_for_status()
            texts.append(response.text)
        return combined_metrics_frame(texts, prefix)

    def describe(self, name: str = "wine") -> dict[str, pd.DataFrame]:
        """Service ``name`` as a table: ``replicas`` (service, url, pid, ready: the status /ready answers).

        A cluster shows pods, ReplicaSets and events too; locally a replica is a process, so this is all there is.
        ``ready`` is None for a replica that does not answer.
        """
        rows = []
        for replica in self.replicas(name):
            try:
                ready = httpx.get(f"{replica.url}/ready", timeout=5).status_code
            except httpx.HTTPError:
                ready = None
            rows.append({"service": name, "url": replica.url, "pid": replica.process.pid if replica.process else None,
                         "ready": ready})
        return {"replicas": pd.DataFrame(rows, columns=["service", "url", "pid", "ready"])}

    def scale(self, name: str, replicas: int, *, timeout: float = 60.0) -> int:
        """Run ``replicas`` copies of service ``name`` (one process each, on its own port); return how many run.

        Locally nothing balances requests across them (on a cluster the Service does); Prometheus scrapes them all,
        and :meth:`replicas` lists them with their URLs.
        """
        if replicas < 1:
            raise ValueError("replicas must be at least 1 (teardown() stops everything)")
        current = self._running(name)
        while len(current) < replicas:
            current.append(self._start(name, current[0].env, ready_path="/ready", timeout=timeout))
        for extra in current[replicas:]:
            extra.stop()
            self.deployments.remove(extra)
        self._update_scraping()
        return len(self.replicas(name))

    def roll_out(self, name: str = "wine", *, timeout: float = 30.0, **settings: str) -> list[str]:
        """Change settings of service ``name`` the way a rolling update does: new replica first, old one after.

        Each replica is replaced by a new process with the new settings; the old one stops only once the new one
        answers /ready. If a new one never does, it is stopped, the remaining old replicas keep serving, and
        :class:`RolloutFailedError` says what its /ready answered. Returns the replicas' URLs.
        """
        changes = settings_env(name, settings)
        for old in self.replicas(name):
            try:
                new = self._start(name, {**old.env, **changes}, ready_path="/ready", timeout=timeout, track=False)
            except ProcessError as error:
                raise RolloutFailedError(
                    f"rollout of {name} stopped: a new replica with {changes} never became ready within "
                    f"{timeout:.0f} s; the old replicas keep serving.\n{error}") from None
            # The replica's URL moves to the new process before the old one stops: whoever reads it per
            # request (as a Service would route) never gets the stopped one. A request that read the old URL
            # just before the move still connects: the old process serves a moment longer, as a pod's preStop
            # sleep keeps it serving while its endpoint is removed (k8s/base: 5 s).
            previous, old.url, old.process, old.env = old.process, new.url, new.process, new.env
            if previous is not None:
                time.sleep(LOCAL_DRAIN_S)
                previous.stop()
        self._update_scraping()
        return [d.url for d in self.replicas(name)]

    def roll_out_model(self, model_dir: Path, *, timeout: float = LOCAL_ROLLOUT_TIMEOUT_S) -> list[str]:
        """Serve a new model version with a rolling update: each wine replica is replaced by one serving
        ``model_dir`` (its ``WINE_MODEL_DIR``), the new one ready before the old one stops. Returns the URLs."""
        return self.roll_out("wine", timeout=timeout, model_dir=str(Path(model_dir).resolve()))

    def deploy_llm(
        self, models_dir: Path | None = None, *, default_model: str | None = None, port: int = 0,
        timeout: float = 300.0, **settings: str,
    ) -> Deployment:
        """Start ``python -m app.llm``; wait for /ready when a default model is given, else /health.

        ``models_dir`` is ``LLM_MODELS_DIR`` (where models are looked up), ``default_model`` is
        ``LLM_DEFAULT_MODEL`` (loaded at start; /ready answers 503 until it serves; without one the service starts
        with no model, not with its built-in default, which would need the model hub). ``settings`` are further
        service settings by field name, as ``LLM_<NAME>`` variables.
        """
        env = settings_env("llm", settings)
        if models_dir is not None:
            env["LLM_MODELS_DIR"] = str(Path(models_dir).resolve())
        env["LLM_DEFAULT_MODEL"] = default_model or ""  # none: start without a model, deploy one with POST /model
        return self._start("llm", env, port=port, ready_path="/ready" if default_model else "/health",
                           timeout=timeout)

    def run_load_test(self, host: str | None = None, *args: object, **kwargs: object) -> LoadTestResult:
        """Locust against ``host`` (default: the wine service deployed last); see :func:`run_load_test`.

        The same call runs the load test in the cluster on the kubernetes target, so notebook 06 reads alike on both.
        """
        if host is None:
            wine = [d for d in self.deployments if d.name == "wine"]
            if not wine:
                raise ValueError("no wine service deployed by this target: deploy_wine() first, or pass host=")
            host = wine[-1].url
        return run_load_test(host, *args, **kwargs)

    def scrape_targets(self) -> dict[str, list[str]]:
        """{job: URLs} of the services running now: job ``wine`` for the wine service, ``llm`` for the LLM."""
        jobs: dict[str, list[str]] = {}
        for deployment in self.deployments:
            if deployment.process is None or deployment.process.running:
                jobs.setdefault(deployment.name, []).append(deployment.url)
        return jobs

    def _update_scraping(self) -> None:
        if self.prometheus is not None and self.prometheus.running:
            self.prometheus.set_targets(self.scrape_targets())

    def start_monitoring(
        self,
        *,
        rule_files: Sequence[Path] | None = None,
        hold_overrides: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> str:
        """Start a Prometheus scraping every service of this target (and later ones); return its URL.

        Without ``rule_files`` it loads the workshop's alert rules, rendered with ``hold_overrides``
        ({alert name: duration}) so that a live demo need not wait the production ``for:`` holds.
        Calling it again replaces the running Prometheus (and its data).
        """
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="wine-monitoring-", dir=self.log_dir))
        if rule_files is None:
            rules = workdir / "workshop-alerts.rules.yml"  # the wine and LLM services' rules
            rules.write_text(yaml.safe_dump(workshop_rules(dict(hold_overrides or {})), sort_keys=False))
            rule_files = [rules]
        elif hold_overrides:
            raise ValueError("hold_overrides applies to the workshop's rules; pass it without rule_files")
        self.prometheus = LocalPrometheus(
            targets=self.scrape_targets(), rule_files=[Path(p) for p in rule_files], workdir=workdir
        )
        self.prometheus.start(timeout=timeout)
        return self.prometheus.url

    def grafana(self, *, timeout: float = 120.0) -> GrafanaAccess | None:
        """None: there is no Grafana locally (the dashboards are JSON files in ``dashboards/``; plots show the
        same queries). The kubernetes target returns where its Grafana is and how to log in."""
        return None

    def teardown(self, *, remove_monitoring: bool = False) -> None:
        """Stop everything this target started, Prometheus first; a second call is harmless.

        ``remove_monitoring`` is accepted so that notebooks call one signature on every target: nothing is shared
        locally (this target's Prometheus is its own and always stops), so it changes nothing here.
        """
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        while self.deployments:
            self.deployments.pop().stop()


def get_target(name: str = "local", **options) -> Target:
    """The target called ``name``; ``options`` go to its class (e.g. ``namespace=`` for kubernetes).

    The kubernetes target connects at once, so a missing kubeconfig or an unreachable cluster is reported
    here, as TargetUnavailableError with what to do, not in a later cell.
    """
    if name == "local":
        return LocalTarget(**options)
    if name == "kubernetes":
        # Imported here: the local target needs no Kubernetes client (workshop.k8s never imports this module).
        from workshop.k8s.errors import ClusterUnavailableError
        from workshop.k8s.target import KubernetesTarget

        try:
            return KubernetesTarget(**options)
        except ClusterUnavailableError as error:
            raise TargetUnavailableError(str(error)) from error
    raise TargetUnavailableError(f"Unknown target {name!r}; choose one of {', '.join(TARGETS)}.")
