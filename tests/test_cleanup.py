"""Notebook 09's cleanup stops what the workshop started, and only that; it is harmless when run again.

A process counts as the workshop's when it is in the record (pid and start time, written when the workshop
started it): a look-alike that someone started by hand is listed with the command to stop it, and keeps
running. Each test keeps its record in a folder of its own, so a test run never touches the user's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.test_process import wait_gone
from workshop import cleanup, container, started_processes
from workshop.process import ManagedProcess, free_port
from workshop.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own record: what ManagedProcess writes and what the cleanup reads by default."""
    folder = tmp_path / "records"
    monkeypatch.setattr(started_processes, "records_folder", lambda: folder)
    return folder


def _lookalike(marker: str = "app.wine.api:app", *, ignore_sigterm: bool = False) -> subprocess.Popen:
    """A process with a workshop marker on its command line that the workshop did not start."""
    code = "import signal, time; "
    code += "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_sigterm else ""
    code += "print('up', flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", code, marker], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "up"
    return process


@contextlib.contextmanager
def _stopped(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield process
    finally:
        process.kill()
        process.wait()


_REFUSING_PROC = [False]


def _refuse_proc_reads_outside_psutil(event: str, args: tuple) -> None:
    """An audit hook: while on, reading /proc from anywhere but psutil raises, as on a system without it."""
    if not _REFUSING_PROC[0] or event not in ("open", "os.listdir", "os.scandir") or not args:
        return
    path = args[0]
    if isinstance(path, int) or path is None:
        return
    path = os.fsdecode(os.fspath(path))
    if not path.startswith("/proc"):
        return
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("psutil"):
            return
        frame = frame.f_back
    raise PermissionError(f"{path}: read outside psutil (this test runs as if there were no /proc)")


sys.addaudithook(_refuse_proc_reads_outside_psutil)


@contextlib.contextmanager
def _no_proc_reader() -> Iterator[None]:
    _REFUSING_PROC[0] = True
    try:
        yield
    finally:
        _REFUSING_PROC[0] = False


@pytest.mark.parametrize("command", [["-m", "uvicorn", "app.wine.api:app"], ["-m", "app.wine"]],
                         ids=["uvicorn app.wine.api:app", "python -m app.wine"])
def test_a_wine_service_started_by_hand_survives_cleanup_and_is_listed_with_how_to_stop_it(
        command, model_dir, records):
    """The look-alike: the same command line as the workshop's service, but the workshop did not start it."""
    port = free_port()
    by_hand = subprocess.Popen(
        [sys.executable, *command, "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "WINE_MODEL_DIR": str(model_dir)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with _stopped(by_hand):
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, 60,
                 "the look-alike's /health to answer 200", interval=0.1, retry_on=(httpx.HTTPError,))
        removed = cleanup.clean(images=(), remove_images=False)
        assert by_hand.poll() is None, "the cleanup stopped a service it did not start"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        assert by_hand.pid not in [p.pid for p in removed.processes]
        assert by_hand.pid in [p.pid for p in removed.others]
        assert f"(to stop it: kill {by_hand.pid})" in removed.summary()
        assert not removed, "a look-alike is reported, not counted as the workshop's leftovers"


def test_a_service_left_by_a_killed_kernel_is_found_in_the_record_stopped_and_not_found_again(records):
    """A kernel killed with -9 runs no exit hook; a child started from a worker thread gets no parent-death
    signal (nor does any child on macOS). Its record is what lets the cleanup stop it, from another process."""
    pid_file = records.parent / "pid"
    parent = textwrap.dedent(f"""
        import os, signal, sys, threading
        from pathlib import Path
        from workshop import started_processes
        from workshop.process import ManagedProcess
        started_processes.records_folder = lambda: Path({str(records)!r})
        argv = [sys.executable, "-c", "import time; time.sleep(60)", "app.llm.api:app"]
        worker = threading.Thread(target=lambda: open({str(pid_file)!r}, "w").write(
            str(ManagedProcess("llm-service", argv).start().pid)))
        worker.start(); worker.join()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", parent], check=False, timeout=60)
    orphan = int(pid_file.read_text())
    try:
        found = cleanup.find_leftovers(images=())
        assert [p.pid for p in found.processes] == [orphan]
        assert found.processes[0].command.endswith("app.llm.api:app")
        assert orphan not in [p.pid for p in found.others]
        removed = cleanup.clean(images=(), remove_images=False)
        assert [p.pid for p in removed.processes] == [orphan]
        assert wait_gone(orphan)
        assert list(records.glob("*.json")) == [], "the record of a stopped process is removed"
        again = cleanup.clean(images=(), remove_images=False)
        assert not again and again.processes == [] and orphan not in [p.pid for p in again.others]
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(orphan).kill()


def test_a_recorded_pid_whose_start_time_differs_is_not_stopped(records):
    """The pid was reused: the record names the process that had it before, so the one there now is left alone."""
    with _stopped(_lookalike()) as reused:
        earlier = psutil.Process(reused.pid).create_time() - 3600
        stale = started_processes.StartedProcess(reused.pid, earlier, "wine-service", "uvicorn app.wine.api:app")
        records.mkdir(parents=True)
        (records / stale.file_name).write_text(json.dumps(dataclasses.asdict(stale)))
        removed = cleanup.clean(images=(), remove_images=False)
        assert reused.poll() is None
        assert removed.processes == []
        assert reused.pid in [p.pid for p in removed.others], "it still looks like the workshop's: listed"
        cleanup.stop_processes([cleanup.WorkshopProcess(reused.pid, stale.command, earlier)], grace=0.5)
        assert reused.poll() is None, "stop_processes checks the start time too"
        assert list(records.glob("*.json")) == []


def test_a_recorded_process_that_ignores_sigterm_is_killed_after_the_grace_period(records):
    with _stopped(_lookalike("app.llm.api:app", ignore_sigterm=True)) as stubborn:
        started_processes.record(stubborn.pid, "llm-service", ["python", "-c", "...", "app.llm.api:app"])
        (found,) = cleanup.recorded_processes()
        assert found.pid == stubborn.pid
        cleanup.stop_processes([found], grace=0.5)
        assert stubborn.wait(timeout=5) == -9


def test_without_a_proc_reader_the_cleanup_still_finds_lists_and_stops(records):
    """macOS has no /proc: every read of it outside psutil is refused here, and the cleanup works the same."""
    with _stopped(_lookalike("load_tests/locustfile.py")) as lookalike:
        ours = ManagedProcess("locust", [sys.executable, "-c", "import time; time.sleep(60)",
                                         "load_tests/locustfile.py"]).start()
        try:
            with _no_proc_reader():
                with pytest.raises(PermissionError):
                    Path("/proc/self/cmdline").read_bytes()  # the hook is on
                removed = cleanup.clean(images=(), remove_images=False)
            assert [p.pid for p in removed.processes] == [ours.pid]
            assert lookalike.pid in [p.pid for p in removed.others]
            assert ours.stop() is not None and lookalike.poll() is None
        finally:
            ours.stop()


def test_what_looks_like_the_workshops_the_service_entry_points_and_the_markers():
    assert cleanup.looks_like_the_workshops(["python", "-m", "app.wine", "--port", "8000"])
    assert cleanup.looks_like_the_workshops(["python", "-m", "app.llm"])
    assert cleanup.looks_like_the_workshops(["python", "-m", "uvicorn", "app.wine.api:app"])
    assert cleanup.looks_like_the_workshops(["locust", "-f", "load_tests/locustfile.py", "--headless"])
    assert not cleanup.looks_like_the_workshops(["python", "-m", "app.llm.fetch_model", "--dest", "x"])
    assert not cleanup.looks_like_the_workshops(["vim", "app/wine/api.py"])


def test_unrelated_processes_and_the_caller_are_left_alone(records):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    with _stopped(bystander):
        started, others = cleanup.workshop_processes()
        pids = [p.pid for p in started + others]
        assert bystander.pid not in pids
        assert os.getpid() not in pids


def test_leftovers_summary_names_each_thing():
    leftovers = cleanup.Leftovers(
        processes=[cleanup.WorkshopProcess(42, "python -m uvicorn app.wine.api:app", 1.0)],
        containers=["abc123"], images=["wine-service:latest"],
        others=[cleanup.WorkshopProcess(43, "uvicorn app.llm.api:app", 2.0)])
    assert bool(leftovers)
    assert leftovers.summary().splitlines() == [
        "process 42: python -m uvicorn app.wine.api:app", "container abc123", "image wine-service:latest",
        "not started by the workshop, left running: process 43: uvicorn app.llm.api:app (to stop it: kill 43)"]
    assert cleanup.Leftovers().summary() == "nothing left"
    assert not cleanup.Leftovers(others=leftovers.others), "look-alikes alone are not the workshop's leftovers"


def test_containers_of_workshop_images_are_removed_and_a_second_clean_finds_none(records):
    engine = container.engine_available()
    if not engine:
        pytest.skip(f"no Docker engine: {engine.reason}")
    image = "python:3.11-slim"  # the Dockerfile's base, present wherever the images were built
    if not container.image_exists(image):
        pytest.skip(f"{image} is not present locally: run scripts/docker-engine.sh start (it provides it)")
    started = container.docker("run", "--detach", image, "sleep", "120").strip()
    try:
        removed = cleanup.clean(images=[image], remove_images=False, processes=False)
        assert any(started.startswith(c) for c in removed.containers)
        assert removed.images == [] and removed.processes == []
        assert container.image_exists(image), "remove_images=False keeps the image"
        assert not container.docker("ps", "--all", "--quiet", "--filter", f"id={started}").strip()
        assert cleanup.workshop_containers([image]) == []
    finally:
        container.remove(started)
