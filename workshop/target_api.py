"""What every target shares: the interface notebook cells call, the handle of a deployed service, the timings.

``workshop.targets`` (the ``local`` target and :func:`~workshop.targets.get_target`) and ``workshop.k8s`` (the
``kubernetes`` target) both import this module, and it imports neither; ``workshop.k8s`` never imports
``workshop.targets``. So the arrows run one way, as the import contracts in ``pyproject.toml`` require.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from workshop.loadtest import LoadTestResult
from workshop.process import ManagedProcess

SERVICE_ENV_PREFIX = {"wine": "WINE_", "llm": "LLM_"}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def settings_env(service: str, settings: Mapping[str, object]) -> dict[str, str]:
    """Settings by field name as the service's variables: ``max_batch_size`` -> ``WINE_MAX_BATCH_SIZE``."""
    return {f"{SERVICE_ENV_PREFIX[service]}{key.upper()}": str(value) for key, value in settings.items()}


def duration_s(text: str) -> float:
    """A Prometheus duration in seconds: ``"15s"`` -> 15.0, ``"1m30s"`` -> 90.0, ``"500ms"`` -> 0.5."""
    text = str(text).strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration (e.g. 15s, 1m, 500ms)")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


@dataclass(frozen=True)
class Timings:
    """How long things take on a target, so one notebook cell waits right on a laptop and on a cluster.

    Locally Prometheus scrapes every second and a service starts in seconds; kube-prometheus-stack scrapes every
    15 s and a pod is scheduled, started and probed first. Each target derives its numbers from its own
    configuration (the local Prometheus, the manifests and chart values), never from a second literal.
    """

    scrape_interval_s: float  # how often Prometheus scrapes the services
    rollout_timeout_s: float  # how long a rollout that works may take
    failed_rollout_timeout_s: float  # long enough for new replicas to fail their readiness checks for good
    alert_timeout_s: float  # long enough for an alert's ``for:`` hold and a few rule evaluations

    @property
    def rate_window(self) -> str:
        """A ``rate()`` window of at least four scrape intervals (``"4s"`` at 1 s, ``"60s"`` at 15 s).

        ``rate`` needs two samples in its window; four intervals keep it defined through a missed scrape.
        """
        return f"{math.ceil(4 * self.scrape_interval_s)}s"

    @property
    def scrape_wait_s(self) -> float:
        """How long to wait for the next scrape to have happened: three intervals, never exactly one.

        A scrape may have happened just before the change to be seen, and the next one may run late.
        """
        return 3 * self.scrape_interval_s


@dataclass
class GrafanaAccess:
    """Where to open Grafana and how to log in; ``dashboards`` are the titles Grafana lists."""

    url: str
    user: str
    password: str = field(repr=False)  # kept out of a notebook's printed output
    dashboards: list[str] = field(default_factory=list)


@dataclass
class Deployment:
    """A running service and the URL to reach it."""

    name: str
    url: str
    process: ManagedProcess | None = None
    env: dict[str, str] = field(default_factory=dict)  # the service's settings, as environment variables

    @property
    def running(self) -> bool:
        """Whether this side still serves it (the process here; on a cluster, the port-forward to it)."""
        return self.process is not None and self.process.running

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def logs(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""


class Target(Protocol):
    """What both targets implement; notebook cells call only this, so they read the same on either."""

    name: str
    timings: Timings

    def deploy_wine(self, model_dir: Path, *, wait_ready: bool = True, **settings: str) -> Deployment: ...

    def roll_out_model(self, model_dir: Path, *, timeout: float = ...) -> object: ...

    def deploy_llm(
        self, models_dir: Path | None = None, *, default_model: str | None = None, **settings: str
    ) -> Deployment: ...

    def start_monitoring(
        self, *, rule_files: Sequence[Path] | None = None, hold_overrides: Mapping[str, str] | None = None
    ) -> str: ...

    def run_load_test(self, host: str | None = None, *args: object, **kwargs: object) -> LoadTestResult: ...

    def metrics(self, name: str = "wine", prefix: str = "") -> pd.DataFrame: ...

    def describe(self, name: str = "wine") -> dict[str, pd.DataFrame]: ...

    def ready_replicas(self, name: str = "wine") -> int: ...

    def grafana(self, *, timeout: float = 120.0) -> GrafanaAccess | None: ...

    def teardown(self, *, remove_monitoring: bool = False) -> list[str] | None: ...
