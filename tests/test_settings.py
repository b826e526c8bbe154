"""Settings from WINE_* environment variables, the combinations refused at start-up, and log formats."""

from __future__ import annotations

import bisect
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.common.logs import configure_logging
from app.wine.api import create_app
from app.wine.config import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No WINE_* variable from the caller's shell leaks into the test."""
    for name in list(os.environ):
        if name.startswith("WINE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_settings_are_read_from_wine_variables(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every knob is a WINE_-prefixed environment variable; unprefixed names are not read."""
    clean_env.setenv("WINE_MODEL_DIR", str(tmp_path / "model"))
    clean_env.setenv("WINE_QUALITY_DATA_DIR", str(tmp_path / "data"))
    clean_env.setenv("WINE_MAX_BATCH_SIZE", "7")
    clean_env.setenv("WINE_MAX_BODY_BYTES", "4096")
    clean_env.setenv("WINE_INFERENCE_THREADS", "2")
    clean_env.setenv("WINE_LOG_LEVEL", "DEBUG")
    clean_env.setenv("WINE_LOG_JSON", "true")
    clean_env.setenv("MAX_BATCH_SIZE", "99")  # no prefix: ignored

    settings = Settings()
    assert settings.model_dir == tmp_path / "model"
    assert settings.quality_data_dir == tmp_path / "data"
    assert settings.max_batch_size == 7
    assert settings.max_body_bytes == 4096
    assert settings.inference_threads == 2
    assert settings.log_level == "DEBUG"
    assert settings.log_json is True


def test_defaults_need_no_environment(clean_env: pytest.MonkeyPatch) -> None:
    """With no WINE_ variable at all the service starts in development with documented defaults."""
    settings = Settings()
    assert settings.environment == "development"
    assert settings.quality_data_dir is None
    assert settings.max_batch_size == 1000
    assert settings.model_dir == Path("artifacts/wine")


@pytest.mark.parametrize(
    ("name", "value"),
    [("WINE_MAX_BATCH_SIZE", "0"), ("WINE_MAX_BATCH_SIZE", "many"), ("WINE_LOG_LEVEL", "CHATTY")],
)
def test_invalid_values_are_refused(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    """A typo in a setting stops the service at start-up instead of running with a surprise."""
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("WINE_").lower()):
        Settings()


def test_production_requires_json_logs(clean_env: pytest.MonkeyPatch) -> None:
    """Production without JSON logs is refused, because the log shipper parses JSON."""
    clean_env.setenv("WINE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="WINE_LOG_JSON must be true when WINE_ENVIRONMENT=production"):
        Settings()
    clean_env.setenv("WINE_LOG_JSON", "true")
    assert Settings().environment == "production"


def test_body_limit_too_small_for_the_batch_size_is_refused() -> None:
    """A body limit that cannot hold a full batch is refused, naming both settings."""
    with pytest.raises(ValidationError) as caught:
        Settings(max_batch_size=1000, max_body_bytes=100_000)
    message = str(caught.value)
    assert "WINE_MAX_BODY_BYTES=100000" in message
    assert "WINE_MAX_BATCH_SIZE=1000" in message


def test_smallest_accepted_body_limit_holds_a_full_batch(model_dir: Path, wines: list[dict]) -> None:
    """At the smallest body limit the settings accept, a full batch of real wines is served, not a 413."""
    batch_size = 20

    def accepted(body_bytes: int) -> bool:
        try:
            Settings(model_dir=model_dir, max_batch_size=batch_size, max_body_bytes=body_bytes)
        except ValidationError:
            return False
        return True

    smallest = bisect.bisect_left(range(1_000_000), True, lo=1024, key=accepted)
    assert accepted(smallest) and not accepted(smallest - 1)
    settings = Settings(model_dir=model_dir, max_batch_size=batch_size, max_body_bytes=smallest)
    instances = [wines[i % len(wines)] for i in range(batch_size)]
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict/batch", json={"instances": instances})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == batch_size


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers; put back pytest's afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logging_writes_one_object_per_line(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    """With WINE_LOG_JSON every log line is one JSON object with time, level, logger and message."""
    configure_logging("INFO", json=True)
    log = logging.getLogger("app.wine.test")
    log.info("model loaded", extra={"version": "v1", "seconds": 0.5})
    log.warning("line one\nline two")
    log.debug("not shown at INFO")

    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]
    expected = [("INFO", "model loaded"), ("WARNING", "line one\nline two")]
    assert [(r["level"], r["message"]) for r in records] == expected
    assert records[0]["version"] == "v1" and records[0]["seconds"] == 0.5
    assert records[0]["name"] == "app.wine.test"
    assert records[0]["time"]


def test_plain_logging_is_readable(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    """Without JSON, a learner sees level, logger and message on one line."""
    configure_logging("INFO", json=False)
    logging.getLogger("app.wine.test").info("model loaded")
    assert capsys.readouterr().err.rstrip().endswith("INFO app.wine.test: model loaded")
