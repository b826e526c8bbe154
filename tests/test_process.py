"""Managed child processes: started, waited for, and always stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from workshop.process import ManagedProcess, ProcessError, free_port


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


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
    """What keeps a failed notebook from leaking a service: exit hooks and the parent-death signal."""
    pid_file = tmp_path / "pid"
    for ending in ("normal exit", "killed"):
        parent = textwrap.dedent(f"""
            import os, signal, sys, time
            from workshop.process import ManagedProcess
            child = ManagedProcess("child", [sys.executable, "-c", "import time; time.sleep(120)"]).start()
            open({str(pid_file)!r}, "w").write(str(child.pid))
            if {ending!r} == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
        """)
        subprocess.run([sys.executable, "-c", parent], check=False, timeout=60)
        child_pid = int(pid_file.read_text())
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
