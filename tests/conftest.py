"""Shared fixtures: the verified dataset, one trained model per session, and servers.

A test that needs something this machine lacks skips with what is missing and
how to get it. CI sets ``WORKSHOP_FORBID_SKIPS=1``, which turns every skip into
a failure, so nothing can be silently skipped there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.wine.api import create_app
from app.wine.config import Settings
from app.wine.data import DataError, WineData, load_wine_data
from app.wine.features import FEATURE_NAMES
from training.wine import TrainingReport, train

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


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A fresh app (its own metrics registry) whose lifespan has loaded the session model."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


# Rows of the real dataset used as request bodies: three red, four white, distinct predictions.
WINE_ROWS = (0, 5, 100, 1599, 1700, 3000, 6000)


@pytest.fixture(scope="session")
def wines(wine_data: WineData) -> list[dict]:
    """Real wines as the API takes them: the 11 measurements as floats and ``color``."""
    rows = wine_data.frame.iloc[list(WINE_ROWS)]
    return [
        {**{name: float(row[name]) for name in FEATURE_NAMES}, "color": str(row["color"])}
        for _, row in rows.iterrows()
    ]


class Scrape:
    """One GET /metrics, parsed as Prometheus does."""

    def __init__(self, text: str) -> None:
        self.samples: list[Sample] = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample ``name`` whose labels include ``labels``; None if there is none."""
        matches = [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]
        assert len(matches) <= 1, f"{name}{labels} matches {len(matches)} samples: {matches}"
        return matches[0].value if matches else None

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


@pytest.fixture
def scrape() -> Callable[[TestClient], Scrape]:
    """``scrape(client)``: the app's metrics, after asserting GET /metrics answers 200."""

    def _scrape(client: TestClient) -> Scrape:
        response = client.get("/metrics")
        assert response.status_code == 200
        return Scrape(response.text)

    return _scrape
