"""Notebook 09's cleanup finds what the workshop left behind, removes it, and is harmless when run again."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from workshop import cleanup, container
from workshop.process import free_port

pytestmark = pytest.mark.slow


def _found(pid: int, timeout: float = 10.0) -> list[cleanup.WorkshopProcess]:
    """The workshop process ``pid`` once it has exec'd (until then /proc shows the forking parent's command)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in cleanup.workshop_processes() if p.pid == pid]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_an_orphaned_wine_service_is_found_stopped_and_not_found_again(model_dir):
    """A service started outside any notebook kernel (by hand, or by a kernel killed with -9) is stopped."""
    port = free_port()
    orphan = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.wine.api:app", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "WINE_MODEL_DIR": str(model_dir)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        found = _found(orphan.pid)
        assert found and "app.wine.api:app" in found[0].command
        cleanup.stop_processes(found)
        assert orphan.wait(timeout=10) is not None
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        assert orphan.pid not in [p.pid for p in cleanup.workshop_processes()]
    finally:
        orphan.kill()


def test_unrelated_processes_and_the_caller_are_left_alone():
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pids = [p.pid for p in cleanup.workshop_processes()]
        assert bystander.pid not in pids
        assert os.getpid() not in pids
    finally:
        bystander.kill()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period():
    stubborn = subprocess.Popen([sys.executable, "-c",
                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ignoring', flush=True); time.sleep(60)",
                                 "app.llm.api:app"], stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout.readline().strip() == "ignoring"
        found = [p for p in cleanup.workshop_processes() if p.pid == stubborn.pid]
        assert found, "the marker on the command line identifies it"
        cleanup.stop_processes(found, grace=0.5)
        assert stubborn.wait(timeout=5) == -9
    finally:
        stubborn.kill()


def test_leftovers_summary_names_each_thing():
    leftovers = cleanup.Leftovers(processes=[cleanup.WorkshopProcess(42, "python -m uvicorn app.wine.api:app")],
                                  containers=["abc123"], images=["wine-service:latest"])
    assert bool(leftovers)
    assert leftovers.summary().splitlines() == [
        "process 42: python -m uvicorn app.wine.api:app", "container abc123", "image wine-service:latest"]
    assert cleanup.Leftovers().summary() == "nothing left"


def test_containers_of_workshop_images_are_removed_and_a_second_clean_finds_none():
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
