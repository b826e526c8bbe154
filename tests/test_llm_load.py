# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""Notebook 07's concurrency sweep against a real service process: the table a learner reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.llm_fixtures import MODEL_A, llm_models_dir  # noqa: F401
from workshop.llm_load import concurrency_sweep
from workshop.targets import get_target

pytestmark = pytest.mark.slow

CONVERSATIONS = [[{"role": "user", "content": "Hello there"}], [{"role": "user", "content": "How are you today?"}]]


def test_each_level_counts_every_client_and_its_tokens(llm_models_dir: Path, tmp_path: Path) -> None:
    target = get_target("local", log_dir=tmp_path / "logs")
    try:
        llm = target.deploy_llm(llm_models_dir, default_model=MODEL_A, timeout=180)
        table = concurrency_sweep(llm.url, CONVERSATIONS, levels=(1, 3), max_new_tokens=6, rounds=2)
    finally:
        target.teardown()
    assert list(table.index) == [1, 3]
    assert list(table["completions"]) == [2, 6], "every client's every round is counted"
    assert (table["tokens/s"] > 0).all()
    assert (table["latency p50 s"] <= table["latency p95 s"]).all()
    assert (table["first token p50 s"] <= table["latency p50 s"]).all()


def test_a_sweep_needs_something_to_send() -> None:
    with pytest.raises(ValueError, match="at least one conversation"):
        concurrency_sweep("http://127.0.0.1:9", [], levels=(1,))
