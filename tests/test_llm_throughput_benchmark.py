# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""The throughput benchmark runs end to end in a tiny configuration: figures, not timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import llm_throughput
from tests.llm_fixtures import MODEL_A, llm_models_dir  # noqa: F401


def test_percentiles_interpolate_between_ranks() -> None:
    assert llm_throughput.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert llm_throughput.percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert llm_throughput.percentile([], 50) == 0.0


@pytest.mark.slow
def test_the_throughput_benchmark_reports_every_level(llm_models_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "throughput.json"
    code = llm_throughput.main(["--model-dir", str(llm_models_dir / MODEL_A), "--clients", "1,3", "--rounds", "2",
                                "--new-tokens", "4", "--peers", "none", "--threads", "1", "--json", str(out)])
    report = capsys.readouterr()
    assert code == 0, report.err
    figures = json.loads(out.read_text())
    levels = figures["http"]["service"]
    assert [(level["clients"], level["requests"]) for level in levels] == [(1, 2), (3, 6)]
    for level in levels:
        assert level["tokens"] > 0 and level["tokens_per_s"] > 0
        assert 0 < level["ttft_p50_s"] <= level["ttft_p95_s"] <= level["latency_p95_s"]
        assert level["latency_p50_s"] <= level["latency_p95_s"]
    ceilings = figures["in_process"]
    assert ceilings["sequential"]["tokens_per_s"] > 0 and ceilings["batched"]["prompts"] == 8
    assert "tokens/s" in report.out and "over one batched generate" in report.out
