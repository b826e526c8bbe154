"""Fuzzing the API from its own OpenAPI document: no generated request, valid or not, gets a 5xx.

Schemathesis generates schema-valid (positive) and schema-violating (negative) requests for every
operation and checks each response against the document: status codes, content types and bodies.
Runs are derandomized, so a failure reproduces on every run and machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from app.wine.api import create_app
from app.wine.config import Settings

# @schema.parametrize needs the schema when the module is collected, before fixtures exist, so the
# app starts without a model and the session's trained model is loaded into it by `_model_loaded`.
app = create_app(Settings(model_dir=Path("model-is-loaded-by-a-fixture"), max_batch_size=20))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

# The schema cannot express one rule (free SO₂ <= total SO₂), so a schema-valid wine may get a
# documented 422; every other check, "not a server error" first, applies.
EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture(scope="module", autouse=True)
def _model_loaded(model_dir: Path) -> None:
    model = app.state.model
    model.model_dir = model_dir
    assert model.load(), model.load_error
    app.state.metrics.set_model(model.card)


@schema.parametrize()
@settings(
    max_examples=100, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case) -> None:
    """Whatever a client sends, the answer is a documented status with a documented body, never a 5xx."""
    response = case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
    assert response.status_code < 500, response.text
