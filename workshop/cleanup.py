"""Find and remove what the workshop left running on this machine: processes, containers, images.

Notebook 09 calls it. Services started by a notebook normally stop with the notebook's kernel (exit
hook and Linux's parent-death signal), but a kernel killed with ``kill -9`` on a system without that
signal, a service started by hand from the README, or a container from notebook 03 can outlive it.
Everything here is matched by what the workshop itself starts, so nothing else on the machine is
touched, and every step is idempotent: a second run finds nothing and does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workshop import container

# The wine image of notebook 03's answer key when `make workshop` runs it beside the learner's edition.
ANSWER_KEY_WINE_IMAGE = "wine-service:answer-key"
# The images the workshop builds (notebook 03; the locust and llm ones for the kubernetes target).
WORKSHOP_IMAGES = (
    "wine-service:latest",
    ANSWER_KEY_WINE_IMAGE,
    # 03's single-stage build for comparison (the notebook removes it; left behind if 03 stopped midway).
    "wine-service:latest-single-stage",
    f"{ANSWER_KEY_WINE_IMAGE}-single-stage",
    "ml-serving-workshop/wine-locust:latest",
    "ml-serving-workshop/llm-service:latest",
)
# Command-line fragments of the processes the workshop starts (workshop.targets, workshop.loadtest).
PROCESS_MARKERS = (
    "app.wine.api:app",
    "app.llm.api:app",
    "load_tests/locustfile.py",
    "wine-monitoring-",  # the local Prometheus' working folder
)


@dataclass(frozen=True)
class WorkshopProcess:
    pid: int
    command: str


@dataclass
class Leftovers:
    """What is still there; empty when the machine is clean."""

    processes: list[WorkshopProcess] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    engine: str = ""

    def __bool__(self) -> bool:
        return bool(self.processes or self.containers or self.images)

    def summary(self) -> str:
        if not self:
            return "nothing left"
        lines = [f"process {p.pid}: {p.command[:100]}" for p in self.processes]
        lines += [f"container {c}" for c in self.containers]
        lines += [f"image {i}" for i in self.images]
        return "\n".join(lines)


def _command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


def _ancestors(pid: int) -> set[int]:
    """This process and its parents: never stop the kernel running the cleanup, or its Jupyter server."""
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return seen


def workshop_processes(markers: Sequence[str] = PROCESS_MARKERS) -> list[WorkshopProcess]:
    """Processes of this user whose command line carries one of ``markers`` (Linux: read from /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    spared = _ancestors(os.getpid())
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid != os.getuid():
                continue
        command = _command_line(int(entry.name))
        if command and any(marker in command for marker in markers):
            found.append(WorkshopProcess(int(entry.name), command))
    return sorted(found, key=lambda p: p.pid)


def workshop_containers(images: Iterable[str]) -> list[str]:
    """Ids of containers (running or stopped) made from ``images``, which must exist locally."""
    ids: list[str] = []
    for image in images:
        listed = container.docker("ps", "--all", "--quiet", "--filter", f"ancestor={image}")
        ids += [line for line in listed.split() if line not in ids]
    return ids


def find_leftovers(images: Sequence[str] = WORKSHOP_IMAGES) -> Leftovers:
    engine = container.engine_available()
    leftovers = Leftovers(processes=workshop_processes(), engine=engine.reason)
    if engine:
        leftovers.images = [image for image in images if container.image_exists(image)]
        leftovers.containers = workshop_containers(leftovers.images)
    return leftovers


def stop_processes(processes: Sequence[WorkshopProcess], grace: float = 5.0) -> None:
    """SIGTERM (services drain and exit), then SIGKILL for whatever is still there after ``grace`` seconds."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    remaining = list(processes)
    while remaining and time.monotonic() < deadline:
        remaining = [p for p in remaining if _command_line(p.pid) == p.command]
        time.sleep(0.1)
    for process in remaining:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signal.SIGKILL)


def clean(*, remove_images: bool = True, images: Sequence[str] = WORKSHOP_IMAGES,
          processes: bool = True) -> Leftovers:
    """Stop the workshop's processes, remove its containers (and images); return what was removed."""
    found = find_leftovers(images)
    if processes:
        stop_processes(found.processes)
    else:
        found.processes = []
    for container_id in found.containers:
        container.remove(container_id)
    if remove_images:
        for image in found.images:
            container.remove_image(image)
    else:
        found.images = []
    return found
