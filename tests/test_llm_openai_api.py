# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""The OpenAI-compatible routes, through the official ``openai`` client as its users call it.

Most tests bind the client to the app's TestClient (an ``httpx.Client``); the ones about clients
that go away run the app in a real uvicorn, since only a real socket can hang up mid-generation.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.llm_fixtures import (  # noqa: F401  (fixtures)
    MODEL_A,
    MODEL_B,
    eventually,
    llm_client,
    llm_models_dir,
    make_llm_client,
    served_in_a_thread,
    served_metrics,
    user,
    wait_loaded,
)

openai = pytest.importorskip("openai", reason="the openai client is missing; install the dev extra: pip install -e "
                             "'.[dev]'")

STORY = user("Tell me about probes")


def metric(client: TestClient, name: str, **labels: str) -> float:
    wanted = tuple(sorted(labels.items()))
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and tuple(sorted(sample.labels.items())) == wanted:
                return sample.value
    return 0.0


def outcomes(client: TestClient) -> dict[str, float]:
    return {outcome: metric(client, "llm_completions_total", outcome=outcome)
            for outcome in ("success", "invalid", "unavailable", "overloaded", "error", "cancelled")}


def openai_client(client: TestClient, **options) -> openai.OpenAI:
    """The official client, as a user points it at the service, sending through the app's TestClient."""
    return openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="unused", max_retries=0, http_client=client,
                         **options)


@pytest.fixture
def oa(llm_client: TestClient) -> openai.OpenAI:
    return openai_client(llm_client)


def chat(oa: openai.OpenAI, **request):
    return oa.chat.completions.create(**{"model": MODEL_A, "messages": STORY, **request})


def streamed(oa: openai.OpenAI, **request) -> list:
    return list(chat(oa, stream=True, **request))


def joined(chunks: list) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


# Answers -----------------------------------------------------------------------------------------


def test_a_plain_answer_has_openai_shape_and_the_native_apis_text_and_usage(llm_client: TestClient, oa) -> None:
    answer = chat(oa, max_tokens=9, temperature=0)
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", answer.id) and answer.object == "chat.completion"
    assert answer.model == MODEL_A and abs(answer.created - time.time()) < 60
    (choice,) = answer.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.finish_reason == "length"
    native = llm_client.post("/completion", json={"messages": STORY, "max_new_tokens": 9}).json()
    assert choice.message.content == native["message"]["content"]
    assert answer.usage.model_dump(exclude_none=True) == native["usage"]
    assert answer.usage.completion_tokens == 9
    assert outcomes(llm_client)["success"] == 2


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "seed": 11}],
                         ids=["greedy", "seeded"])
def test_streamed_chunks_join_to_the_plain_answer(llm_client: TestClient, oa, sampling: dict) -> None:
    plain = chat(oa, max_tokens=16, **sampling)
    chunks = streamed(oa, max_tokens=16, stream_options={"include_usage": True}, **sampling)
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {chunk.model for chunk in chunks} == {MODEL_A}
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant" and not first.choices[0].delta.content
    assert all(c.choices[0].finish_reason is None and c.choices[0].delta.role is None for c in middle)
    assert middle and all(c.choices[0].delta.content for c in middle)
    assert finish.choices[0].finish_reason == plain.choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert usage.choices == [] and usage.usage == plain.usage
    assert joined(chunks) == plain.choices[0].message.content
    assert metric(llm_client, "llm_time_to_first_token_seconds_count") == 1
    assert outcomes(llm_client)["success"] == 2


def test_the_stream_is_server_sent_events_ending_with_done(llm_client: TestClient) -> None:
    body = {"model": MODEL_A, "messages": STORY, "max_tokens": 3, "stream": True}
    response = llm_client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.splitlines() if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in events), events
    assert events[-1] == "data: [DONE]" and '"usage"' not in response.text  # no usage unless asked


def test_a_seed_pins_sampling_and_the_default_temperature_samples(oa) -> None:
    first, second = (chat(oa, max_tokens=16, temperature=1.0, seed=1234) for _ in range(2))
    assert first.choices[0].message.content == second.choices[0].message.content
    others = {chat(oa, max_tokens=16, temperature=1.0, seed=seed).choices[0].message.content for seed in range(4)}
    assert len(others) > 1, others
    # No temperature: OpenAI's default of 1 samples (greedy would give three equal answers).
    unseeded = {chat(oa, max_tokens=16).choices[0].message.content for _ in range(3)}
    assert len(unseeded) > 1, unseeded


def test_max_tokens_and_max_completion_tokens_end_with_length(oa) -> None:
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3}, {"max_tokens": 3, "max_completion_tokens": 3}):
        answer = chat(oa, temperature=0, **limit)
        assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 3, limit


def test_a_conversation_with_system_and_assistant_turns(oa) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is latency?"}]
    short = chat(oa, messages=messages[-1:], max_tokens=2, temperature=0)
    answer = chat(oa, messages=messages, max_tokens=2, temperature=0)
    assert answer.usage.prompt_tokens > short.usage.prompt_tokens + 10


def test_fields_clients_send_that_cannot_change_the_answer_are_accepted(oa) -> None:
    plain = chat(oa, max_tokens=6, temperature=0)
    extras = chat(oa, max_tokens=6, temperature=0, n=1, user="u-1", safety_identifier="s-1", metadata={"k": "v"},
                  store=False, frequency_penalty=0, presence_penalty=0.0, logprobs=False, stream=False, stop=None)
    assert extras.choices[0].message.content == plain.choices[0].message.content


# Stop sequences ------------------------------------------------------------------------------------

SAMPLED = {"temperature": 1.0, "seed": 3, "max_tokens": 40}


def unconstrained_and_stop(oa) -> tuple[str, str]:
    """A seeded answer without stop strings, and a stop string from its middle: a word and the character after
    it, so two tokens at least (a byte-level token never holds letters and what follows them): the first
    ends with what could begin the stop string, and a stream must hold it back."""
    text = chat(oa, **SAMPLED).choices[0].message.content
    words = [m for m in re.finditer(r"[A-Za-z]{4,}", text) if m.start() >= 8 and m.end() < len(text)]
    assert words, f"no word to stop at in {text!r}"
    return text, text[words[0].start():words[0].end() + 1]


def tokens_until(oa, text_contains: str) -> int:
    """The fewest tokens after which the seeded answer contains the string (the answer is prefix-stable)."""
    low, high = 1, SAMPLED["max_tokens"]
    while low < high:
        middle = (low + high) // 2
        if text_contains in chat(oa, **{**SAMPLED, "max_tokens": middle}).choices[0].message.content:
            high = middle
        else:
            low = middle + 1
    return low


def test_a_stop_string_ends_the_answer_before_it_at_the_token_that_completes_it(llm_client, oa) -> None:
    text, stop = unconstrained_and_stop(oa)
    stopped = chat(oa, **SAMPLED, stop=["never-said-0", stop])
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    # Generation itself ended there (not only the text): exactly the tokens that first complete the stop string.
    assert stopped.usage.completion_tokens == tokens_until(oa, stop) < SAMPLED["max_tokens"]
    assert chat(oa, **SAMPLED, stop=stop).choices[0].message.content == text[: text.index(stop)]  # a string too
    native = llm_client.post("/completion", json={"messages": STORY, "max_new_tokens": 40, "temperature": 1.0,
                                                  "seed": 3, "stop": [stop]}).json()
    assert native["message"]["content"] == text[: text.index(stop)] and native["finish_reason"] == "stop"
    assert native["usage"] == stopped.usage.model_dump(exclude_none=True)


def test_a_stream_never_sends_what_turns_out_to_be_a_stop_string(oa) -> None:
    text, stop = unconstrained_and_stop(oa)
    chunks = streamed(oa, **SAMPLED, stop=[stop])
    assert joined(chunks) == text[: text.index(stop)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    # A stop string the answer never completes: what was held back as its possible start is sent at the end.
    never = stop + "#never"
    chunks = streamed(oa, **SAMPLED, stop=[never])
    assert joined(chunks) == text and chunks[-1].choices[0].finish_reason == "length"


def test_a_stop_string_across_the_prompts_end_does_not_stop_the_answer(oa) -> None:
    # The chat template ends its prompt with "assistant\n": "\n" + the answer's start is in prompt + answer,
    # not in the answer (transformers' StopStringCriteria, which matches the whole sequence, stops there).
    text = chat(oa, **SAMPLED).choices[0].message.content
    across = "\n" + text[:3]
    assert across not in text
    answer = chat(oa, **SAMPLED, stop=[across])
    assert answer.choices[0].message.content == text and answer.choices[0].finish_reason == "length"


def test_stop_helpers_hold_back_what_could_begin_a_stop_string() -> None:
    from app.llm.generation import _sendable, stop_at

    assert stop_at("a STOP b END", ("END", "STOP")) == 2 and stop_at("abc", ("x",)) is None
    assert stop_at("abc", ()) is None
    assert _sendable("hello wor", ("world",)) == "hello "
    assert _sendable("hello w", ("world", "wide")) == "hello "
    assert _sendable("hello world!", ("world",)) == "hello "
    assert _sendable("hello x", ("world",)) == "hello x"
    assert _sendable("hello", ()) == "hello" and _sendable("ab", ("b",)) == "a"


# Models ------------------------------------------------------------------------------------------


def test_models_lists_the_model_serving_and_follows_a_swap(llm_client: TestClient, oa) -> None:
    (card,) = oa.models.list().data
    loaded_at = llm_client.get("/model").json()["loaded_at"]
    from datetime import datetime

    assert card.id == MODEL_A and card.object == "model" and card.owned_by == "local"
    assert card.created == int(datetime.fromisoformat(loaded_at).timestamp())
    assert oa.models.retrieve(MODEL_A).id == MODEL_A
    with pytest.raises(openai.NotFoundError) as missing:
        oa.models.retrieve(MODEL_B)
    assert missing.value.code == "model_not_found"

    assert llm_client.post("/model", json={"model_id": MODEL_B}).status_code == 202
    assert wait_loaded(llm_client.app)["serving_model_id"] == MODEL_B
    assert [m.id for m in oa.models.list().data] == [MODEL_B]
    assert chat(oa, model=MODEL_B, max_tokens=2).model == MODEL_B
    with pytest.raises(openai.NotFoundError):
        chat(oa, model=MODEL_A, max_tokens=2)


# Errors ------------------------------------------------------------------------------------------

BAD_REQUESTS = [
    ({"temperature": 2.5}, "temperature", "less_than_equal"),
    ({"temperature": 0.001}, "temperature", "temperature_too_small"),
    ({"top_p": 0}, "top_p", "greater_than"),
    ({"max_tokens": 33}, "max_tokens", "less_than_equal"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "greater_than_equal"),
    ({"max_tokens": 4, "max_completion_tokens": 5}, "max_tokens", "conflicting_value"),
    ({"messages": []}, "messages", "too_short"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "literal_error"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages[0].content", "blank_content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "messages[0].content",
     "string_type"),
    ({"messages": user("x" * 201)}, "messages", "too_long"),
    ({"n": 2}, "n", "unsupported_value"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "too_long"),
    ({"stop": [""]}, "stop[0]", "string_too_short"),
    ({"seed": -1}, "seed", "greater_than_equal"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"logprobs": True}, "logprobs", "unsupported_value"),
    ({"presence_penalty": 0.5}, "presence_penalty", "unsupported_value"),
    ({"extra_body": {"tools": [{"type": "function", "function": {"name": "f"}}]}}, "tools", "unknown_parameter"),
    ({"extra_body": {"response_format": {"type": "json_object"}}}, "response_format", "unknown_parameter"),
]


def test_bad_input_raises_bad_request_naming_the_param(make_llm_client) -> None:
    client = make_llm_client(max_new_tokens_cap=32, default_max_new_tokens=8, max_messages=4, max_input_chars=200)
    oa = openai_client(client)
    for request, param, code in BAD_REQUESTS:
        with pytest.raises(openai.BadRequestError) as refused:
            chat(oa, **request)
        error = refused.value
        assert (error.status_code, error.param, error.code, error.type) == (400, param, code,
                                                                            "invalid_request_error"), request
        assert param in error.message, error.message
    tools = next(request for request, param, _ in BAD_REQUESTS if param == "tools")
    with pytest.raises(openai.BadRequestError, match="tools: unrecognized request argument"):
        chat(oa, **tools)
    assert outcomes(client)["invalid"] == len(BAD_REQUESTS) + 1 and outcomes(client)["success"] == 0


def test_a_missing_model_or_malformed_json_is_a_400(llm_client: TestClient) -> None:
    missing = llm_client.post("/v1/chat/completions", json={"messages": STORY})
    assert missing.status_code == 400 and missing.json()["error"] == {
        "message": "invalid request: model: Field required", "type": "invalid_request_error", "param": "model",
        "code": "missing_required_parameter"}
    malformed = llm_client.post("/v1/chat/completions", content=b"{not json",
                                headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["param"] is None
    assert malformed.json()["error"]["code"] == "json_invalid"
    assert outcomes(llm_client)["invalid"] == 2


def test_another_model_id_is_not_found_and_counted_invalid(llm_client: TestClient, oa) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        chat(oa, model="gpt-4o", max_tokens=2)
    error = missing.value
    assert (error.status_code, error.code, error.param, error.type) == (404, "model_not_found", "model",
                                                                        "invalid_request_error")
    assert "'gpt-4o'" in error.message and repr(MODEL_A) in error.message
    assert outcomes(llm_client)["invalid"] == 1 and outcomes(llm_client)["success"] == 0


def test_a_prompt_longer_than_the_token_limit_is_context_length_exceeded(make_llm_client) -> None:
    client = make_llm_client(max_input_tokens=20)
    with pytest.raises(openai.BadRequestError) as refused:
        chat(openai_client(client), messages=user("word " * 40), max_tokens=2)
    assert (refused.value.param, refused.value.code) == ("messages", "context_length_exceeded")
    assert "at most 20 fit (LLM_MAX_INPUT_TOKENS)" in refused.value.message
    assert outcomes(client)["invalid"] == 1


def test_bodies_too_large_or_not_json_are_refused_in_openai_shape(make_llm_client) -> None:
    client = make_llm_client(max_body_bytes=60_000, max_input_chars=8000)
    with pytest.raises(openai.APIStatusError) as too_large:
        chat(openai_client(client), messages=user("x" * 70_000))
    assert too_large.value.status_code == 413 and too_large.value.code == "payload_too_large"
    assert too_large.value.type == "invalid_request_error" and "LLM_MAX_BODY_BYTES" in too_large.value.message
    form = client.post("/v1/chat/completions", content=b"model=tiny-a", headers={"content-type": "text/plain"})
    assert form.status_code == 415
    assert form.json()["error"]["code"] == "unsupported_media_type" and set(form.json()["error"]) == {
        "message", "type", "param", "code"}
    assert outcomes(client)["invalid"] == 2
    # The service's own routes keep their shape.
    native = client.post("/completion", content=b"messages=hi", headers={"content-type": "text/plain"})
    assert native.status_code == 415 and native.json()["error"] == "unsupported_media_type"


def test_unknown_paths_and_methods_under_v1_have_openai_shape(llm_client: TestClient) -> None:
    missing = llm_client.get("/v1/embeddings")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = llm_client.get("/v1/chat/completions")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.headers["allow"] == "POST"
    assert llm_client.get("/nope").json()["error"] == "not_found"  # outside /v1: the service's own shape


def test_nothing_serving_is_a_503_and_an_empty_model_list(make_llm_client) -> None:
    client = make_llm_client(default_model="")
    oa = openai_client(client)
    with pytest.raises(openai.InternalServerError) as unavailable:
        chat(oa, max_tokens=2)
    error = unavailable.value
    assert (error.status_code, error.code, error.type) == (503, "model_not_ready", "server_error")
    assert "NOT_DEPLOYED" in error.message and "retry-after" not in error.response.headers
    with pytest.raises(openai.InternalServerError):
        streamed(oa, max_tokens=2)
    assert oa.models.list().data == []
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve(MODEL_A)
    assert outcomes(client)["unavailable"] == 2


def test_while_the_first_model_loads_a_503_says_when_to_retry(make_llm_client) -> None:
    from app.llm.loader import load_model

    release = threading.Event()

    def gated(source):
        assert release.wait(30), "the test never released the load"
        return load_model(source, offline=True)

    client = make_llm_client(loader=gated, wait=False)
    try:
        with pytest.raises(openai.APIStatusError) as loading:
            chat(openai_client(client), max_tokens=2)
    finally:
        release.set()
    assert loading.value.status_code == 503 and loading.value.response.headers["retry-after"] == "2"
    assert "LOADING" in loading.value.message
    wait_loaded(client.app)
    assert chat(openai_client(client), max_tokens=2).model == MODEL_A


@pytest.fixture
def held_generations(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Generations that wait until the test sets the event (then run as usual)."""
    from app.llm import generation

    release, real_forward = threading.Event(), generation._forward

    def held_forward(*args, **kwargs):
        assert release.wait(60), "the test never released the generations"
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(generation, "_forward", held_forward)
    yield release
    release.set()


def test_beyond_the_queue_limit_the_client_gets_a_rate_limit_error(make_llm_client, held_generations) -> None:
    client = make_llm_client(max_batch_size=1, max_queue=1)
    oa = openai_client(client)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(chat(oa, max_tokens=2).choices[0].finish_reason))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: metric(client, "llm_queue_depth") >= 2, "the two generations to run and wait together")
        assert metric(client, "llm_queue_depth") == 2, "the two generations never ran and waited together"
        with pytest.raises(openai.RateLimitError) as refused:
            chat(oa, max_tokens=1)
        with pytest.raises(openai.RateLimitError):
            streamed(oa, max_tokens=1)
        assert results == [], "the refusals waited for a generation to end"
    finally:
        held_generations.set()
        for thread in threads:
            thread.join()
    error = refused.value
    assert (error.status_code, error.code, error.type) == (429, "rate_limit_exceeded", "requests")
    assert error.response.headers["retry-after"] == "2" and "LLM_MAX_QUEUE=1" in error.message
    assert len(results) == 2
    assert outcomes(client)["overloaded"] == 2 and outcomes(client)["success"] == 2


def test_a_failing_generation_is_a_server_error_plain_and_streamed(llm_client: TestClient, oa,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from app.llm import generation

    def failing(*args, **kwargs):
        raise RuntimeError("the forward pass broke")

    monkeypatch.setattr(generation, "_forward", failing)
    with pytest.raises(openai.InternalServerError) as failed:
        chat(oa, max_tokens=2)
    assert (failed.value.status_code, failed.value.code) == (500, "generation_error")
    with pytest.raises(openai.APIError, match="failed to generate"):
        streamed(oa, max_tokens=2)
    assert outcomes(llm_client)["error"] == 2


# Clients that go away (a real server) ------------------------------------------------------------------

LONG, TOKEN_S = 480, 0.01  # 480 tokens of at least 10 ms: seconds of work, whatever the machine


@pytest.fixture
def live_server(llm_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app in a real uvicorn on 127.0.0.1 (only a real socket can hang up mid-generation), each of whose
    tokens takes at least TOKEN_S: a client that leaves after a fraction of a second always leaves mid-answer."""
    from app.llm import generation
    from app.llm.api import create_app
    from app.llm.config import Settings

    checked = generation._Cancelled.__call__

    def slow(self, input_ids, scores, **kwargs):  # the cancel check runs once a token
        time.sleep(TOKEN_S)
        return checked(self, input_ids, scores, **kwargs)

    monkeypatch.setattr(generation._Cancelled, "__call__", slow)
    app = create_app(Settings(models_dir=llm_models_dir, default_model=MODEL_A, hub_offline=True,
                              max_new_tokens_cap=LONG))
    with served_in_a_thread(app) as url:
        yield url


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
def test_a_client_that_goes_away_stops_its_generation(live_server: str, stream: bool) -> None:
    cancelled, success = "llm_completions_total{outcome='cancelled'}", "llm_completions_total{outcome='success'}"
    request = {"model": MODEL_A, "messages": user("hi"), "max_tokens": LONG, "temperature": 0}
    if stream:
        client = openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused", max_retries=0, timeout=60)
        with client.chat.completions.create(**request, stream=True) as chunks:
            assert any(chunk.choices[0].delta.content for chunk in chunks), "no content was streamed"
            # leaving the block closes the connection mid-stream
    else:
        client = openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused", max_retries=0, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):  # the client gives up and hangs up
            client.chat.completions.create(**request)
    eventually(lambda: served_metrics(live_server)[cancelled] == 1, "the generation to be cancelled", timeout=30)
    after = served_metrics(live_server)
    generated = after["llm_completion_tokens_total{}"]
    assert 0 < generated < LONG / 2, f"{generated} tokens generated for a client that had left"
    assert after["llm_queue_depth{}"] == 0 and after[success] == 0
