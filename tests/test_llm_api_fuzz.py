# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""Fuzzing the LLM API from its own OpenAPI document: no generated request, valid or not, gets a 5xx.

Schemathesis generates schema-valid (positive) and schema-violating (negative) requests for every
operation (completions, swaps, status, probes) and checks each response against the document.
Runs are derandomized, so a failure reproduces on every run and machine. The app serves a tiny
model; generations are capped at a few tokens to keep the run short, and hub ids load offline
only (they fail fast: nothing here may reach the network).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from tests.llm_fixtures import MODEL_A, llm_models_dir, wait_loaded  # noqa: F401

pytest.importorskip("transformers", reason="transformers is missing; install the llm extra: pip install -e '.[llm]'")

from app.llm.api import create_app
from app.llm.config import Settings

# @schema.parametrize needs the schema when the module is collected, before fixtures exist, so the
# app starts with nothing deployed and `_model_loaded` points it at the session's tiny models.
app = create_app(Settings(models_dir=Path("models-are-set-by-a-fixture"), default_model="", hub_offline=True,
                          max_new_tokens_cap=4, default_max_new_tokens=2, max_messages=8, max_input_chars=2000))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

# A schema-valid model_id may name no folder (a documented 422), and a swap may meet one in progress
# (a documented 409); every other check, "not a server error" first, applies.
EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture(scope="module", autouse=True)
def _model_loaded(llm_models_dir: Path) -> None:
    app.state.settings.models_dir = llm_models_dir
    app.state.serving.manager.swap(MODEL_A)
    assert wait_loaded(app)["state"] == "RUNNING"


@schema.parametrize()
@settings(
    max_examples=60, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case) -> None:
    """Whatever a client sends, the answer is a documented status with a documented body, never a 5xx."""
    response = case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
    assert response.status_code < 500, response.text
    wait_loaded(app)  # a swap the case started ends before the next case
