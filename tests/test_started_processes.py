"""The record of what the workshop started: a process counts only while its pid and start time both match."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from platformdirs import user_cache_dir

from workshop import started_processes
from workshop.started_processes import StartedProcess
from workshop.waiting import wait_for


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_a_recorded_process_is_read_back_with_its_start_time(tmp_path, sleeper):
    started = started_processes.record(sleeper.pid, "sleeper", ["python", "-c", "sleep"], tmp_path)
    assert started is not None
    assert started.started_at == pytest.approx(psutil.Process(sleeper.pid).create_time(), abs=0.01)
    assert started_processes.recorded(tmp_path) == [started]
    assert started.process().pid == sleeper.pid


def test_a_record_whose_pid_now_belongs_to_a_process_started_later_names_no_process(tmp_path, sleeper):
    """The pid was reused: the record's start time is that of the process that had the pid before."""
    reused = StartedProcess(sleeper.pid, psutil.Process(sleeper.pid).create_time() - 3600, "earlier", "python")
    (tmp_path / reused.file_name).write_text(json.dumps({
        "pid": reused.pid, "started_at": reused.started_at, "name": reused.name, "command": reused.command}))
    assert reused.process() is None
    assert started_processes.recorded(tmp_path) == []
    assert list(tmp_path.iterdir()) == [], "a record naming no process is deleted when read"
    assert sleeper.poll() is None


def test_records_of_exited_and_unreaped_processes_are_dropped(tmp_path, sleeper):
    started = started_processes.record(sleeper.pid, "sleeper", ["python"], tmp_path)
    sleeper.kill()  # not waited for: until Popen reaps it, it is a zombie that still has its pid
    wait_for(lambda: psutil.Process(sleeper.pid).status() == psutil.STATUS_ZOMBIE, 10,
             "the killed sleeper to become a zombie", interval=0.01, retry_on=())
    assert psutil.pid_exists(sleeper.pid)
    assert started.process() is None, "an exited process not yet reaped is no longer running"
    sleeper.wait()
    assert started.process() is None
    assert started_processes.recorded(tmp_path) == []


def test_forget_removes_the_record_and_is_harmless_twice(tmp_path, sleeper):
    started = started_processes.record(sleeper.pid, "sleeper", ["python"], tmp_path)
    started_processes.forget(started, tmp_path)
    started_processes.forget(started, tmp_path)
    assert started_processes.recorded(tmp_path) == []


def test_a_file_that_is_not_a_record_is_removed_not_trusted(tmp_path):
    (tmp_path / "123-1.00.json").write_text("{not json")
    (tmp_path / "456-1.00.json").write_text(json.dumps({"pid": 456}))
    assert started_processes.recorded(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_folder_does_not_stop_a_process_from_starting(tmp_path, sleeper):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert started_processes.record(sleeper.pid, "sleeper", ["python"], blocked / "records") is None


def test_a_process_that_is_already_gone_is_not_recorded(tmp_path):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert started_processes.record(done.pid, "gone", ["python"], tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_the_records_live_in_the_users_cache_folder_of_the_workshop():
    assert started_processes.records_folder().parent == Path(user_cache_dir("ml-serving-workshop"))
