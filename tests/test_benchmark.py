"""The wine-service benchmark: it reads wrk right, and it runs end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmarks import wine_service
from benchmarks.wine_service import INSTALL_HINTS, BenchmarkError, check_model_dir, parse_wrk

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:40000/predict
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.31us  150.20us   3.10ms   90.12%
    Req/Sec     2.41k    95.33     2.50k    80.00%
  Latency Distribution
     50%  790.00us
     75%  850.00us
     90%    0.95ms
     99%    1.52ms
  2398 requests in 1.00s, 421.52KB read
Requests/sec:   2397.61
Transfer/sec:    421.40KB
"""


def test_parse_wrk_reads_rate_and_percentiles_in_ms() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 2398
    assert result.requests_per_s == pytest.approx(2397.61)
    assert result.p50_ms == pytest.approx(0.79)
    assert result.p99_ms == pytest.approx(1.52)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  Non-2xx or 3xx responses: 12\n", "error status"),
        ("  Socket errors: connect 0, read 3, write 0, timeout 0\n", "socket errors"),
    ],
)
def test_parse_wrk_refuses_runs_with_errors(extra: str, message: str) -> None:
    with pytest.raises(BenchmarkError, match=message):
        parse_wrk(WRK_OUTPUT.replace("Requests/sec", extra + "Requests/sec"))


def test_parse_wrk_refuses_output_without_latency_distribution() -> None:
    without = "\n".join(line for line in WRK_OUTPUT.splitlines() if "%  " not in line)
    with pytest.raises(BenchmarkError, match="--latency"):
        parse_wrk(without)


def test_missing_model_says_how_to_train_one(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match=r"python -m training"):
        check_model_dir(tmp_path)


# Checked at collection, so a machine without them skips before training the session's model.
MISSING_TOOLS = [f"`{tool}` is not on PATH; {hint}" for tool, hint in INSTALL_HINTS.items() if not shutil.which(tool)]
TOO_FEW_CPUS = len(os.sched_getaffinity(0)) < 2


@pytest.mark.slow
@pytest.mark.skipif(bool(MISSING_TOOLS), reason="; ".join(MISSING_TOOLS))
@pytest.mark.skipif(TOO_FEW_CPUS, reason="the benchmark needs 2 CPU cores: one for the server, one for wrk")
def test_benchmark_runs_end_to_end(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures_path = tmp_path / "figures.json"
    argv = ["--duration", "1", "--warmup", "1", "--connections", "2", "--model-dir", str(model_dir)]

    code = wine_service.main([*argv, "--json", str(figures_path)])

    printed = capsys.readouterr()
    assert code == 0, printed.err  # 2 would mean an error response, a socket error or a server that died
    figures = json.loads(figures_path.read_text())
    runs = {(run["server"], run["endpoint"]): run for run in figures["runs"]}
    expected = {(server, path) for server in ("service", "baseline") for path in ("/predict", "/predict/batch")}
    assert set(runs) == expected
    for run in runs.values():
        for name in ("requests", "requests_per_s", "p50_ms", "p99_ms", "rows_per_s"):
            assert run[name] > 0, (run["server"], run["endpoint"], name)
        assert run["p99_ms"] >= run["p50_ms"]
    assert runs["service", "/predict/batch"]["rows_per_s"] == pytest.approx(
        100 * runs["service", "/predict/batch"]["requests_per_s"]
    )
    service_memory = figures["memory"]["service"]
    assert 0 < service_memory["rss_mb"] <= service_memory["peak_rss_mb"]
    assert figures["settings"]["model_version"], "the service did not report the model it served"
    assert len(figures["targets"]) == 3
    assert all(isinstance(target["passed"], bool) for target in figures["targets"])
    assert "PASS" in printed.out or "FAIL" in printed.out
    assert "/predict/batch" in printed.out
