"""Managed child processes: started, waited for, and always stopped."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from workshop import cleanup, started_processes
from workshop.process import ManagedProcess, ProcessError, free_port
from workshop.waiting import WaitTimeout, wait_for


def pid_alive(pid: int) -> bool:
    """Running, and not a zombie (which still answers kill(0)); psutil reads it on Linux and macOS alike."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    try:
        wait_for(lambda: not pid_alive(pid), timeout, f"pid {pid} to exit", interval=0.05, retry_on=())
    except WaitTimeout:
        return False
    return True


def test_stop_is_idempotent_and_kills_a_process_that_ignores_sigterm(tmp_path):
    script = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('up', flush=True); time.sleep(60)")
    process = ManagedProcess("stubborn", [sys.executable, "-c", script], log_path=tmp_path / "log").start()
    process.wait_until(lambda: None if "up" in process.log_tail() else "no output yet", 10, "printing")
    assert process.stop(timeout=1) is not None
    assert not process.running
    assert process.stop() == process.stop()  # second and third stops are harmless


def test_a_process_that_exits_early_reports_its_log(tmp_path):
    script = "import sys; print('port already in use', flush=True); sys.exit(3)"
    process = ManagedProcess("broken", [sys.executable, "-c", script], log_path=tmp_path / "log").start()
    with pytest.raises(ProcessError, match=r"broken exited with code 3[\s\S]*port already in use"):
        process.wait_for_http(f"http://127.0.0.1:{free_port()}/", timeout=10)


def test_waiting_past_the_deadline_stops_the_process_and_says_what_was_missing(tmp_path):
    process = ManagedProcess("silent", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "l")
    process.start()
    with pytest.raises(ProcessError, match=r"was not answering 200 .* after 1 s \(ConnectError\)"):
        process.wait_for_http(f"http://127.0.0.1:{free_port()}/ready", timeout=1)
    assert not process.running


@pytest.mark.slow
def test_children_die_with_the_interpreter_that_started_them(tmp_path):
    """What keeps a failed notebook from leaking a service: exit hooks and, on Linux, the parent-death signal.
    Elsewhere (macOS) a child outlives a parent killed with -9, and its record lets notebook 09 stop it."""
    pid_file, records = tmp_path / "pid", tmp_path / "records"
    for ending in ("normal exit", "killed"):
        parent = textwrap.dedent(f"""
            import os, signal, sys, time
            from pathlib import Path
            from workshop import started_processes
            from workshop.process import ManagedProcess
            started_processes.records_folder = lambda: Path({str(records)!r})
            child = ManagedProcess("child", [sys.executable, "-c", "import time; time.sleep(120)"]).start()
            open({str(pid_file)!r}, "w").write(str(child.pid))
            if {ending!r} == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
        """)
        subprocess.run([sys.executable, "-c", parent], check=False, timeout=60)
        child_pid = int(pid_file.read_text())
        if ending == "killed" and not sys.platform.startswith("linux"):
            left = [p for p in cleanup.recorded_processes(records) if p.pid == child_pid]
            assert left, "a child the parent-death signal cannot stop is in the record"
            cleanup.stop_processes(left, records=records)
        assert wait_gone(child_pid), f"child {child_pid} survived its parent's {ending}"


def test_a_child_started_from_a_worker_thread_outlives_that_thread():
    """Linux's parent-death signal follows the thread that started a child: a service started by a background
    rollout must not die when that thread ends."""
    import threading

    started: list[ManagedProcess] = []
    worker = threading.Thread(target=lambda: started.append(
        ManagedProcess("child", [sys.executable, "-c", "import time; time.sleep(60)"]).start()))
    worker.start()
    worker.join()
    try:
        time.sleep(1.0)  # the signal, if it came, would have arrived by now
        assert started[0].running, "the child died with the thread that started it"
    finally:
        started[0].stop()


def test_a_running_process_is_recorded_with_its_start_time_and_forgotten_when_stopped(tmp_path, monkeypatch):
    """What lets notebook 09 stop a kernel's leftovers later, and only them (see tests/test_cleanup.py)."""
    monkeypatch.setattr(started_processes, "records_folder", lambda: tmp_path / "records")
    process = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                             log_path=tmp_path / "log").start()
    try:
        (started,) = started_processes.recorded()
        assert started.pid == process.pid and started.name == "sleeper"
        assert started.started_at == pytest.approx(psutil.Process(process.pid).create_time(), abs=0.01)
        assert started.command.endswith("-c import time; time.sleep(60)")
    finally:
        process.stop()
    assert started_processes.recorded() == []
    assert list((tmp_path / "records").iterdir()) == [], "stop() removes the record file itself"
