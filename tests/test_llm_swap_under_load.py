# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""The service as a real uvicorn process: swaps under load, and clients that go away.

Swap under load: zero failed completions, each answer names its model.

While client threads send completions without pause, the model is swapped twice: tiny-a -> tiny-b
(succeeds), then -> a model without a chat template (fails on purpose). Greedy decoding is
deterministic, so each model gives one answer to the fixed prompt: a response that names a model
must carry that model's answer, which proves the name is the model that produced it.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.llm_fixtures import MODEL_A, MODEL_B, NO_TEMPLATE, forbid_network_env, llm_models_dir  # noqa: F401
from workshop.llm_client import LLMClient
from workshop.process import ManagedProcess, free_port
from workshop.waiting import wait_for

PROMPT = [{"role": "user", "content": "Describe a rolling update in one sentence."}]


@pytest.fixture(scope="module")
def llm_service(llm_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One service for the module: the swap test first (it counts from a fresh start), then the others."""
    port = free_port()
    env = {**forbid_network_env(), "LLM_MODELS_DIR": str(llm_models_dir), "LLM_DEFAULT_MODEL": MODEL_A,
           "LLM_MAX_BATCH_SIZE": "2", "LLM_MAX_QUEUE": "16", "LLM_TORCH_THREADS": "1",
           "LLM_MAX_NEW_TOKENS_CAP": "480"}
    argv = [sys.executable, "-m", "app.llm", "--host", "127.0.0.1", "--port", str(port)]
    process = ManagedProcess("llm-service", argv, env=env, cwd=Path(__file__).resolve().parent.parent,
                             log_path=tmp_path_factory.mktemp("llm-service") / "llm.log")
    with process:
        process.wait_for_http(f"http://127.0.0.1:{port}/ready", timeout=90)
        yield LLMClient(f"http://127.0.0.1:{port}", timeout=60), process


@pytest.mark.slow
def test_two_swaps_under_load_fail_no_completion(llm_service) -> None:
    client, process = llm_service
    results: list[tuple[str, str] | Exception] = []
    stop = threading.Event()

    def send_continuously(stream: bool) -> None:
        while not stop.is_set():
            try:
                if stream:
                    events = list(client.stream(PROMPT, max_new_tokens=12))
                    answer = events[-1]
                    assert answer["event"] == "done", events
                else:
                    answer = client.complete(PROMPT, max_new_tokens=12)
                results.append((answer["model"], answer["message"]["content"]))
            except Exception as error:  # every failure is collected and reported, none is allowed
                results.append(error)

    # A long generation started on tiny-a must finish on tiny-a, even though tiny-b serves by then.
    long_answer: dict = {}
    long_request = threading.Thread(
        target=lambda: long_answer.update(client.complete(PROMPT, max_new_tokens=200)), name="long")

    senders = [threading.Thread(target=send_continuously, args=(stream,)) for stream in (False, True)]
    for sender in senders:
        sender.start()
    try:
        _wait_for(lambda: sum(1 for r in results if isinstance(r, tuple)) >= 4, "four completions on tiny-a")
        long_request.start()
        # Two senders keep at most two requests in flight: a third means the long one holds tiny-a.
        _wait_for(lambda: client.metrics().get("llm_queue_depth", 0) >= 3, "the long generation to start")

        first = client.swap(MODEL_B)
        assert first["state"] == "LOADING" and first["serving_model_id"] == MODEL_A
        swapped = client.wait_for_state(("RUNNING", "FAILED"), timeout=60)
        assert swapped["state"] == "RUNNING" and swapped["serving_model_id"] == MODEL_B, swapped
        seen_b = len(results)
        _wait_for(lambda: sum(1 for r in results[seen_b:] if isinstance(r, tuple) and r[0] == MODEL_B) >= 4,
                  "four completions on tiny-b")

        client.swap(NO_TEMPLATE)
        failed = client.wait_for_state(("RUNNING", "FAILED"), timeout=60)
        seen_failed = len(results)
        _wait_for(lambda: len(results) >= seen_failed + 4, "four completions after the failed swap")
    finally:
        stop.set()
        for sender in senders:
            sender.join(60)
        long_request.join(60)

    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} failed completions, first: {errors[0]!r}\n{process.log_tail()}"

    # The swap failed on purpose: FAILED, with tiny-b still serving and the reason kept.
    assert failed["state"] == "FAILED" and failed["ready"] and failed["serving_model_id"] == MODEL_B
    assert failed["last_error"]["model_id"] == NO_TEMPLATE and "no chat template" in failed["last_error"]["message"]
    assert client.ready() and client.model()["model_id"] == MODEL_B

    # Each model answered with one deterministic text, and the two differ: the names are right.
    answers: dict[str, set[str]] = {}
    for model_id, content in results:  # type: ignore[misc]
        answers.setdefault(model_id, set()).add(content)
    assert set(answers) == {MODEL_A, MODEL_B}
    assert all(len(texts) == 1 for texts in answers.values()), answers
    assert answers[MODEL_A] != answers[MODEL_B]
    # No answer from tiny-a arrives after the swap's completions from tiny-b.
    names = [model_id for model_id, _ in results]  # type: ignore[misc]
    assert MODEL_A not in names[seen_failed:]

    # The long request began on tiny-a and finished on it, after tiny-b was serving.
    assert long_answer["model"] == MODEL_A and long_answer["usage"]["completion_tokens"] == 200

    metrics = client.metrics()
    assert metrics['llm_model_swaps_total{outcome="success"}'] == 2  # tiny-a at start, then tiny-b
    assert metrics['llm_model_swaps_total{outcome="failure"}'] == 1
    assert metrics['llm_completions_total{outcome="success"}'] == len(results) + 1
    assert metrics['llm_completions_total{outcome="error"}'] == 0
    assert metrics['llm_lifecycle_state{state="FAILED"}'] == 1
    assert metrics[f'llm_model_info{{dtype="float32",model_id="{MODEL_B}",revision="",source="local"}}'] == 1
    assert metrics["llm_queue_depth"] == 0


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    wait_for(condition, timeout, what, interval=0.02, retry_on=())


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
def test_a_client_that_goes_away_stops_its_generation(llm_service, stream: bool) -> None:
    """A generation whose client disconnected stops at its next token and frees its slot: an
    abandoned request must not hold one of the few generation threads for its full length."""
    client, _ = llm_service
    _wait_depth(client, 0)
    before = client.metrics()
    body = {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 480, "stream": stream}
    with socket.create_connection((urlsplit(client.url).hostname, urlsplit(client.url).port)) as connection:
        payload = json.dumps(body).encode()
        connection.sendall(b"POST /completion HTTP/1.1\r\nHost: llm\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        if stream:
            assert b"event: token" in _read_until(connection, b"event: token"), "no token was streamed"
        else:
            _wait_depth(client, 1)  # the generation runs; now hang up
    # Random weights never end early under greedy decoding, so all 480 tokens is what not stopping looks like.
    _wait_for(lambda: client.metrics()['llm_completions_total{outcome="cancelled"}']
              == before['llm_completions_total{outcome="cancelled"}'] + 1, "the generation to be cancelled")
    after = client.metrics()
    generated = after["llm_completion_tokens_total"] - before["llm_completion_tokens_total"]
    assert 0 < generated < 480, f"{generated} tokens generated for a client that had left"
    assert after["llm_queue_depth"] == 0
    assert after['llm_completions_total{outcome="success"}'] == before['llm_completions_total{outcome="success"}']


def _read_until(connection: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    received = b""
    connection.settimeout(60)
    while marker not in received and len(received) < limit:
        chunk = connection.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def _wait_depth(client: LLMClient, depth: int) -> None:
    _wait_for(lambda: client.metrics()["llm_queue_depth"] == depth, f"queue depth {depth}")
