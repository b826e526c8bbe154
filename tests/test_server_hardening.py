"""The services' entry point against slow, idle, greedy and numerous clients: real sockets, real servers.

``python -m app.wine`` (and ``python -m app.llm``) run as child processes on 127.0.0.1 with short limits, so
each case takes seconds: a header sent a byte a second is answered 408 and closed at the header deadline while
a normal client is served; headers over the limit get a 431 and the server's memory does not follow them; a
connection that sends nothing is closed after the idle timeout; connections beyond the bound get a 503.
Today's ``uvicorn app.wine.api:app`` fails every one of these (none of the limits exists there).
"""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from workshop.process import ManagedProcess, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEADER_TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 2.0
MAX_HEADER_BYTES = 16_384
MAX_CONNECTIONS = 40
MARGIN_S = 2.0  # beyond a deadline: timer granularity and a busy machine
LIMITS = {"HEADER_TIMEOUT_S": HEADER_TIMEOUT_S, "BODY_TIMEOUT_S": HEADER_TIMEOUT_S, "IDLE_TIMEOUT_S": IDLE_TIMEOUT_S,
          "MAX_HEADER_BYTES": MAX_HEADER_BYTES, "MAX_CONNECTIONS": MAX_CONNECTIONS}
PARTIAL_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


class Service:
    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def rss_mb(self) -> float:
        assert self.process.pid is not None
        return psutil.Process(self.process.pid).memory_info().rss / 2**20


def start_service(module: str, env: dict[str, str], log: Path, ready_path: str) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]
    process = ManagedProcess(module, argv, env=env, cwd=PROJECT_ROOT, log_path=log).start()
    service = Service(process, port)
    try:
        process.wait_for_http(f"{service.url}{ready_path}", timeout=120)
    except BaseException:
        process.stop()
        raise
    return service


@pytest.fixture(scope="module")
def wine(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {"WINE_MODEL_DIR": str(model_dir), **{f"WINE_{name}": str(value) for name, value in LIMITS.items()}}
    service = start_service("app.wine", env, tmp_path_factory.mktemp("wine") / "wine.log", "/ready")
    yield service
    service.process.stop()


def read_until_closed(connection: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """What the server sends until it ends the stream, and after how many seconds (None: still open)."""
    started = time.monotonic()
    received = b""
    while (left := timeout - (time.monotonic() - started)) > 0:
        readable, _, _ = select.select([connection], [], [], left)
        if not readable:
            break
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    return received, None


def closed_by_server(connection: socket.socket) -> bytes | None:
    """Without waiting: None while open, else what the server sent before closing."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return None
    received, after = read_until_closed(connection, 1.0)
    return received if after is not None else None


def test_a_slow_client_gets_a_408_at_the_header_deadline_while_a_normal_client_is_served(wine: Service) -> None:
    slow = [wine.connect() for _ in range(10)]
    answers: dict[int, bytes] = {}
    served, started = 0, time.monotonic()
    try:
        for client in slow:
            client.sendall(PARTIAL_REQUEST)
        with httpx.Client(base_url=wine.url, timeout=5) as normal:
            while len(answers) < len(slow) and time.monotonic() - started < HEADER_TIMEOUT_S + MARGIN_S + 3:
                for index, client in enumerate(slow):  # one byte a second each, never the end of the header
                    if index in answers:
                        continue
                    if (answer := closed_by_server(client)) is not None:
                        answers[index] = answer
                        continue
                    try:
                        client.sendall(b"x")
                    except (BrokenPipeError, ConnectionResetError):
                        answers[index] = b""
                assert normal.get("/health").status_code == 200
                served += 1
                time.sleep(1.0)
        elapsed = time.monotonic() - started
    finally:
        for client in slow:
            client.close()
    assert len(answers) == len(slow), f"{len(slow) - len(answers)} slow clients still connected after {elapsed:.0f} s"
    assert elapsed <= HEADER_TIMEOUT_S + MARGIN_S + 1.5
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers.values()), answers
    assert served >= 3


def test_headers_over_the_limit_get_a_431(wine: Service) -> None:
    response = httpx.get(f"{wine.url}/health", headers={"X-Big": "a" * 1_000_000}, timeout=10)
    assert response.status_code == 431
    assert f"exceed {MAX_HEADER_BYTES} bytes" in response.text
    # Just under the limit is served, and so is the next client.
    assert httpx.get(f"{wine.url}/health", headers={"X-Big": "a" * (MAX_HEADER_BYTES - 200)}).status_code == 200


def test_unfinished_huge_headers_are_cut_off_and_memory_stays_flat(wine: Service) -> None:
    before = wine.rss_mb()
    chunk = b"a" * 65536
    clients = [wine.connect() for _ in range(6)]
    try:
        for client in clients:  # 10 MB each, never the end of the header
            client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            try:
                for _ in range(10_000_000 // len(chunk)):
                    client.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        grown = wine.rss_mb() - before
        answers = [read_until_closed(client, 5.0) for client in clients]
    finally:
        for client in clients:
            client.close()
    assert grown < 20, f"the server grew by {grown:.0f} MiB while 6 clients sent 10 MB headers"
    assert all(answer.startswith(b"HTTP/1.1 431 ") and after is not None for answer, after in answers), answers
    assert httpx.get(f"{wine.url}/health").status_code == 200


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(wine: Service) -> None:
    silent = wine.connect()
    kept_alive = wine.connect()
    try:
        kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received, after = read_until_closed(silent, IDLE_TIMEOUT_S + MARGIN_S)
        assert after is not None, f"a silent connection was still open after {IDLE_TIMEOUT_S + MARGIN_S} s"
        assert received == b"" and after >= IDLE_TIMEOUT_S - 0.5
        # After an answer, a kept-alive connection that goes quiet is closed too.
        answered, after = read_until_closed(kept_alive, IDLE_TIMEOUT_S + MARGIN_S)
        assert answered.startswith(b"HTTP/1.1 200 ") and after is not None
    finally:
        silent.close()
        kept_alive.close()


def test_connections_beyond_the_bound_get_a_503_and_are_closed(wine: Service) -> None:
    time.sleep(IDLE_TIMEOUT_S + 1)  # the earlier tests' connections are gone
    clients = []
    try:
        for _ in range(MAX_CONNECTIONS + 5):
            clients.append(wine.connect())
        time.sleep(0.5)
        refused = [answer for client in clients if (answer := closed_by_server(client)) is not None]
        assert len(refused) >= 5, f"{len(clients)} connections open at once and only {len(refused)} refused"
        assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in refused), refused
    finally:
        for client in clients:
            client.close()
    time.sleep(0.5)
    assert httpx.get(f"{wine.url}/health").status_code == 200


def test_the_llm_entry_point_has_the_same_limits(tmp_path: Path) -> None:
    env = {"LLM_MODELS_DIR": str(tmp_path), "LLM_DEFAULT_MODEL": "",
           **{f"LLM_{name}": str(value) for name, value in LIMITS.items()}}
    llm = start_service("app.llm", env, tmp_path / "llm.log", "/health")
    try:
        assert httpx.get(f"{llm.url}/health", headers={"X-Big": "a" * 100_000}, timeout=10).status_code == 431
        slow = llm.connect()
        silent = llm.connect()
        try:
            slow.sendall(PARTIAL_REQUEST)
            answer, after = read_until_closed(slow, HEADER_TIMEOUT_S + MARGIN_S)
            assert answer.startswith(b"HTTP/1.1 408 ") and after is not None
            assert read_until_closed(silent, IDLE_TIMEOUT_S + MARGIN_S)[1] is not None
        finally:
            slow.close()
            silent.close()
        assert httpx.get(f"{llm.url}/health").status_code == 200
    finally:
        llm.process.stop()
