"""Simulated production traffic for the wine service: good wines, broken ones, batches, probes.

``locust -f load_tests/locustfile.py --host http://127.0.0.1:8000`` (or ``python -m workshop loadtest``).

Every user picks real rows of the UCI dataset (loaded once per process from ``WINE_QUALITY_DATA_DIR`` or
the per-user cache, never downloaded per user) and sends them with think times between requests. Some
requests are corrupted on purpose, one field each, and must be refused with a 422: a 2xx means the
service predicted from garbage, a 5xx that it crashed on it, and both are counted as failures. The kinds
of corruption take turns (every five corrupted requests of a process cover all five), so even a short run
tries each kind once it has sent five.

Options (command line, or the environment variable in brackets):

* ``--drift`` [LOCUST_DRIFT=true]: shift the wines (more alcohol, sweeter) so that drift metrics move.
* ``--seed N`` [LOCUST_SEED]: each user draws from its own ``random.Random(seed + user number)``.
* ``--think-time S`` [LOCUST_THINK_TIME]: mean pause between a user's requests (uniform 0.5x-1.5x).
* ``--batch-max N`` [LOCUST_BATCH_MAX]: batch requests carry 2 to N wines.
* LOCUST_STEP_LOAD=true (environment only: Locust picks load shapes when it imports this file): users
  ramp up in steps of LOCUST_STEP_USERS every LOCUST_STEP_SECONDS, at most LOCUST_STEPS times; the ramp stops
  after the first step whose p50 or p99 over the last 10 s passes LOCUST_STEP_STOP_P50_MS or
  LOCUST_STEP_STOP_P99_MS (0: no limit), or in which a request failed.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import random
from typing import Any

from locust import HttpUser, LoadTestShape, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from app.wine.data import load_wine_frame
from app.wine.features import FEATURE_NAMES, FEATURES

BOUNDS: dict[str, tuple[float, float]] = {f.name: (f.minimum, f.maximum) for f in FEATURES}
# Drifted traffic: the vintage of notebook 05 (workshop.traffic.drift), stronger and sweeter: +3 % vol alcohol and
# residual sugar x3, clipped to the bounds. This file runs alone in the Locust image, so it keeps its own copy
# of the two numbers; tests/test_load_tests.py checks that both make the same wines.
DRIFT_ALCOHOL_ADDED = 3.0
DRIFT_SUGAR_FACTOR = 3.0
CORRUPTIONS = ("string", "negative", "impossible", "missing", "wrong_type")
CORRUPTED_NAME = "/predict [corrupted: {kind}]"
TRUE_WORDS = ("1", "true", "yes", "on")

_rows: list[dict[str, Any]] = []
_environments: list[Environment] = []
_user_numbers = itertools.count()
_corruption_turns = itertools.cycle(CORRUPTIONS)  # shared by the users of this process: each kind in turn


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    """Workshop options next to Locust's own, each also settable by environment (Kubernetes, CI)."""
    parser.add_argument("--drift", action="store_true", env_var="LOCUST_DRIFT", default=False,
                        help="Shift the wines (more alcohol, sweeter) so drift metrics respond.")
    parser.add_argument("--seed", type=int, env_var="LOCUST_SEED", default=42, help="Seed of the users' draws.")
    parser.add_argument("--think-time", type=float, env_var="LOCUST_THINK_TIME", default=1.0,
                        help="Mean seconds a user waits between requests.")
    parser.add_argument("--batch-max", type=int, env_var="LOCUST_BATCH_MAX", default=20,
                        help="Largest batch a user sends.")


@events.init.add_listener
def _load_rows(environment: Environment, **_: Any) -> None:
    """Read the dataset once per process, before any user starts; a master sends no requests."""
    _environments.append(environment)
    if isinstance(environment.runner, MasterRunner) or _rows:
        return
    frame = load_wine_frame()
    records = frame[[*FEATURE_NAMES, "color"]].astype({"color": str}).to_dict(orient="records")
    _rows.extend({**{n: float(r[n]) for n in FEATURE_NAMES}, "color": r["color"]} for r in records)


@events.quit.add_listener
def _write_final_csv(**_: Any) -> None:
    """Rewrite ``--csv`` totals once every user has stopped: Locust's own files are snapshots taken each
    second, which miss the last requests and would make counts disagree with the service's metrics."""
    for environment in _environments:
        prefix = getattr(environment.parsed_options, "csv_prefix", None)
        if not prefix or isinstance(environment.runner, WorkerRunner):
            continue
        final = StatsCSV(environment, PERCENTILES_TO_REPORT)
        with open(f"{prefix}_stats.csv", "w", newline="") as handle:
            final.requests_csv(csv.writer(handle))
        with open(f"{prefix}_failures.csv", "w", newline="") as handle:
            final.failures_csv(csv.writer(handle))


def drift(wine: dict[str, Any]) -> dict[str, Any]:
    """The wine of the drifted vintage, still valid: inside the physical bounds and free SO2 <= total SO2."""
    shifted = dict(wine)
    for name, value in (("alcohol", wine["alcohol"] + DRIFT_ALCOHOL_ADDED),
                        ("residual_sugar", wine["residual_sugar"] * DRIFT_SUGAR_FACTOR)):
        low, high = BOUNDS[name]
        shifted[name] = min(max(value, low), high)
    shifted["free_sulfur_dioxide"] = min(shifted["free_sulfur_dioxide"], shifted["total_sulfur_dioxide"])
    return shifted


def corrupt(wine: dict[str, Any], kind: str, field: str) -> dict[str, Any]:
    """The wine with ``field`` broken in the way ``kind`` names; the schema must refuse every one."""
    broken = dict(wine)
    is_color = field == "color"
    low, high = BOUNDS.get(field, (0.0, 0.0))
    if kind == "missing":
        del broken[field]
    elif kind == "string":
        broken[field] = "rosé" if is_color else f"{wine[field]}"  # "9.4": strict schema wants a JSON number
    elif kind == "negative":
        broken[field] = -1.0 if is_color else low - 1.0 - abs(wine[field])
    elif kind == "impossible":
        broken[field] = 3 if is_color else high * 2 + 1.0
    elif kind == "wrong_type":
        broken[field] = [wine[field]] if is_color else (None if high > 100 else True)
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {CORRUPTIONS}")
    return broken


def expected_fields(response_json: Any) -> set[str]:
    """The fields a 422 body names (``details[].field``); empty when the body is not the service's error."""
    if not isinstance(response_json, dict):
        return set()
    return {str(d.get("field")) for d in response_json.get("details", []) if isinstance(d, dict)}


class WineUser(HttpUser):
    """One client of the wine API: mostly single predictions, some batches, some broken requests."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.rng = random.Random(options.seed + next(_user_numbers))  # noqa: S311 - traffic, not secrets
        self.drifting = bool(options.drift)
        if not _rows:
            raise RuntimeError("no wine rows loaded: is WINE_QUALITY_DATA_DIR (or the data cache) readable?")

    def wait_time(self) -> float:
        """Think time: uniform around the mean, so users do not fire in lockstep."""
        mean = self.environment.parsed_options.think_time
        return self.rng.uniform(0.5 * mean, 1.5 * mean)

    def wine(self) -> dict[str, Any]:
        wine = self.rng.choice(_rows)
        return drift(wine) if self.drifting else dict(wine)

    @task(1)
    def health(self) -> None:
        with self.client.get("/health", name="/health", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(_unexpected(response, "200"))

    @task(10)
    def predict(self) -> None:
        with self.client.post("/predict", json=self.wine(), name="/predict", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(_unexpected(response, "200"))
            elif not _is_quality(_json(response).get("quality")):
                response.failure(f"answer without a quality in 0-10: {response.text[:120]}")

    @task(2)
    def predict_batch(self) -> None:
        size = self.rng.randint(2, max(2, self.environment.parsed_options.batch_max))
        body = {"instances": [self.wine() for _ in range(size)]}
        with self.client.post("/predict/batch", json=body, name="/predict/batch", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(_unexpected(response, "200"))
                return
            predictions = _json(response).get("predictions", [])
            if len(predictions) != size or not all(_is_quality(p.get("quality")) for p in predictions):
                response.failure(f"expected {size} qualities in 0-10, got {response.text[:120]}")

    @task(2)
    def predict_corrupted(self) -> None:
        kind = next(_corruption_turns)
        numeric = kind in ("negative", "impossible")
        field = self.rng.choice(FEATURE_NAMES if numeric else (*FEATURE_NAMES, "color"))
        body = corrupt(self.wine(), kind, field)
        name = CORRUPTED_NAME.format(kind=kind)
        with self.client.post("/predict", json=body, name=name, catch_response=True) as response:
            if response.status_code == 422 and field in expected_fields(_json(response)):
                response.success()
            elif response.status_code == 422:
                response.failure(f"422 that does not name the corrupted field {field}: {response.text[:120]}")
            elif 200 <= response.status_code < 300:
                response.failure(f"accepted corrupted input ({kind} {field}): HTTP {response.status_code}")
            else:
                response.failure(_unexpected(response, "422"))


def _json(response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _is_quality(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 10.0


def _unexpected(response, expected: str) -> str:
    """A failure message that groups well in the failures table: kind first, details after."""
    if response.status_code == 0:
        refused = " (connection refused)" if "refused" in str(response.error).lower() else ""
        return f"connection failed: {type(response.error).__name__}{refused}"
    kind = "server error" if response.status_code >= 500 else "unexpected status"
    return f"{kind}: HTTP {response.status_code} (expected {expected})"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


if _env_flag("LOCUST_STEP_LOAD"):
    # Defined only when asked for: Locust uses any shape class it finds in the locustfile.

    class StepLoadShape(LoadTestShape):
        """Users ramp up in steps, to read at which load the service breaks; the ramp stops at the first step
        that broke it (Locust's p50 or p99 of the last 10 s over the limits, or a request failed), or after
        the last step. Limits of 0 never stop it early."""

        step_users = int(os.environ.get("LOCUST_STEP_USERS", "5"))
        step_seconds = float(os.environ.get("LOCUST_STEP_SECONDS", "10"))
        steps = int(os.environ.get("LOCUST_STEPS", "5"))
        stop_p50_ms = float(os.environ.get("LOCUST_STEP_STOP_P50_MS", "0"))
        stop_p99_ms = float(os.environ.get("LOCUST_STEP_STOP_P99_MS", "0"))

        def __init__(self) -> None:
            super().__init__()
            self._steps_judged = 0
            self._failures_before = 0
            self._broken = False

        def tick(self) -> tuple[int, float] | None:
            elapsed = self.get_run_time()
            finished = int(elapsed // self.step_seconds)  # steps completed so far
            if finished > self._steps_judged:
                self._steps_judged = finished
                self._broken = self._broken or self._step_broke()
            if self._broken or finished >= self.steps:
                return None
            return (finished + 1) * self.step_users, float(self.step_users)

        def _step_broke(self) -> bool:
            """Whether the step that just ended broke the service, judged as it ends."""
            total = self.runner.stats.total
            failed = total.num_failures > self._failures_before
            self._failures_before = total.num_failures
            limits = ((0.5, self.stop_p50_ms), (0.99, self.stop_p99_ms))
            slow = any(limit > 0 and (total.get_current_response_time_percentile(q) or 0) > limit
                       for q, limit in limits)
            return failed or slow
