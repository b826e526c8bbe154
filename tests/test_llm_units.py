# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""Pieces of the LLM service on their own: model-id rules, the generation gate, settings, the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.llm.config import Settings
from app.llm.errors import InvalidModelIdError, OverloadedError
from app.llm.generation import Generator
from app.llm.sources import resolve_source
from benchmarks.llm_swap import percentile
from tests.llm_fixtures import CORRUPT, MODEL_A, MODEL_B, NO_TEMPLATE, llm_models_dir  # noqa: F401
from workshop.exceptions import ServiceError
from workshop.llm_client import LLMClient

# Model ids --------------------------------------------------------------------------------------------


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    (root / "tiny").mkdir(parents=True)
    (root / "org" / "nested").mkdir(parents=True)
    return root


@pytest.mark.parametrize("model_id", ["HuggingFaceTB/SmolLM2-135M-Instruct", "org/name", "a/b", "Org_1/model.v2"])
def test_hub_ids_are_hub_sources(models_dir: Path, model_id: str) -> None:
    source = resolve_source(model_id, models_dir)
    assert (source.kind, source.path, source.location) == ("hub", None, model_id)


def test_a_hub_id_keeps_a_valid_revision(models_dir: Path) -> None:
    assert resolve_source("org/name", models_dir, "v1.0").revision == "v1.0"
    assert resolve_source("org/name", models_dir, "refs/pr/1").revision == "refs/pr/1"


def test_folders_under_the_models_dir_are_local_sources(models_dir: Path) -> None:
    tiny = resolve_source("tiny", models_dir)
    assert tiny.kind == "local" and tiny.path == (models_dir / "tiny").resolve() and tiny.location == str(tiny.path)
    # A folder shaped like a hub id loads from the folder: local wins, nothing is fetched.
    assert resolve_source("org/nested", models_dir).kind == "local"


@pytest.mark.parametrize("model_id", ["", "../x", "/etc/passwd", "http://x/y", "a" * 300, "x\x00y", "tiny/",
                                      "org/name/", "s3://bucket/key", "~/models"])
def test_everything_else_is_refused(models_dir: Path, model_id: str) -> None:
    with pytest.raises(InvalidModelIdError) as raised:
        resolve_source(model_id, models_dir)
    assert raised.value.status_code == 422 and raised.value.details[0]["field"] == "model_id"


# The generation gate ----------------------------------------------------------------------------------


def test_the_gate_admits_batch_plus_queue_then_refuses_at_once() -> None:
    depths: list[int] = []
    generator = Generator(max_batch_size=1, max_queue=2, retry_after_s=3, on_depth=depths.append)
    for _ in range(3):
        generator._admit()
    with pytest.raises(OverloadedError) as refused:
        generator._admit()
    assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "3"}
    assert "LLM_MAX_BATCH_SIZE=1" in str(refused.value) and "LLM_MAX_QUEUE=2" in str(refused.value)
    for _ in range(3):
        generator._release()
    assert generator.depth == 0 and depths == [1, 2, 3, 2, 1, 0]


def _sampling_processors(temperature: float, top_p: float = 1.0, **model_config: object) -> list[str]:
    """The warpers the service samples through, by name, for a model with this generation config."""
    from transformers import GenerationConfig

    from app.llm.generation import Params, _decoding

    class Model:  # what _decoding reads of a model
        device = "cpu"
        generation_config = GenerationConfig(**model_config)

    decoding = _decoding(Params(8, temperature, top_p, seed=1), Model())
    assert decoding["do_sample"] is False, "the draw is the sampler's, so generate itself decodes greedily"
    return [type(p).__name__ for p in decoding.get("logits_processor", [])]


def test_sampling_warps_as_do_sample_does_then_draws_with_the_requests_generator() -> None:
    assert _sampling_processors(0.0) == [], "temperature 0 is plain greedy decoding"
    assert _sampling_processors(0.8, 0.9) == [
        "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "_SeededSampler"]
    assert _sampling_processors(1.0) == ["TopKLogitsWarper", "_SeededSampler"], "1.0 and top_p 1 change nothing"
    assert _sampling_processors(0.7, top_k=0, min_p=0.05, typical_p=0.9) == [
        "TemperatureLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper", "_SeededSampler"]


def test_the_seeded_sampler_draws_the_same_token_for_the_same_seed_and_only_finite_ones() -> None:
    import torch

    from app.llm.generation import _SeededSampler

    scores = torch.tensor([[0.0, 1.0, float("-inf"), 2.0]])

    def draws(seed: int) -> list[int]:
        sampler = _SeededSampler(torch.Generator().manual_seed(seed))
        picked = []
        for _ in range(200):
            out = sampler(None, scores)
            assert torch.isfinite(out).sum() == 1
            picked.append(int(out.argmax()))
        return picked

    assert draws(3) == draws(3) != draws(4)
    assert 2 not in draws(3), "a token the warpers removed (-inf) is never drawn"
    counts = torch.bincount(torch.tensor(draws(3)), minlength=4).tolist()
    assert counts[3] > counts[1] > counts[0] > 0, counts  # softmax order: e^2 > e^1 > e^0


# Settings ---------------------------------------------------------------------------------------------


def test_settings_come_from_llm_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_DEFAULT_MODEL", "")
    monkeypatch.setenv("LLM_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("LLM_MODELS_DIR", "/srv/models")
    settings = Settings()
    assert (settings.default_model, settings.max_batch_size, settings.models_dir) == ("", 3, Path("/srv/models"))
    monkeypatch.delenv("LLM_MAX_BATCH_SIZE")
    monkeypatch.setenv("LLM_MAX_CONCURRENCY", "5")
    assert Settings().max_batch_size == 5, "the old name of the setting still works"


def test_settings_refuse_inconsistent_values() -> None:
    with pytest.raises(ValidationError, match="LLM_DEFAULT_MAX_NEW_TOKENS=100 is above LLM_MAX_NEW_TOKENS_CAP=50"):
        Settings(default_max_new_tokens=100, max_new_tokens_cap=50)
    with pytest.raises(ValidationError, match="LLM_LOG_JSON must be true"):
        Settings(environment="production")
    assert Settings(environment="production", log_json=True).environment == "production"


# The tiny model ---------------------------------------------------------------------------------------


def test_the_tiny_models_are_small_chat_models_and_differ_by_seed(llm_models_dir: Path) -> None:
    from safetensors import safe_open

    config = json.loads((llm_models_dir / MODEL_A / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tiny_model_name"] == MODEL_A
    with safe_open(llm_models_dir / MODEL_A / "model.safetensors", "pt") as a, \
            safe_open(llm_models_dir / MODEL_B / "model.safetensors", "pt") as b:
        parameters = sum(a.get_tensor(k).numel() for k in a.keys())  # noqa: SIM118 (safe_open has no __iter__)
        assert 800_000 < parameters < 1_500_000
        key = "model.layers.0.mlp.up_proj.weight"
        assert not a.get_tensor(key).equal(b.get_tensor(key))
    assert "im_start" in (llm_models_dir / MODEL_A / "chat_template.jinja").read_text()
    assert not (llm_models_dir / NO_TEMPLATE / "chat_template.jinja").exists()
    assert (llm_models_dir / CORRUPT / "model.safetensors").read_bytes().startswith(b"this is not")


def test_the_tiny_model_is_deterministic(tmp_path: Path, llm_models_dir: Path) -> None:
    from workshop.tiny_llm import build_tiny_chat_model

    build_tiny_chat_model(tmp_path / "again", seed=0, name=MODEL_A)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "again" / name).read_bytes() == (llm_models_dir / MODEL_A / name).read_bytes(), name


def test_break_model_refuses_an_unknown_kind(tmp_path: Path) -> None:
    from workshop.tiny_llm import break_model

    with pytest.raises(ValueError, match="no-chat-template, corrupt-weights"):
        break_model(tmp_path, "melted")  # type: ignore[arg-type]


# Client and benchmark helpers -------------------------------------------------------------------------


def test_wait_for_state_refuses_unknown_states() -> None:
    with pytest.raises(ValueError, match="unknown state"):
        LLMClient("http://127.0.0.1:9").wait_for_state("READY", timeout=0)


def test_wait_for_state_waits_through_a_gateway_that_reached_no_pod() -> None:
    """A 502 (the port-forward found no ready pod: it is restarting) is "not answering yet", as a refused
    connection is; any other refusal ends the wait."""
    answers = [httpx.Response(502, text="port-forward to Service llm in ns: No ready pod behind Service llm")] * 2
    answers.append(httpx.Response(200, json={"state": "RUNNING", "serving_model_id": "tiny"}))
    client = LLMClient("http://llm")
    client._http = httpx.Client(base_url="http://llm", transport=httpx.MockTransport(lambda _: answers.pop(0)))
    assert client.wait_for_state("RUNNING", timeout=10, interval=0.01)["serving_model_id"] == "tiny"
    client._http = httpx.Client(base_url="http://llm", transport=httpx.MockTransport(
        lambda _: httpx.Response(404, json={"error": "not_found", "message": "no such route", "details": []})))
    with pytest.raises(ServiceError) as refused:
        client.wait_for_state("RUNNING", timeout=10, interval=0.01)
    assert refused.value.status_code == 404


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (10.0, 19.0, 20.0)
    assert percentile([3.0], 95) == 3.0


def test_settings_refuse_a_body_limit_that_cannot_hold_the_input_limit() -> None:
    with pytest.raises(ValidationError, match="LLM_MAX_BODY_BYTES=10000 cannot hold LLM_MAX_INPUT_CHARS=8000"):
        Settings(max_body_bytes=10_000)


def test_the_tiny_model_command_line_builds_a_broken_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from workshop.__main__ import main

    assert main(["tiny-llm", str(tmp_path / "broken"), "--broken", "corrupt-weights", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "broken")
    assert (tmp_path / "broken" / "model.safetensors").read_bytes() == b"this is not a safetensors file"
    assert json.loads((tmp_path / "broken" / "config.json").read_text())["tiny_model_name"] == "broken-corrupt-weights"


def test_a_shape_override_builds_a_stand_in_of_another_size(tmp_path: Path) -> None:
    from workshop.tiny_llm import SMOLLM2_135M_SHAPE, build_tiny_chat_model

    build_tiny_chat_model(tmp_path / "m", shape={"num_hidden_layers": 1, "vocab_size": 4096})
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["vocab_size"]) == (1, 4096)
    # The stand-in of the default model has its published shape: 135M parameters.
    s = SMOLLM2_135M_SHAPE
    attention = s["hidden_size"] * s["head_dim"] * (2 * s["num_attention_heads"] + 2 * s["num_key_value_heads"])
    layer = attention + 3 * s["hidden_size"] * s["intermediate_size"] + 2 * s["hidden_size"]
    parameters = s["vocab_size"] * s["hidden_size"] + s["num_hidden_layers"] * layer + s["hidden_size"]
    assert 134e6 < parameters < 136e6
