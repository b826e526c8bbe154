# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are redefined as arguments)
"""Honest overload signals: a 429's Retry-After follows the queue, and clients that leave count as cancelled.

Retry-After used to be a constant 2 s while a full queue took minutes to clear, so refused clients came
back at once and were refused again. Now it is how long the generations running and waiting take to drain
at the recent pace. Completions whose client left are counted ``cancelled``, whether the answer was plain
or streamed, on both APIs; those run against a real uvicorn, since only a real socket can hang up.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.llm_fixtures import (  # noqa: F401  (fixtures)
    MODEL_A,
    eventually,
    llm_models_dir,
    make_llm_client,
    served_in_a_thread,
    served_metrics,
    user,
)

TOKEN_S = 0.05  # each forward pass takes at least this long: a generation's time is known, whatever the machine


def metric(client: TestClient, name: str, **labels: str) -> float:
    wanted = tuple(sorted(labels.items()))
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and tuple(sorted(sample.labels.items())) == wanted:
                return sample.value
    return 0.0


class Pace:
    """The model's forward pass, slowed to TOKEN_S a step, and held while ``hold`` is set (until ``release``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from app.llm import generation

        self.hold, self.release = threading.Event(), threading.Event()
        real_forward = generation._forward

        def paced(*args, **kwargs):
            if self.hold.is_set():
                assert self.release.wait(60), "the test never released the generations"
            time.sleep(TOKEN_S)
            return real_forward(*args, **kwargs)

        monkeypatch.setattr(generation, "_forward", paced)


def post_all(client: TestClient, requests: list[tuple[str, dict]]) -> list:
    """Send the requests at once, each from a thread of its own; their responses, in order."""
    responses: list = [None] * len(requests)

    def send(index: int, path: str, body: dict) -> None:
        responses[index] = client.post(path, json=body)

    threads = [threading.Thread(target=send, args=(i, *request)) for i, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return responses


def retry_after_when_full(make_llm_client, pace: Pace, batch: int, queue: int, tokens: int) -> tuple[int, float]:
    """A service with this batch and queue: a batch of generations of ``tokens`` tokens first (the recent pace),
    then the batch and queue filled with held generations and one more request on each API (both refused).
    Returns the refusals' Retry-After and the mean generation time the service reported."""
    client = make_llm_client(max_batch_size=batch, max_queue=queue)
    pace.hold.clear()
    body = {"messages": user(), "max_new_tokens": tokens, "temperature": 0}
    paced = post_all(client, [("/completion", body)] * batch)
    assert [r.status_code for r in paced] == [200] * batch, paced[0].text
    assert all(r.json()["usage"]["completion_tokens"] == tokens for r in paced)
    mean = sum(r.json()["generation_seconds"] for r in paced) / batch
    assert mean >= tokens * TOKEN_S

    pace.release.clear()
    pace.hold.set()
    held: list = []
    fill = threading.Thread(target=lambda: held.extend(post_all(client, [("/completion", {
        "messages": user(), "max_new_tokens": 1})] * (batch + queue))))
    fill.start()
    try:
        eventually(lambda: metric(client, "llm_queue_depth") == batch + queue, "the batch and the queue to fill")
        refused = [client.post("/completion", json={"messages": user(), "max_new_tokens": 1}),
                   client.post("/v1/chat/completions", json={"model": MODEL_A, "messages": user(), "max_tokens": 1})]
    finally:
        pace.release.set()
        fill.join(120)
    assert [r.status_code for r in held] == [200] * (batch + queue)
    assert [r.status_code for r in refused] == [429, 429], refused[0].text
    (retry_after,) = {int(r.headers["retry-after"]) for r in refused}
    assert f"retry in {retry_after} s" in refused[0].json()["message"]
    return retry_after, mean


def test_retry_after_is_how_long_the_queue_takes_to_drain(make_llm_client, monkeypatch: pytest.MonkeyPatch) -> None:
    pace = Pace(monkeypatch)
    batch, tokens = 2, 30  # 30 tokens of at least TOKEN_S: at least 1.5 s a generation
    found = {}
    for queue in (2, 10):
        retry_after, mean = retry_after_when_full(make_llm_client, pace, batch, queue, tokens)
        # (running + waiting) x the recent mean generation time / rows decoded together, rounded up.
        assert retry_after == math.ceil((batch + queue) * mean / batch), (queue, retry_after, mean)
        found[queue] = retry_after
    assert found[10] > found[2] > 2, f"Retry-After grows with the queue: {found}"


# Clients that leave (a real uvicorn: only a real socket hangs up) ------------------------------------------

LIVE_TOKEN_S = 0.01  # each forward pass of the live server takes at least this long


@pytest.fixture
def live_server(llm_models_dir, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app in a real uvicorn on 127.0.0.1, with the protocol ``python -m app.llm`` serves it with, one row
    decoding at a time (a second request waits), each token at least LIVE_TOKEN_S."""
    from app.common.server import guarded_protocol
    from app.llm import generation
    from app.llm.api import create_app
    from app.llm.config import Settings

    real_forward = generation._forward

    def paced(*args, **kwargs):
        time.sleep(LIVE_TOKEN_S)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(generation, "_forward", paced)
    settings = Settings(models_dir=llm_models_dir, default_model=MODEL_A, hub_offline=True, max_new_tokens_cap=480,
                        max_batch_size=1, max_queue=4)
    with served_in_a_thread(create_app(settings), http=guarded_protocol(settings)) as url:
        yield url


def send(url: str, api: str, max_tokens: int, stream: bool) -> socket.socket:
    """A completion request on a socket of its own, as a client that may hang up at any moment."""
    body = ({"messages": user("hi"), "max_new_tokens": max_tokens, "stream": stream} if api == "/completion" else
            {"model": MODEL_A, "messages": user("hi"), "max_tokens": max_tokens, "temperature": 0, "stream": stream})
    payload = json.dumps(body).encode()
    parts = urlsplit(url)
    connection = socket.create_connection((parts.hostname, parts.port))
    connection.sendall(b"POST %s HTTP/1.1\r\nHost: llm\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                       b"\r\n%s" % (api.encode(), len(payload), payload))
    return connection


def read_until(connection: socket.socket, marker: bytes) -> bytes:
    received = b""
    connection.settimeout(60)
    while marker not in received:
        chunk = connection.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def outcomes(url: str) -> dict[str, float]:
    found = served_metrics(url)
    return {outcome: found[f"llm_completions_total{{outcome={outcome!r}}}"] for outcome in ("success", "cancelled")}


def settled(url: str, before: dict[str, float], requests: int) -> dict[str, float]:
    """The outcomes counted since ``before``, once ``requests`` more have been counted and the queue is empty."""
    def counted() -> bool:
        now = outcomes(url)
        return (sum(now.values()) - sum(before.values()) >= requests
                and served_metrics(url)["llm_queue_depth{}"] == 0)

    eventually(counted, f"{requests} completions to be counted")
    time.sleep(0.3)  # nothing more is counted later
    now = outcomes(url)
    return {outcome: now[outcome] - before[outcome] for outcome in now}


APIS = ("/completion", "/v1/chat/completions")


@pytest.mark.slow
@pytest.mark.parametrize("api", APIS)
def test_a_plain_answer_whose_client_left_before_it_was_ready_is_cancelled(live_server: str, api: str) -> None:
    """The client hangs up as soon as it has asked; a short answer is ready before the server's next look at the
    connection (every 0.2 s): the generation ended, but nobody got the answer."""
    before = outcomes(live_server)
    send(live_server, api, 2, stream=False).close()
    assert settled(live_server, before, 1) == {"success": 0, "cancelled": 1}


@pytest.mark.slow
@pytest.mark.parametrize("api", APIS)
def test_a_plain_answer_whose_client_left_while_it_ran_is_cancelled(live_server: str, api: str) -> None:
    before = outcomes(live_server)
    connection = send(live_server, api, 400, stream=False)
    eventually(lambda: served_metrics(live_server)["llm_queue_depth{}"] == 1, "the generation to run")
    connection.close()
    assert settled(live_server, before, 1) == {"success": 0, "cancelled": 1}
    assert served_metrics(live_server)["llm_completion_tokens_total{}"] < 400, "the generation ran on after it left"


@pytest.mark.slow
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("leaves", ["at-once", "mid-stream", "while-waiting"])
def test_a_stream_whose_client_left_is_cancelled(live_server: str, api: str, leaves: str) -> None:
    before = outcomes(live_server)
    holder = None
    if leaves == "while-waiting":  # one row: a first request holds it, the stream waits behind it
        holder = send(live_server, api, 400, stream=False)
        eventually(lambda: served_metrics(live_server)["llm_queue_depth{}"] == 1, "the first request to run")
    connection = send(live_server, api, 2 if leaves == "at-once" else 400, stream=True)
    if leaves == "mid-stream":
        assert b"data:" in read_until(connection, b"data:")
    elif leaves == "while-waiting":
        eventually(lambda: served_metrics(live_server)["llm_queue_depth{}"] == 2, "the stream to wait")
    connection.close()
    if holder is not None:
        holder.close()
    assert settled(live_server, before, 2 if holder else 1) == {"success": 0, "cancelled": 2 if holder else 1}


@pytest.mark.slow
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_answer_read_to_its_end_is_a_success(live_server: str, api: str, stream: bool) -> None:
    before = outcomes(live_server)
    with send(live_server, api, 4, stream=stream) as connection:
        end = (b"event: done" if api == "/completion" else b"[DONE]") if stream else b'"usage"'
        assert end in read_until(connection, end)
    assert settled(live_server, before, 1) == {"success": 1, "cancelled": 0}
