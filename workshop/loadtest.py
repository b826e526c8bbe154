"""Load tests with Locust, run as a subprocess, read back as pandas tables and plots.

Locust is never imported here: it monkey-patches the standard library with gevent on import, which
hangs a Jupyter kernel. It runs headless in its own process with a bounded run time and writes CSV
files and an HTML report to a results folder, which :func:`load_results` reads.

``python -m workshop loadtest --host http://127.0.0.1:8000 --users 10 --run-time 30 --results build/load_test``
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from workshop.paths import project_root
from workshop.process import ManagedProcess
from workshop.waiting import WaitTimeout, wait_for

SLO_P50_MS = 50.0
SLO_P99_MS = 300.0
CSV_PREFIX = "locust"
AGGREGATED = "Aggregated"
CORRUPTED_PREFIX = "/predict [corrupted"
_COLUMNS = {
    "Type": "method", "Name": "endpoint", "Request Count": "requests", "Failure Count": "failures",
    "Requests/s": "rps", "Failures/s": "failures_per_s", "50%": "p50_ms", "95%": "p95_ms", "99%": "p99_ms",
    "Average Response Time": "avg_ms", "Max Response Time": "max_ms", "User Count": "users",
    "Error": "error", "Occurrences": "occurrences", "Method": "method",
}


class LoadTestError(RuntimeError):
    """The load test failed (service down, wrong answers, Locust crashed); the message lists why."""

    def __init__(self, message: str, result: LoadTestResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def locustfile() -> Path:
    """The workshop's locustfile, found from the project root so any working directory works."""
    return project_root() / "load_tests" / "locustfile.py"


@dataclass
class LoadTestResult:
    """What one Locust run wrote: per-endpoint stats, failures, history over time, the HTML report."""

    results_dir: Path
    returncode: int
    stats: pd.DataFrame
    failures: pd.DataFrame
    history: pd.DataFrame
    log: str = ""

    @property
    def html_report(self) -> Path:
        return self.results_dir / "report.html"

    @property
    def endpoints(self) -> pd.DataFrame:
        """One row per endpoint (corrupted kinds separate), without Locust's aggregate row."""
        return self.stats[self.stats.index != AGGREGATED]

    @property
    def total_requests(self) -> int:
        return int(self.endpoints["requests"].sum())

    @property
    def total_failures(self) -> int:
        return int(self.endpoints["failures"].sum())

    @property
    def corrupted(self) -> pd.DataFrame:
        """The corrupted requests by kind: a failure here is a corrupted wine not answered with a 422."""
        rows = self.endpoints[self.endpoints.index.str.startswith(CORRUPTED_PREFIX)]
        kinds = rows.index.str.extract(r"corrupted: ([a-z_]+)", expand=False)
        return rows[["requests", "failures"]].set_axis(kinds.rename("corruption"))

    def failures_by_kind(self) -> pd.DataFrame:
        """Failures grouped by error message, the most frequent first, with the endpoints that saw them."""
        if self.failures.empty:
            return pd.DataFrame(columns=["occurrences", "endpoints"]).rename_axis("error")
        grouped = self.failures.groupby("error").agg(
            occurrences=("occurrences", "sum"), endpoints=("endpoint", lambda e: ", ".join(sorted(set(e))))
        )
        return grouped.sort_values("occurrences", ascending=False)

    def meets_slo(self) -> bool:
        """Whole-run p50 and p99 (all requests) within the SLO."""
        total = self.stats.loc[AGGREGATED]
        return bool(total["p50_ms"] <= SLO_P50_MS and total["p99_ms"] <= SLO_P99_MS)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LoadTestError(f"Locust wrote no {path.name} in {path.parent}: it did not run to the end.")
    return pd.read_csv(path, na_values=["N/A"]).rename(columns=_COLUMNS)


def load_results(
    results_dir: Path | str, returncode: int = 0, log: str = "", prefix: str = CSV_PREFIX
) -> LoadTestResult:
    """Read ``PREFIX_stats.csv``, ``PREFIX_failures.csv`` and ``PREFIX_stats_history.csv`` of a run."""
    folder = Path(results_dir)
    stats = _read_csv(folder / f"{prefix}_stats.csv")
    stats = stats[["endpoint", "method", "requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms",
                   "max_ms"]].set_index("endpoint")
    failures = _read_csv(folder / f"{prefix}_failures.csv")[["method", "endpoint", "error", "occurrences"]]
    failures["error"] = failures["error"].str.replace(r"^CatchResponseError\('(.*)'\)$", r"\1", regex=True)
    history = _read_csv(folder / f"{prefix}_stats_history.csv")
    history["seconds"] = history["Timestamp"] - history["Timestamp"].min()
    history = history[["seconds", "users", "endpoint", "rps", "failures_per_s", "p50_ms", "p95_ms", "p99_ms"]]
    return LoadTestResult(folder, returncode, stats, failures, history, log)


def locust_command(
    host: str, users: int, spawn_rate: float, run_time_s: float, results_dir: Path, *,
    drift: bool = False, think_time_s: float = 1.0, seed: int = 42, stop_timeout_s: float = 5.0,
) -> list[str]:
    """The headless, time-bounded Locust command line; ``--exit-code-on-error`` makes failures visible."""
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile()), "--host", host, "--headless",
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", f"{max(1, round(run_time_s))}s",
        "--stop-timeout", f"{max(1, round(stop_timeout_s))}s", "--exit-code-on-error", "1",
        "--csv", str(results_dir / CSV_PREFIX), "--csv-full-history", "--html", str(results_dir / "report.html"),
        "--only-summary", "--think-time", str(think_time_s), "--seed", str(seed),
    ]
    return [*command, "--drift"] if drift else command


def step_load_env(step_load: bool, step_users: int, step_seconds: float, steps: int,
                  stop_when_broken: bool = True) -> dict[str, str]:
    """The environment that switches the locustfile's step shape on or off (shapes are picked at import);
    with ``stop_when_broken`` the ramp ends after the first step that misses the SLO or fails a request."""
    limits = (SLO_P50_MS, SLO_P99_MS) if stop_when_broken else (0, 0)
    return {"LOCUST_STEP_LOAD": "true" if step_load else "false", "LOCUST_STEP_USERS": str(step_users),
            "LOCUST_STEP_SECONDS": str(step_seconds), "LOCUST_STEPS": str(steps),
            "LOCUST_STEP_STOP_P50_MS": f"{limits[0]:g}", "LOCUST_STEP_STOP_P99_MS": f"{limits[1]:g}"}


def run_load_test(
    host: str,
    users: int = 10,
    spawn_rate: float = 5.0,
    run_time_s: float = 20.0,
    results_dir: Path | str = "build/load_test",
    drift: bool = False,
    step_load: bool = False,
    *,
    think_time_s: float = 1.0,
    seed: int = 42,
    step_users: int = 5,
    step_seconds: float = 10.0,
    steps: int = 4,
    stop_when_broken: bool = True,
    stop_timeout_s: float = 3.0,
    check: bool = True,
) -> LoadTestResult:
    """Run Locust against ``host`` and return its results; with ``check``, raise if any request failed.

    ``step_load`` ramps ``step_users`` more users every ``step_seconds``, at most ``steps`` times (``users`` is
    then unused), and with ``stop_when_broken`` stops after the first step that missed the SLO or failed a
    request (:func:`step_load_verdict` says which); the run still ends after ``run_time_s``.
    """
    folder = Path(results_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob(f"{CSV_PREFIX}_*.csv"), folder / "report.html"]:
        stale.unlink(missing_ok=True)
    command = locust_command(host, users, spawn_rate, run_time_s, folder, drift=drift, think_time_s=think_time_s,
                             seed=seed, stop_timeout_s=stop_timeout_s)
    env = {"LOCUST_DRIFT": "false", **step_load_env(step_load, step_users, step_seconds, steps, stop_when_broken)}
    process = ManagedProcess("locust", command, env=env, cwd=project_root(), log_path=folder / "locust.log").start()
    grace_s = run_time_s + stop_timeout_s + 60.0  # startup, data loading, writing reports
    with contextlib.suppress(WaitTimeout):  # still running then: stopped and reported below
        wait_for(lambda: not process.running, grace_s, "Locust to stop", interval=0.2, retry_on=())
    timed_out = process.running
    returncode = process.stop()
    log = process.log_tail(40)
    if timed_out:
        raise LoadTestError(f"Locust did not stop within {run_time_s:.0f} s plus grace time. Log:\n{log}")
    try:
        result = load_results(folder, returncode or 0, log)
    except LoadTestError as error:
        raise LoadTestError(f"{error} Exit code {returncode}. Log:\n{log}") from None
    if check and (returncode != 0 or result.total_failures):
        raise LoadTestError(describe_failure(host, result), result)
    return result


def describe_failure(host: str, result: LoadTestResult) -> str:
    """Why a run failed, most frequent failure first: what a learner or CI log needs to read."""
    lines = [f"Load test against {host} failed (Locust exit code {result.returncode}): "
             f"{result.total_failures} of {result.total_requests} requests failed."]
    for error, row in result.failures_by_kind().iterrows():
        lines.append(f"  - {row['occurrences']} x {error} [{row['endpoints']}]")
    if result.failures.empty:
        lines.append(f"No request failed; Locust's log:\n{result.log}")
    lines.append(f"Report: {result.html_report}")
    return "\n".join(lines)


def p99_by_users(result: LoadTestResult) -> pd.DataFrame:
    """Per load level of a step run: throughput and latency, read at the end of each step, and whether any
    request failed during it.

    Locust's percentiles over time cover a sliding 10 s window, so the last row of a step describes that
    step once it lasts 10 s or more. A step meets the SLO when its p50 and p99 do and nothing failed.
    """
    rows = result.history[(result.history["endpoint"] == AGGREGATED) & (result.history["users"] > 0)]
    table = rows.groupby("users").agg(rps=("rps", "last"), p50_ms=("p50_ms", "last"), p99_ms=("p99_ms", "last"),
                                      failed=("failures_per_s", lambda rates: bool((rates > 0).any())))
    meets = (table["p50_ms"] <= SLO_P50_MS) & (table["p99_ms"] <= SLO_P99_MS) & ~table["failed"]
    return table.assign(meets_slo=meets).round(1)


def breaking_load(table: pd.DataFrame) -> int | None:
    """The smallest user count whose step missed the SLO (or failed a request), or None if every step met it."""
    broken = table.index[~table["meets_slo"]]
    return int(broken.min()) if len(broken) else None


def step_load_verdict(table: pd.DataFrame, steps: int, step_users: int) -> str:
    """One sentence on where a step run broke the service, what broke, and what that means for capacity."""
    limit = breaking_load(table)
    if limit is None:
        top = int(table.index.max()) if len(table) else 0
        stopped_early = top < steps * step_users
        ending = ("Locust stopped the ramp there: its own reading as the step ended was over the SLO"
                  if stopped_early else "the limit is further up: raise `steps` or `step_users`")
        return (f"every step met the SLO up to {top} users ({table['rps'].max():.0f} requests/s); {ending}.")
    row = table.loc[limit]
    reasons = []
    if row["p50_ms"] > SLO_P50_MS:
        reasons.append(f"p50 {row['p50_ms']:.0f} ms > {SLO_P50_MS:.0f} ms")
    if row["p99_ms"] > SLO_P99_MS:
        reasons.append(f"p99 {row['p99_ms']:.0f} ms > {SLO_P99_MS:.0f} ms")
    if row["failed"]:
        reasons.append("requests failed")
    within = table.index[(table.index < limit)]
    capacity = (f"the last step within it had {int(within.max())} users ({table.loc[within.max(), 'rps']:.0f} "
                "requests/s)" if len(within) else "even the first step missed it")
    return f"the service broke at {limit} users ({row['rps']:.0f} requests/s): {', '.join(reasons)}; {capacity}."


def input_totals(metrics: pd.DataFrame) -> pd.Series:
    """Per-feature input sums and the row count (``rows``) from a /metrics frame (``WineClient.metrics``):
    two of these bracket a run, so the drift of that run can be read without the traffic before it."""
    sums = metrics[metrics["name"] == "wine_input_feature_sum_total"]
    totals = pd.Series(sums["value"].to_numpy(), index=[labels["feature"] for labels in sums["labels"]])
    rows = float(metrics.loc[metrics["name"] == "wine_input_rows_total", "value"].sum())
    return pd.concat([totals, pd.Series({"rows": rows})])


def mean_inputs(before: pd.Series, after: pd.Series) -> pd.Series:
    """Mean of each feature over the traffic between two scrapes: what a drift panel plots."""
    delta = after - before
    return delta.drop("rows") / delta["rows"]


def training_means(metrics: pd.DataFrame) -> pd.Series:
    """The training data's mean of each feature, as the service publishes it from the model card."""
    means = metrics[metrics["name"] == "wine_training_feature_mean"]
    return pd.Series(means["value"].to_numpy(), index=[labels["feature"] for labels in means["labels"]])


def plot_over_time(result: LoadTestResult, title: str = "Load test") -> Figure:
    """Requests/s (and users) over time above latency percentiles with the SLO lines drawn in."""
    rows = result.history[result.history["endpoint"] == AGGREGATED]
    figure = Figure(figsize=(9, 5.5))
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(rows["seconds"], rows["rps"], color="#2980b9", label="requests/s")
    top.plot(rows["seconds"], rows["failures_per_s"], color="#c0392b", label="failures/s")
    top.set(ylabel="per second", title=title)
    users = top.twinx()
    users.step(rows["seconds"], rows["users"], where="post", color="#7f8c8d", linestyle=":", label="users")
    users.set_ylabel("users")
    top.legend(loc="upper left")
    for column, color in (("p50_ms", "#27ae60"), ("p95_ms", "#f39c12"), ("p99_ms", "#8e44ad")):
        bottom.plot(rows["seconds"], rows[column], color=color, label=column.replace("_ms", ""))
    bottom.axhline(SLO_P50_MS, color="#27ae60", linestyle="--", linewidth=1, label=f"SLO p50 {SLO_P50_MS:.0f} ms")
    bottom.axhline(SLO_P99_MS, color="#8e44ad", linestyle="--", linewidth=1, label=f"SLO p99 {SLO_P99_MS:.0f} ms")
    bottom.set(xlabel="seconds since start", ylabel="latency, ms (log)", yscale="log")
    bottom.legend(loc="upper left", ncols=3, fontsize="small")
    figure.tight_layout()
    return figure


def plot_endpoints(result: LoadTestResult) -> Figure:
    """p50/p95/p99 per endpoint against the SLO: which endpoint is the slow one."""
    table = result.endpoints[["p50_ms", "p95_ms", "p99_ms"]]
    figure = Figure(figsize=(9, 3.8))
    axes = figure.subplots()
    table.plot.barh(ax=axes, color=["#27ae60", "#f39c12", "#8e44ad"])
    axes.axvline(SLO_P99_MS, color="#8e44ad", linestyle="--", label=f"SLO p99 {SLO_P99_MS:.0f} ms")
    axes.axvline(SLO_P50_MS, color="#27ae60", linestyle="--", label=f"SLO p50 {SLO_P50_MS:.0f} ms")
    axes.set(xlabel="latency, ms (log)", xscale="log", ylabel="", title="Latency per endpoint")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure
