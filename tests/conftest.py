"""Shared fixtures: the verified dataset, one trained model per session, and servers.

A test that needs something this machine lacks skips with what is missing and
how to get it. CI sets ``WORKSHOP_FORBID_SKIPS=1``, which turns every skip into
a failure, so nothing can be silently skipped there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from app.wine.config import Settings
from app.wine.data import DataError, WineData, load_wine_data
from app.wine.train import TrainingReport, train

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under WORKSHOP_FORBID_SKIPS=1 a skip is a failure: CI must provision everything."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("WORKSHOP_FORBID_SKIPS") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but WORKSHOP_FORBID_SKIPS=1 forbids skips: {reason}"


@pytest.fixture(scope="session")
def wine_data() -> WineData:
    try:
        return load_wine_data(Settings())
    except DataError as error:
        pytest.skip(f"wine data unavailable ({error}); set WINE_QUALITY_DATA_DIR to a folder with the UCI CSVs")


@pytest.fixture(scope="session")
def training_report(wine_data: WineData, tmp_path_factory: pytest.TempPathFactory) -> TrainingReport:
    """One real training run for the whole session (about 10 s)."""
    return train(tmp_path_factory.mktemp("wine-model"), data=wine_data)


@pytest.fixture(scope="session")
def model_dir(training_report: TrainingReport) -> Path:
    """A folder with model.onnx and model_card.json; treat it as read-only."""
    return training_report.output


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the model folder, for tests that damage it."""
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


@pytest.fixture
def settings(model_dir: Path) -> Settings:
    return Settings(model_dir=model_dir)
