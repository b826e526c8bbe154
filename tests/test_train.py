"""Training: a good enough model, chosen by the documented rule, exported as safe and faithful ONNX."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from app.wine.data import WineData
from app.wine.features import FEATURE_NAMES, MODEL_INPUTS
from training.wine import (
    BATCH_BUDGET_MS,
    LATENCY_BUDGET_MS,
    LIBRARIES,
    CandidateResult,
    TrainingReport,
    candidates,
    choose,
    latency_verdict,
    split,
)

CANDIDATES = {"linear", "hist_gradient_boosting", "random_forest"}
STANDARD_ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}


@pytest.fixture(scope="module")
def card(model_dir: Path) -> dict:
    """The model card as written to disk, which is what the service and learners read."""
    return json.loads((model_dir / "model_card.json").read_text())


def onnx_predict(path: Path, X: np.ndarray) -> np.ndarray:
    """Predictions straight from onnxruntime, independent of the service code."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: X.astype(np.float32)})
    return np.asarray(output, dtype=np.float64).reshape(-1)


def test_chosen_model_is_accurate_enough(training_report: TrainingReport, card: dict) -> None:
    """The served model's held-out RMSE is at most 0.62 quality points."""
    chosen = next(r for r in training_report.results if r.chosen)
    assert chosen.rmse <= 0.62
    assert card["metrics"]["rmse"] == pytest.approx(chosen.rmse)


def test_all_three_candidates_are_compared(training_report: TrainingReport, card: dict) -> None:
    """The comparison table always has the three documented candidates, in the report and the card."""
    assert {r.name for r in training_report.results} == CANDIDATES
    assert {row["name"] for row in card["comparison"]} == CANDIDATES
    assert set(training_report.table().index) == CANDIDATES


def test_chosen_candidate_follows_the_rule(training_report: TrainingReport, card: dict) -> None:
    """Lowest RMSE among the candidates that export with parity; latency never decides."""
    results = training_report.results
    expected = min((r for r in results if r.onnx_exportable), key=lambda r: r.rmse)
    assert [r.name for r in results if r.chosen] == [expected.name]
    assert training_report.chosen == expected.name == card["algorithm"]
    assert card["version"].startswith(f"{expected.name}-")
    for result in results:
        assert result.onnx_exportable == (result.export_error is None)


def test_the_latency_budget_is_measured_and_reported_for_every_exported_candidate(
    training_report: TrainingReport, card: dict
) -> None:
    for result in training_report.results:
        measured = result.onnx_latency_ms is not None and result.onnx_batch_ms is not None
        assert measured == result.onnx_exportable
        assert result.within_latency_budget == (
            None if not measured
            else result.onnx_latency_ms <= LATENCY_BUDGET_MS and result.onnx_batch_ms <= BATCH_BUDGET_MS)
    chosen = next(r for r in training_report.results if r.chosen)
    assert card["within_latency_budget"] == chosen.within_latency_budget
    assert "never a reason to serve another model" in card["latency_check"]


def candidate(
    name: str, rmse: float, exportable: bool = True, latency_ms: float | None = 0.1, batch_ms: float | None = 0.5
) -> CandidateResult:
    return CandidateResult(
        name=name, rmse=rmse, mae=rmse, rounded_accuracy=0.5, sklearn_latency_ms=1.0,
        onnx_exportable=exportable, onnx_latency_ms=latency_ms if exportable else None,
        onnx_batch_ms=batch_ms if exportable else None,
        export_error=None if exportable else "TypeError: unsupported",
    )


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        pytest.param([candidate("a", 0.7), candidate("b", 0.6), candidate("c", 0.65)], "b", id="lowest-rmse"),
        pytest.param([candidate("best", 0.5, exportable=False), candidate("ok", 0.6)], "ok",
                     id="not-exportable-skipped"),
        # A machine that measures slowly must not change the model: the same data, the same choice.
        pytest.param([candidate("slow", 0.5, latency_ms=5.0), candidate("ok", 0.6)], "slow",
                     id="over-budget-still-chosen"),
        pytest.param([candidate("slow-batches", 0.5, batch_ms=3.0), candidate("ok", 0.6)], "slow-batches",
                     id="batch-over-budget-still-chosen"),
    ],
)
def test_choose_applies_the_rule(results: list[CandidateResult], expected: str) -> None:
    """Non-exportable candidates are never chosen, however good their RMSE; latency does not decide."""
    assert choose(results).name == expected


def test_the_latency_verdict_says_what_was_measured_and_what_to_do() -> None:
    assert latency_verdict(candidate("fast", 0.5, latency_ms=0.05, batch_ms=0.6)).endswith("within budget.")
    over = latency_verdict(candidate("slow", 0.5, latency_ms=0.05, batch_ms=1.5))
    assert "100 rows in 1.500 ms" in over and "over budget on this machine" in over and "make bench" in over


@pytest.mark.parametrize(
    "results",
    [
        pytest.param([], id="no-candidates"),
        pytest.param([candidate("a", 0.5, exportable=False)], id="none-exportable"),
    ],
)
def test_choose_refuses_when_nothing_is_eligible(results: list[CandidateResult]) -> None:
    """With no safe export, training fails loudly instead of exporting a model that breaks the rule."""
    with pytest.raises(RuntimeError, match="No candidate exports to ONNX"):
        choose(results)


def test_onnx_matches_scikit_learn_on_the_test_set(
    training_report: TrainingReport, wine_data: WineData, model_dir: Path
) -> None:
    """The served ONNX file predicts what the chosen scikit-learn model predicts, within 1e-4."""
    parts = split(wine_data.frame)
    model = candidates()[training_report.chosen].fit(parts.X_train, parts.y_train)
    onnx_predictions = onnx_predict(model_dir / "model.onnx", parts.X_test)
    assert len(onnx_predictions) == len(parts.y_test) == 1300
    assert np.max(np.abs(onnx_predictions - model.predict(parts.X_test))) <= 1e-4
    chosen = next(r for r in training_report.results if r.chosen)
    assert chosen.onnx_max_abs_diff is not None and chosen.onnx_max_abs_diff <= 1e-4


def test_model_card_documents_the_model(card: dict, wine_data: WineData, model_dir: Path) -> None:
    """The card has what a reviewer needs: version, metrics, training statistics, data, libraries, date."""
    assert re.fullmatch(rf"{card['algorithm']}-[0-9a-f]{{12}}", card["version"])
    assert card["inputs"] == list(MODEL_INPUTS)
    for metric in ("rmse", "mae", "rounded_accuracy", "onnx_latency_ms", "onnx_max_abs_diff"):
        assert isinstance(card["metrics"][metric], float), metric

    train_frame = split(wine_data.frame).train_frame
    by_name = {feature["name"]: feature for feature in card["features"]}
    assert set(FEATURE_NAMES) <= set(by_name)
    for name in FEATURE_NAMES:
        feature = by_name[name]
        assert feature["train_min"] <= feature["train_mean"] <= feature["train_max"], name
        assert feature["train_min"] == pytest.approx(train_frame[name].min()), name
        assert feature["train_max"] == pytest.approx(train_frame[name].max()), name
        assert feature["train_mean"] == pytest.approx(train_frame[name].mean()), name
        assert feature["unit"], name

    assert card["data"]["sha256"] == wine_data.combined_sha256
    assert re.fullmatch(r"[0-9a-f]{64}", card["data"]["sha256"])
    assert card["data"]["rows"] == 6497
    assert {lib: card["libraries"][lib] for lib in LIBRARIES} == {lib: version(lib) for lib in LIBRARIES}
    assert datetime.fromisoformat(card["trained_at"]).utcoffset() is not None
    assert card["model_sha256"] == hashlib.sha256((model_dir / card["model_file"]).read_bytes()).hexdigest()


def test_model_file_is_onnx_not_a_pickle(model_dir: Path) -> None:
    """The artifact is plain ONNX data: standard operators only, nothing that loading could execute."""
    payload = (model_dir / "model.onnx").read_bytes()
    assert not payload.startswith(b"\x80"), "a pickle (protocol 2+) starts with \\x80"
    assert sorted(path.name for path in model_dir.iterdir()) == ["model.onnx", "model_card.json"]

    model = onnx.load_from_string(payload)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["wine"]
    # No custom operator domains (which need native plugins), no local functions, no external data files.
    assert {node.domain for node in model.graph.node} <= STANDARD_ONNX_DOMAINS
    assert {opset.domain for opset in model.opset_import} <= STANDARD_ONNX_DOMAINS
    assert not model.functions
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@dataclass
class CliRun:
    result: subprocess.CompletedProcess
    output: Path


@pytest.fixture(scope="module")
def cli_run(wine_data: WineData, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """``python -m training --output DIR`` in a subprocess: the second (and last) training of the suite."""
    output = tmp_path_factory.mktemp("cli") / "wine"
    result = subprocess.run(
        [sys.executable, "-m", "training", "--output", str(output)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    return CliRun(result, output)


@pytest.mark.slow
def test_cli_trains_and_prints_the_comparison(cli_run: CliRun) -> None:
    """The command a learner runs exits 0, prints the table and writes the artifacts."""
    assert cli_run.result.returncode == 0, cli_run.result.stderr
    stdout = cli_run.result.stdout
    for column in ("rmse", "mae", "onnx_latency_ms", "chosen", *CANDIDATES):
        assert column in stdout
    assert re.search(r"serving model: \S+ \(RMSE 0\.\d{3}\) written to ", stdout)
    assert (cli_run.output / "model.onnx").is_file()
    assert (cli_run.output / "model_card.json").is_file()


@pytest.mark.slow
def test_training_is_deterministic(cli_run: CliRun, card: dict, model_dir: Path) -> None:
    """Training twice on the same data gives the same model version and the same bytes."""
    assert cli_run.result.returncode == 0, cli_run.result.stderr
    again = json.loads((cli_run.output / "model_card.json").read_text())
    assert again["version"] == card["version"]
    assert (cli_run.output / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()
    assert again["metrics"]["rmse"] == card["metrics"]["rmse"]


@pytest.mark.slow
def test_cli_with_bad_data_dir_exits_2_without_traceback(tmp_path: Path) -> None:
    """A wrong WINE_QUALITY_DATA_DIR gives exit code 2 and a one-line `error:` that says what to do."""
    empty = tmp_path / "empty"
    empty.mkdir()
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "training", "--output", str(output)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "WINE_QUALITY_DATA_DIR": str(empty)},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert "is missing" in error_lines[0] and "WINE_QUALITY_DATA_DIR" in error_lines[0]
    assert not output.exists()
