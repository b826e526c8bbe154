# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""The swap benchmark runs end to end, and says so when the default model is out of reach."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import llm_swap
from tests.llm_fixtures import llm_models_dir  # noqa: F401


@pytest.mark.slow
def test_the_swap_benchmark_reports_figures_and_an_unreachable_hub(
    llm_models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the service (a child process) never reaches for the hub
    out = tmp_path / "swap.json"
    code = llm_swap.main(["--swaps", "3", "--models-dir", str(llm_models_dir), "--no-stand-in",
                          "--hub-model", "workshop-tests/not-cached", "--json", str(out)])
    report = capsys.readouterr()
    assert code == 0, report.err
    figures = json.loads(out.read_text())
    tiny = figures["tiny"]
    assert tiny["swaps"] == 3 and 0 < tiny["min_s"] <= tiny["p50_s"] <= tiny["p95_s"] <= tiny["max_s"] < 30
    assert 0 < tiny["load_p50_s"] <= tiny["state_p50_s"] + 0.05
    hub = figures["hub"]
    assert hub["available"] is False and "offline mode is on" in hub["reason"] and hub["seconds_to_fail"] < 10
    assert "p50 s" in report.out and "not available here, no figures" in report.out


def test_a_models_dir_without_the_stand_in_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert llm_swap.main(["--swaps", "1", "--models-dir", str(tmp_path), "--hub-model", ""]) == 2
    assert "pass --no-stand-in" in capsys.readouterr().err
