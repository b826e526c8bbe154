# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""The LLM service over HTTP (TestClient), serving tiny models built offline through the real loader."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.llm_fixtures import (  # noqa: F401  (fixtures)
    CORRUPT,
    MODEL_A,
    MODEL_B,
    NO_TEMPLATE,
    eventually,
    llm_client,
    llm_models_dir,
    make_llm_client,
    user,
    wait_loaded,
)

CONTRACT_METRICS = {
    "llm_completions": "counter", "llm_prompt_tokens": "counter", "llm_completion_tokens": "counter",
    "llm_generation_seconds": "histogram", "llm_tokens_per_second": "histogram",
    "llm_time_to_first_token_seconds": "histogram", "llm_model_load_seconds": "histogram",
    "llm_model_info": "gauge", "llm_lifecycle_state": "gauge", "llm_model_swaps": "counter",
    "llm_queue_depth": "gauge", "http_requests": "counter", "http_request_duration_seconds": "histogram",
}


def samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(client: TestClient, name: str, **labels: str) -> float:
    return samples(client).get((name, tuple(sorted(labels.items()))), 0.0)


def gated(release: threading.Event) -> Callable:
    """The real loader, held back until ``release`` is set: a load that takes as long as a test wants."""
    from app.llm.loader import load_model

    def loader(source):
        assert release.wait(30), "the test never released the load"
        return load_model(source, offline=True)

    return loader


# Completions ------------------------------------------------------------------------------------


def test_completion_answers_with_the_assistant_message_model_and_token_counts(llm_client: TestClient) -> None:
    response = llm_client.post("/completion", json={"messages": user(), "max_new_tokens": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL_A and body["revision"] is None
    assert body["message"]["role"] == "assistant" and isinstance(body["message"]["content"], str)
    usage = body["usage"]
    assert usage["completion_tokens"] == 7 and body["finish_reason"] == "length"  # random weights never stop early
    assert usage["prompt_tokens"] > 5 and usage["total_tokens"] == usage["prompt_tokens"] + 7
    assert body["generation_seconds"] > 0 and 0 <= body["queued_seconds"] < body["generation_seconds"] + 5


def test_greedy_completions_are_deterministic_and_models_differ(make_llm_client) -> None:
    a, b = make_llm_client(), make_llm_client(default_model=MODEL_B)
    request = {"messages": user("Tell me about probes"), "max_new_tokens": 12}
    first, second = (a.post("/completion", json=request).json() for _ in range(2))
    assert first["message"] == second["message"]
    other = b.post("/completion", json=request).json()
    assert other["model"] == MODEL_B and other["message"] != first["message"]


def test_sampling_with_temperature_answers(llm_client: TestClient) -> None:
    body = llm_client.post("/completion", json={"messages": user(), "max_new_tokens": 5, "temperature": 0.9,
                                                "top_p": 0.9, "seed": 7}).json()
    # Whatever is drawn: sampling may pick the end-of-sequence token at any step, the fifth one included,
    # and that is a "stop"; fewer than five tokens can only be one.
    assert 1 <= body["usage"]["completion_tokens"] <= 5
    assert body["finish_reason"] in {"stop", "length"}
    if body["usage"]["completion_tokens"] < 5:
        assert body["finish_reason"] == "stop"
    assert body["seed"] == 7


SAMPLED = {"messages": user("Tell me a story"), "max_new_tokens": 16, "temperature": 1.0}


def test_a_seed_pins_a_sampled_completion(llm_client: TestClient) -> None:
    first, second = (llm_client.post("/completion", json={**SAMPLED, "seed": 1234}).json() for _ in range(2))
    assert first["message"] == second["message"] and first["usage"] == second["usage"]
    assert first["seed"] == 1234
    # A seed pins one request's draw, not the process: other seeds give other answers (fixed seeds, so
    # this holds every run; with a 1,024-token random model, five equal answers would be a broken seed).
    others = {llm_client.post("/completion", json={**SAMPLED, "seed": seed}).json()["message"]["content"]
              for seed in range(5)}
    assert len(others) > 1, others


def test_a_seed_pins_the_completion_while_other_requests_sample(make_llm_client) -> None:
    client = make_llm_client(max_batch_size=4)
    alone = client.post("/completion", json={**SAMPLED, "seed": 99}).json()["message"]
    # Two seeded requests at once, beside two unseeded ones that draw from generators of their own.
    bodies = [{**SAMPLED, "seed": 99}, {**SAMPLED, "seed": 99}, SAMPLED, {**SAMPLED, "max_new_tokens": 32}]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        answers = list(pool.map(lambda body: client.post("/completion", json=body).json(), bodies))
    assert metric(client, "llm_completions_total", outcome="success") == 5
    assert answers[0]["message"] == answers[1]["message"] == alone
    assert answers[2]["seed"] is None and answers[3]["seed"] is None


def test_without_a_seed_sampling_is_not_pinned(llm_client: TestClient) -> None:
    # Three unseeded draws of 16 tokens from a near-uniform 1,024-token model all alike: chance ~1e-48.
    answers = [llm_client.post("/completion", json=SAMPLED).json() for _ in range(3)]
    assert len({answer["message"]["content"] for answer in answers}) > 1
    assert all(answer["seed"] is None for answer in answers)


def test_a_seed_pins_the_streamed_completion_too(llm_client: TestClient) -> None:
    import json

    plain = llm_client.post("/completion", json={**SAMPLED, "seed": 5}).json()
    events = parse_sse(llm_client.post("/completion", json={**SAMPLED, "seed": 5, "stream": True}).text)
    done = json.loads(events[-1][1])
    assert done["message"] == plain["message"] and done["seed"] == 5


def test_greedy_decoding_ignores_the_seed(llm_client: TestClient) -> None:
    greedy = {"messages": user(), "max_new_tokens": 8}
    assert (llm_client.post("/completion", json={**greedy, "seed": 1}).json()["message"]
            == llm_client.post("/completion", json={**greedy, "seed": 2}).json()["message"])


def test_conversation_with_system_and_assistant_turns(llm_client: TestClient) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is latency?"}]
    response = llm_client.post("/completion", json={"messages": messages, "max_new_tokens": 3})
    assert response.status_code == 200 and response.json()["usage"]["prompt_tokens"] > 15


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "'system', 'user' or 'assistant'"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content", "at least 1 character"),
        ({"messages": [{"role": "user", "content": "  \n "}]}, "messages[0].content", "only whitespace"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "valid string"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "Field required"),
        ({"messages": [{"role": "user", "content": "hi", "name": "x"}]}, "messages[0].name", "Extra inputs"),
        ({"messages": "hello"}, "messages", "valid list"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({}, "messages", "Field required"),
        ({"messages": user(), "max_new_tokens": "5"}, "max_new_tokens", "valid integer"),
        ({"messages": user(), "seed": -1}, "seed", "greater than or equal to 0"),
        ({"messages": user(), "seed": 2**63}, "seed", "less than or equal to 9223372036854775807"),
        ({"messages": user(), "seed": "42"}, "seed", "valid integer"),
        ({"messages": user(), "seed": 4.5}, "seed", "valid integer"),
        ({"messages": user(), "max_new_tokens": 0}, "max_new_tokens", "greater than or equal to 1"),
        ({"messages": user(), "max_new_tokens": 33}, "max_new_tokens", "less than or equal to 32"),
        ({"messages": user(), "temperature": -1}, "temperature", "greater than or equal to 0"),
        ({"messages": user(), "temperature": 1e-300}, "temperature", "0 (greedy) or at least 0.01"),
        ({"messages": user(), "stream": "yes"}, "stream", "valid boolean"),
        ({"messages": user() * 5}, "messages", "at most 4 items"),
        ({"messages": user("x" * 201)}, "messages", "at most 200 are accepted (LLM_MAX_INPUT_CHARS)"),
    ],
)
def test_bad_requests_get_a_422_naming_the_field_and_reason(
    make_llm_client, body: dict, field: str, reason: str
) -> None:
    client = make_llm_client(max_new_tokens_cap=32, default_max_new_tokens=8, max_messages=4, max_input_chars=200)
    response = client.post("/completion", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "validation_error"
    assert any(d["field"] == field and reason in d["reason"] for d in error["details"]), error["details"]
    assert metric(client, "llm_completions_total", outcome="invalid") == 1


def test_prompt_longer_than_the_token_limit_gets_a_422(make_llm_client) -> None:
    client = make_llm_client(max_input_tokens=20)
    response = client.post("/completion", json={"messages": user("word " * 40), "max_new_tokens": 2})
    assert response.status_code == 422
    detail = response.json()["details"][0]
    assert detail["field"] == "messages" and "at most 20 fit (LLM_MAX_INPUT_TOKENS)" in detail["reason"]


def test_prompt_and_new_tokens_must_fit_the_model_context(make_llm_client) -> None:
    # The tiny model holds 512 positions; 2000 characters of this text are far more than 512 - 256 tokens.
    client = make_llm_client(max_input_chars=10_000, max_input_tokens=100_000)
    response = client.post("/completion", json={"messages": user("zebra quokka " * 160), "max_new_tokens": 256})
    assert response.status_code == 422
    assert "the model's context (512) - max_new_tokens" in response.json()["details"][0]["reason"]


def test_malformed_json_gets_a_422(llm_client: TestClient) -> None:
    response = llm_client.post("/completion", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "body"


# Not deployed, loading ------------------------------------------------------------------------------


def test_nothing_deployed_answers_503_with_the_state(make_llm_client) -> None:
    client = make_llm_client(default_model="")
    assert client.get("/health").status_code == 200
    for method, path, body in (("GET", "/ready", None), ("GET", "/model", None),
                               ("POST", "/completion", {"messages": user()})):
        response = client.request(method, path, json=body)
        assert response.status_code == 503, (path, response.text)
        error = response.json()
        assert error["error"] == "model_not_ready" and error["state"] == "NOT_DEPLOYED"
        assert "POST /model" in error["message"]
    status = client.get("/status").json()
    assert status["state"] == "NOT_DEPLOYED" and not status["ready"] and status["serving_model_id"] is None
    assert metric(client, "llm_completions_total", outcome="unavailable") == 1
    assert metric(client, "llm_lifecycle_state", state="NOT_DEPLOYED") == 1


def test_health_answers_at_once_while_the_default_model_loads(make_llm_client) -> None:
    release = threading.Event()
    client = make_llm_client(loader=gated(release), wait=False)
    try:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["state"] == "LOADING"
        completion = client.post("/completion", json={"messages": user()})
        assert completion.status_code == 503 and completion.json()["state"] == "LOADING"
        assert completion.headers["retry-after"] == "2"
        status = client.get("/status").json()
        assert status["state"] == "LOADING" and status["loading_model_id"] == MODEL_A
        assert status["serving_model_id"] is None
        assert metric(client, "llm_lifecycle_state", state="LOADING") == 1
    finally:
        release.set()
    assert wait_loaded(client.app)["state"] == "RUNNING"
    assert client.get("/ready").json() == {"status": "ready", "model_id": MODEL_A, "state": "RUNNING"}


# Status and model -------------------------------------------------------------------------------------


def test_status_and_model_describe_what_serves(llm_client: TestClient) -> None:
    status = llm_client.get("/status").json()
    assert status["state"] == "RUNNING" and status["ready"] and status["serving_model_id"] == MODEL_A
    assert status["loading_model_id"] is None and status["last_error"] is None
    assert status["entered_at"]["NOT_DEPLOYED"] <= status["entered_at"]["LOADING"] <= status["entered_at"]["RUNNING"]
    assert status["entered_at"]["FAILED"] is None and status["state_since"] == status["entered_at"]["RUNNING"]
    assert status["loads"] == {"success": 1, "failure": 0}
    model = llm_client.get("/model").json()
    assert model["model_id"] == MODEL_A and model["source"] == "local" and model["dtype"] == "float32"
    assert model["card"] is None, "a folder without a model_card.json has no card, and still loads"
    assert 800_000 < model["parameters"] < 1_500_000 and model["architecture"] == "LlamaForCausalLM"
    assert model["max_positions"] == 512 and model["load_seconds"] > 0


# Swaps -----------------------------------------------------------------------------------------------


def test_swap_answers_202_and_serves_the_new_model(llm_client: TestClient) -> None:
    response = llm_client.post("/model", json={"model_id": MODEL_B})
    assert response.status_code == 202
    assert response.json()["state"] == "LOADING" and response.json()["loading_model_id"] == MODEL_B
    status = wait_loaded(llm_client.app)
    assert status["state"] == "RUNNING" and status["serving_model_id"] == MODEL_B
    assert llm_client.post("/completion", json={"messages": user(), "max_new_tokens": 2}).json()["model"] == MODEL_B
    assert metric(llm_client, "llm_model_swaps_total", outcome="success") == 2
    info = {k: v for k, v in samples(llm_client).items() if k[0] == "llm_model_info"}
    assert info == {("llm_model_info", (("dtype", "float32"), ("model_id", MODEL_B), ("revision", ""),
                                        ("source", "local"))): 1.0}


def test_a_second_swap_while_loading_gets_409_and_the_old_model_keeps_serving(make_llm_client) -> None:
    release = threading.Event()
    client = make_llm_client(loader=gated(release), wait=False)
    release.set()
    wait_loaded(client.app)
    release.clear()
    assert client.post("/model", json={"model_id": MODEL_B}).status_code == 202
    try:
        conflict = client.post("/model", json={"model_id": MODEL_A})
        assert conflict.status_code == 409
        assert conflict.json()["error"] == "load_in_progress" and conflict.json()["state"] == "LOADING"
        assert f"'{MODEL_B}' is loading" in conflict.json()["message"]
        assert client.get("/ready").status_code == 200  # the old model serves during the load
        answer = client.post("/completion", json={"messages": user(), "max_new_tokens": 2}).json()
        assert answer["model"] == MODEL_A
        status = client.get("/status").json()
        assert (status["state"], status["serving_model_id"], status["loading_model_id"]) == ("LOADING", MODEL_A,
                                                                                             MODEL_B)
    finally:
        release.set()
    assert wait_loaded(client.app)["serving_model_id"] == MODEL_B


@pytest.mark.parametrize(
    ("broken", "message"),
    [(NO_TEMPLATE, "has no chat template"), (CORRUPT, f"cannot load '{CORRUPT}'")],
)
def test_a_failed_swap_ends_failed_and_the_old_model_keeps_serving(
    llm_client: TestClient, broken: str, message: str
) -> None:
    assert llm_client.post("/model", json={"model_id": broken}).status_code == 202
    status = wait_loaded(llm_client.app)
    assert status["state"] == "FAILED" and status["ready"] and status["serving_model_id"] == MODEL_A
    assert status["last_error"]["model_id"] == broken and message in status["last_error"]["message"]
    assert llm_client.get("/ready").status_code == 200
    assert llm_client.get("/model").json()["model_id"] == MODEL_A
    assert llm_client.post("/completion", json={"messages": user(), "max_new_tokens": 2}).json()["model"] == MODEL_A
    assert metric(llm_client, "llm_model_swaps_total", outcome="failure") == 1
    assert metric(llm_client, "llm_model_load_seconds_count", outcome="failure") == 1
    assert metric(llm_client, "llm_lifecycle_state", state="FAILED") == 1
    assert metric(llm_client, "llm_model_info", dtype="float32", model_id=MODEL_A, revision="", source="local") == 1


def test_a_first_load_that_fails_is_failed_and_not_ready(make_llm_client) -> None:
    client = make_llm_client(default_model=NO_TEMPLATE)
    status = client.get("/status").json()
    assert status["state"] == "FAILED" and not status["ready"]
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["state"] == "FAILED"
    assert "no chat template" in ready.json()["message"]


@pytest.mark.parametrize(
    ("model_id", "reason"),
    [
        ("../tiny-a", "'..'"),
        ("tiny-a/../../etc", "'..'"),
        ("..", "'..'"),
        ("/etc", "absolute paths outside the models directory"),
        ("/tmp", "absolute paths outside the models directory"),
        ("https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct", "URLs are not accepted"),
        ("file:///etc/passwd", "URLs are not accepted"),
        ("hf://org/name", "URLs are not accepted"),
        ("//evil.example/x", "URLs are not accepted"),
        ("C:\\models\\x", "URLs are not accepted"),
        ("org\\name", "backslashes"),
        ("./tiny-a", "'.' path parts"),
        ("a//b", "empty or '.'"),
        (" tiny-a", "spaces"),
        ("tiny a", "spaces"),
        ("no-such-folder", "no folder of that name"),
        ("org/name/extra", "no folder of that name"),
        ("-org/name", "no folder of that name"),
        ("org/na--me", "no folder of that name"),
    ],
)
def test_model_ids_that_are_not_a_folder_or_hub_id_get_a_422(
    llm_client: TestClient, model_id: str, reason: str
) -> None:
    response = llm_client.post("/model", json={"model_id": model_id})
    assert response.status_code == 422, response.text
    detail = response.json()["details"][0]
    assert detail["field"] == "model_id" and reason in detail["reason"], detail
    assert llm_client.get("/status").json()["state"] == "RUNNING"  # nothing was attempted


def test_a_symlink_out_of_the_models_dir_is_refused(make_llm_client, llm_models_dir: Path, tmp_path: Path) -> None:
    link = llm_models_dir / f"escape-{tmp_path.name}"
    link.symlink_to(tmp_path, target_is_directory=True)
    try:
        response = make_llm_client().post("/model", json={"model_id": link.name})
        assert response.status_code == 422 and "outside the models directory" in response.json()["message"]
    finally:
        link.unlink()


def test_an_absolute_path_inside_the_models_dir_is_accepted(llm_client: TestClient, llm_models_dir: Path) -> None:
    path = str((llm_models_dir / MODEL_B).resolve())
    assert llm_client.post("/model", json={"model_id": path}).status_code == 202
    assert wait_loaded(llm_client.app)["serving_model_id"] == path


def test_a_revision_is_for_hub_models_only(llm_client: TestClient) -> None:
    response = llm_client.post("/model", json={"model_id": MODEL_B, "revision": "main"})
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "revision"
    bad = llm_client.post("/model", json={"model_id": "org/name", "revision": "../../x"})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "revision"


# The hub, offline -------------------------------------------------------------------------------------

DEFAULT_HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _not_cached(model_id: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        pytest.skip(f"{model_id} is in this machine's hub cache, so loading it offline would succeed; "
                    "run with HF_HUB_CACHE pointing to an empty folder")
    return model_id


class ClosingListener:
    """A port that reads each request line, records it and closes the connection: a hub that never answers.

    What was asked says what "fast" means without a clock: one reachability check, no retries.
    """

    def __init__(self) -> None:
        import socket

        self.requests: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return  # closed
            with connection, connection.makefile("rb") as reader:
                self.requests.append(reader.readline().decode("latin-1").strip())

    def asked_for(self, model_id: str) -> list[str]:
        """The requests that concern ``model_id`` (huggingface_hub also fetches a registry of its own)."""
        return [line for line in self.requests if model_id in line]

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def dead_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[ClosingListener]:
    from huggingface_hub import constants

    listener = ClosingListener()
    monkeypatch.setattr(constants, "ENDPOINT", listener.url)
    yield listener
    listener.close()


def test_an_unreachable_hub_fails_the_default_model_fast_with_what_to_do(
    make_llm_client, monkeypatch: pytest.MonkeyPatch, dead_hub: ClosingListener
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    client = make_llm_client(default_model=_not_cached(DEFAULT_HUB_MODEL), hub_offline=False)
    status = client.get("/status").json()
    assert status["state"] == "FAILED", status
    message = status["last_error"]["message"]
    assert "the model hub is unreachable" in message and "not in the local hub cache" in message
    assert "LLM_MODELS_DIR" in message and f"hf download {DEFAULT_HUB_MODEL}" in message
    # huggingface_hub alone retries an unreachable hub with backoff for ~45 s: one check, then the cache only.
    assert dead_hub.asked_for(DEFAULT_HUB_MODEL) == [f"HEAD /api/models/{DEFAULT_HUB_MODEL} HTTP/1.1"], (
        dead_hub.requests)


def test_offline_mode_fails_a_hub_id_fast_without_any_request(make_llm_client, dead_hub: ClosingListener) -> None:
    client = make_llm_client(default_model="")
    client.post("/model", json={"model_id": _not_cached("workshop-tests/no-such-model")})
    status = wait_loaded(client.app)
    assert status["state"] == "FAILED"
    assert "offline mode is on" in status["last_error"]["message"]
    assert dead_hub.asked_for("no-such-model") == [], "offline mode asked the hub for the model"


# Overload ---------------------------------------------------------------------------------------------


def test_beyond_the_queue_limit_requests_get_a_prompt_429(make_llm_client, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.llm import generation

    # Generations that run until the test lets them go: the two admitted requests are certainly still
    # running and waiting when the third arrives, however fast or slow this machine is.
    release, real_forward = threading.Event(), generation._forward

    def held_forward(*args, **kwargs):
        assert release.wait(60), "the test never released the generations"
        return real_forward(*args, **kwargs)

    client = make_llm_client(max_batch_size=1, max_queue=1)
    monkeypatch.setattr(generation, "_forward", held_forward)
    request = {"messages": user(), "max_new_tokens": 4}
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(client.post("/completion", json=request).status_code))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: metric(client, "llm_queue_depth") >= 2, "the two generations to run and wait together")
        assert metric(client, "llm_queue_depth") == 2, "the two generations never ran and waited together"
        refused = client.post("/completion", json={"messages": user(), "max_new_tokens": 1})
        assert results == [], "the refusal waited for a generation to end"
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "overloaded" and refused.headers["retry-after"] == "2"
    assert "LLM_MAX_QUEUE=1" in refused.json()["message"]
    assert results == [200, 200]
    assert metric(client, "llm_completions_total", outcome="overloaded") == 1
    assert metric(client, "llm_queue_depth") == 0


# Streaming --------------------------------------------------------------------------------------------


def parse_sse(text: str) -> list[tuple[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        event = next((line[6:].strip() for line in lines if line.startswith("event:")), "message")
        data = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
        events.append((event, data))
    return events


def test_streaming_sends_token_events_then_the_answer(llm_client: TestClient) -> None:
    import json

    request = {"messages": user("Stream please"), "max_new_tokens": 9, "temperature": 1.0}
    response = llm_client.post("/completion", json={**request, "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) <= {"token"} and len(kinds) >= 2, kinds
    done = json.loads(events[-1][1])
    assert done["model"] == MODEL_A and 1 <= done["usage"]["completion_tokens"] <= 9
    streamed = "".join(json.loads(data)["text"] for kind, data in events if kind == "token")
    assert streamed == done["message"]["content"]  # what was held back (an unfinished character) comes last
    assert metric(llm_client, "llm_time_to_first_token_seconds_count") == 1
    assert metric(llm_client, "llm_completions_total", outcome="success") == 1


def test_streaming_errors_before_the_stream_are_plain_json(make_llm_client) -> None:
    client = make_llm_client(default_model="")
    response = client.post("/completion", json={"messages": user(), "stream": True})
    assert response.status_code == 503 and response.json()["state"] == "NOT_DEPLOYED"


# Metrics ----------------------------------------------------------------------------------------------


def test_metrics_have_the_contract_names_types_and_labels(llm_client: TestClient) -> None:
    llm_client.post("/completion", json={"messages": user(), "max_new_tokens": 4})
    families = {f.name: f for f in text_string_to_metric_families(llm_client.get("/metrics").text)}
    for name, kind in CONTRACT_METRICS.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind, (name, families[name].type)
    outcomes = {s.labels["outcome"] for s in families["llm_completions"].samples if s.name.endswith("_total")}
    assert outcomes == {"success", "invalid", "unavailable", "overloaded", "error", "cancelled"}
    states = {s.labels["state"]: s.value for s in families["llm_lifecycle_state"].samples}
    assert states == {"NOT_DEPLOYED": 0, "LOADING": 0, "RUNNING": 1, "FAILED": 0}
    assert metric(llm_client, "llm_completion_tokens_total") == 4
    assert metric(llm_client, "llm_prompt_tokens_total") > 0
    assert metric(llm_client, "llm_generation_seconds_count") == 1
    assert metric(llm_client, "llm_tokens_per_second_count") == 1
    assert metric(llm_client, "llm_model_load_seconds_count", outcome="success") == 1
    handlers = {s.labels.get("handler") for s in families["http_requests"].samples}
    assert "/completion" in handlers


def test_two_apps_in_one_process_have_their_own_metrics(make_llm_client) -> None:
    a, b = make_llm_client(), make_llm_client()
    a.post("/completion", json={"messages": user(), "max_new_tokens": 2})
    assert metric(a, "llm_completions_total", outcome="success") == 1
    assert metric(b, "llm_completions_total", outcome="success") == 0


def test_the_openapi_document_shows_the_limits(make_llm_client) -> None:
    schema = make_llm_client(default_model="", max_new_tokens_cap=100, max_messages=7).get("/openapi.json").json()
    request = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    assert request["max_new_tokens"]["maximum"] == 100 and request["messages"]["maxItems"] == 7


def test_the_service_module_starts_with_uvicorn_settings_from_the_environment(monkeypatch) -> None:
    """``uvicorn app.llm.api:app`` builds its app from LLM_* variables."""
    import importlib

    monkeypatch.setenv("LLM_DEFAULT_MODEL", "")
    monkeypatch.setenv("LLM_MAX_NEW_TOKENS_CAP", "77")
    import app.llm.api as api

    module = importlib.reload(api)
    assert module.app.state.settings.max_new_tokens_cap == 77
    with TestClient(module.app) as client:
        assert client.get("/status").json()["state"] == "NOT_DEPLOYED"


def test_unknown_paths_and_methods_use_the_error_shape(llm_client: TestClient) -> None:
    assert llm_client.get("/nope").json()["error"] == "not_found"
    assert llm_client.get("/completion").json()["error"] == "method_not_allowed"
    assert isinstance(httpx.codes(llm_client.delete("/model").status_code), httpx.codes)


def test_bodies_too_large_or_not_json_are_refused_before_parsing(make_llm_client) -> None:
    client = make_llm_client(max_body_bytes=60_000, max_input_chars=8000)
    big = client.post("/completion", content=b'{"messages": "' + b"x" * 70_000 + b'"}',
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and "LLM_MAX_BODY_BYTES" in big.json()["message"]
    form = client.post("/completion", content=b"messages=hi", headers={"content-type": "text/plain"})
    assert form.status_code == 415 and form.json()["error"] == "unsupported_media_type"
    assert metric(client, "llm_completions_total", outcome="invalid") == 2


def test_a_replaced_model_is_freed_once_its_requests_end(llm_client: TestClient) -> None:
    """Freed by reference counting alone, at once: no collection needed, no copy kept by the lifecycle,
    the metrics or the generation pool."""
    import weakref

    llm_client.post("/completion", json={"messages": user(), "max_new_tokens": 2})
    old = weakref.ref(llm_client.app.state.serving.manager.lifecycle.serving.model)
    llm_client.post("/model", json={"model_id": MODEL_B})
    assert wait_loaded(llm_client.app)["serving_model_id"] == MODEL_B
    assert old() is None, "the replaced model is still referenced: its memory would never come back"


def test_a_chat_template_that_cannot_render_fails_the_swap(llm_client: TestClient, llm_models_dir: Path) -> None:
    import shutil

    folder = llm_models_dir / "template-raises"
    if not folder.exists():
        shutil.copytree(llm_models_dir / MODEL_A, folder)
        (folder / "chat_template.jinja").write_text("{{ raise_exception('a system message is required') }}")
    llm_client.post("/model", json={"model_id": folder.name})
    status = wait_loaded(llm_client.app)
    assert status["state"] == "FAILED" and status["serving_model_id"] == MODEL_A
    message = status["last_error"]["message"]
    assert "chat template cannot render a one-message conversation" in message
    assert "a system message is required" in message


def test_the_load_includes_a_warm_up_generation(llm_client: TestClient) -> None:
    model = llm_client.get("/model").json()
    assert 0 < model["warmup_seconds"] <= model["load_seconds"]


def test_a_model_folder_cannot_run_its_own_code(llm_client: TestClient, llm_models_dir: Path, tmp_path: Path) -> None:
    """A folder whose config points at its own Python (``auto_map``) never gets that code run."""
    import json
    import shutil

    marker = tmp_path / "code-ran"
    folder = llm_models_dir / f"remote-code-{tmp_path.name}"
    shutil.copytree(llm_models_dir / MODEL_A, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (folder / "evil.py").write_text(code + "from transformers import LlamaConfig as EvilConfig, "
                                    "LlamaForCausalLM as EvilModel\n")
    try:
        llm_client.post("/model", json={"model_id": folder.name})
        status = wait_loaded(llm_client.app)
        assert not marker.exists(), "the model folder's own Python ran"
        # transformers ignores auto_map without trust_remote_code: the built-in Llama class serves it.
        assert status["state"] == "RUNNING", status
        assert llm_client.get("/model").json()["architecture"] == "LlamaForCausalLM"
    finally:
        shutil.rmtree(folder)
