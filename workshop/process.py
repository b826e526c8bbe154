"""Child processes (services, Prometheus, Locust) that are stopped whatever happens.

A notebook cell can fail between starting a service and stopping it, and a
kernel can be killed. So every :class:`ManagedProcess` is stopped three ways:
explicitly (``stop()`` or a ``with`` block), at interpreter exit (``atexit``),
and, on Linux, by the kernel when its parent dies (``PR_SET_PDEATHSIG``).

macOS and Windows have no parent-death signal: there a kernel killed with
``kill -9`` leaves its children running. Each process is therefore recorded
(pid and start time, :mod:`workshop.started_processes`) while it runs, and
notebook 09 (:mod:`workshop.cleanup`) stops what such a kernel left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from workshop import started_processes
from workshop.waiting import WaitTimeout, wait_for


class ProcessError(RuntimeError):
    """A managed process failed to start or to become ready; the message carries its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Only *now*: another program may take it before the server binds it (see :func:`on_a_free_port`).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


T = TypeVar("T")
PORT_ATTEMPTS = 3  # how many free ports to try when each is taken before the server binds it


def _port_was_taken(error: ProcessError) -> bool:
    message = str(error).lower()
    return "address already in use" in message or "errno 98" in message


def on_a_free_port(start: Callable[[int], T], port: int = 0) -> T:
    """``start(port)``; with ``port`` 0, on a port picked by :func:`free_port`, and on a new pick when
    another program bound the last one before the server could (up to ``PORT_ATTEMPTS`` picks)."""
    if port:
        return start(port)
    for attempt in range(PORT_ATTEMPTS):
        try:
            return start(free_port())
        except ProcessError as error:
            if attempt == PORT_ATTEMPTS - 1 or not _port_was_taken(error):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux only (prctl); elsewhere the record in :mod:`workshop.started_processes` is the safety net."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            PR_SET_PDEATHSIG = 1
            # The C library already loaded into this process (glibc or musl alike), not one found by name.
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix=f"{name}-")) / f"{name}.log"
        self._popen: subprocess.Popen | None = None
        self._record: started_processes.StartedProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> ManagedProcess:
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Linux sends the parent-death signal when the *thread* that started the child ends, not the
            # process: a service started from a worker thread (a rollout in the background) would die with it.
            # Such children are stopped at exit instead.
            in_main_thread = threading.current_thread() is threading.main_thread()
            self._popen = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent if in_main_thread else None,
            )
        self._record = started_processes.record(self._popen.pid, self.name, self.argv)
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate, then kill if it ignores SIGTERM; safe to call twice. Returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout)
        if self._record is not None:
            started_processes.forget(self._record)
            self._record = None
        atexit.unregister(self.stop)
        return self._popen.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def wait_until(self, check: Callable[[], str | None], timeout: float, what: str) -> None:
        """Poll ``check`` (None means done, a string says what is still missing) until ``timeout``."""
        missing = ["not checked yet"]

        def done() -> bool:
            if not self.running:
                code = self._popen.returncode if self._popen else None
                raise ProcessError(f"{self.name} exited with code {code} before {what}. Log:\n{self.log_tail()}")
            missing[0] = check()
            return missing[0] is None

        try:
            wait_for(done, timeout, what, interval=0.1, retry_on=())
        except WaitTimeout:
            self.stop()
            raise ProcessError(
                f"{self.name} was not {what} after {timeout:.0f} s ({missing[0]}). Log:\n{self.log_tail()}"
            ) from None

    def wait_for_http(self, url: str, timeout: float = 60.0, expect_status: int = 200) -> None:
        """Wait until ``url`` answers ``expect_status``; a 503 body's message is reported on timeout."""

        def check() -> str | None:
            try:
                response = httpx.get(url, timeout=2.0)
            except httpx.HTTPError as error:
                return f"{type(error).__name__}"
            if response.status_code == expect_status:
                return None
            try:
                return f"HTTP {response.status_code}: {response.json().get('message', response.text[:200])}"
            except ValueError:
                return f"HTTP {response.status_code}: {response.text[:200]}"

        self.wait_until(check, timeout, f"answering {expect_status} on {url}")

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{self.name} pid={self.pid} {state} log={self.log_path}>"
