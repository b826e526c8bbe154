# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""The swap benchmark runs end to end, and says so when the default model is out of reach."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import llm_swap
from tests.llm_fixtures import llm_models_dir, real_models_dir  # noqa: F401


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


@pytest.mark.slow
def test_the_real_model_benchmark_measures_both_dtypes_against_the_in_process_baseline(
    real_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks import llm_real_model

    out = tmp_path / "real.json"
    assert llm_real_model.main(["--requests", "1", "--new-tokens", "8", "--json", str(out)]) == 0
    report, figures = capsys.readouterr().out, json.loads(out.read_text())
    float32, bfloat16 = figures["float32"], figures["bfloat16"]
    assert figures["weights_mb"]["bfloat16"] * 2 == pytest.approx(figures["weights_mb"]["float32"], rel=0.01)
    for dtype in (float32, bfloat16):
        assert dtype["tokens_p50"] == 8 and dtype["tokens_per_s_p50"] > 0 and 0 < dtype["ttft_p50_s"] < 60
        # a process holding a 135M-parameter model: more than the weights alone, and never a leak's gigabytes
        assert figures["weights_mb"]["bfloat16"] < dtype["rss_mb"] < 3000
        assert dtype["swap_peak_mb"] >= dtype["rss_mb"] * 0.9
    assert float32["rss_mb"] > bfloat16["rss_mb"], "the bfloat16 copy holds half the bytes of weights"
    assert figures["baseline_tokens_per_s"] > 0 and "x of it in float32" in report


def test_the_longest_prompt_fills_the_token_limit_within_the_character_limit(real_models_dir: Path) -> None:
    """The swap-memory benchmark's prompts are the worst a request may send: near LLM_MAX_INPUT_TOKENS."""
    from transformers import AutoTokenizer

    from app.llm.config import Settings
    from benchmarks.llm_swap_memory import longest_prompt

    settings = Settings()
    tokenizer = AutoTokenizer.from_pretrained(real_models_dir / "smollm2-135m-instruct")
    text, tokens = longest_prompt(tokenizer, settings, 3)
    chat = [{"role": "user", "content": text}]
    counted = len(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"])
    assert counted == tokens and settings.max_input_tokens - 64 <= tokens <= settings.max_input_tokens - 16
    assert len(text) <= settings.max_input_chars


@pytest.mark.slow
def test_the_swap_memory_benchmark_swaps_under_a_full_batch(
    real_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import llm_swap_memory

    # small limits, so the full batch is quick: the service in the child process reads the same settings
    for name, value in {"LLM_MAX_INPUT_TOKENS": "200", "LLM_MAX_NEW_TOKENS_CAP": "24",
                        "LLM_DEFAULT_MAX_NEW_TOKENS": "24", "LLM_MAX_BATCH_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "swap-memory.json"
    assert llm_swap_memory.main(["--json", str(out)]) == 0
    figures, report = json.loads(out.read_text()), capsys.readouterr().out
    assert figures["prompts"] == 2 and all(150 <= tokens <= 184 for tokens in figures["prompt_tokens"])
    assert len(figures["endings"]) == 2 and set(figures["endings"]) <= {"stop", "length"}
    assert figures["idle_mb"] < figures["peak_mb"] < 3000 and figures["peak_mb"] >= figures["before_swap_mb"]
    assert "peak, swap and batch together" in report
