"""Find and remove what the workshop left running on this machine: processes, containers, images.

Notebook 09 calls it. Services started by a notebook normally stop with the notebook's kernel (exit
hook and, on Linux, the parent-death signal), but a kernel killed with ``kill -9`` (on macOS, which has no
such signal, its children then keep running) or a container from notebook 03 can outlive it.

Only what the workshop itself started is stopped: every process it starts is recorded with its pid and
start time (:mod:`workshop.started_processes`), and a process is stopped only while both still match, so a
pid the system has since given to another program is never signalled. A process that merely looks like the
workshop's (its command line names a workshop service, e.g. one started by hand from the README) is listed
with the command to stop it yourself, and left running. Every step is idempotent: a second run finds
nothing and does nothing. Processes are read with psutil, the same on Linux and macOS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from workshop import container, started_processes
from workshop.waiting import WaitTimeout, wait_for

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
# What marks a process as one the workshop could have started (workshop.targets, workshop.loadtest): a process
# of this user that looks like one but is not in the record is listed, never stopped. The services' entry
# points (``python -m app.wine``, as the local target and the README start them), then command-line fragments.
SERVICE_MODULES = ("app.wine", "app.llm")
PROCESS_MARKERS = (
    "app.wine.api:app",  # uvicorn started by hand on the app itself
    "app.llm.api:app",
    "load_tests/locustfile.py",
    "wine-monitoring-",  # the local Prometheus' working folder
)


@dataclass(frozen=True)
class WorkshopProcess:
    pid: int
    command: str
    started_at: float  # seconds since the epoch (psutil's create_time): with the pid, it names one process

    @property
    def stop_command(self) -> str:
        """What a user types to stop it themselves."""
        return f"kill {self.pid}"


@dataclass
class Leftovers:
    """What is still there; empty (false) when nothing the workshop started is left.

    ``others`` are processes that look like the workshop's but that it did not start (or whose record is
    gone): they are reported, not removed, and do not make the leftovers true.
    """

    processes: list[WorkshopProcess] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    engine: str = ""
    others: list[WorkshopProcess] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.containers or self.images)

    def summary(self) -> str:
        lines = [f"process {p.pid}: {p.command[:100]}" for p in self.processes]
        lines += [f"container {c}" for c in self.containers]
        lines += [f"image {i}" for i in self.images]
        lines += [f"not started by the workshop, left running: process {p.pid}: {p.command[:100]} "
                  f"(to stop it: {p.stop_command})" for p in self.others]
        return "\n".join(lines) or "nothing left"


def _spared() -> set[int]:
    """This process and its parents: never the kernel running the cleanup, or its Jupyter server."""
    me = psutil.Process()
    return {me.pid, *(parent.pid for parent in me.parents())}


def _as_workshop_process(started: started_processes.StartedProcess) -> WorkshopProcess:
    return WorkshopProcess(started.pid, started.command, started.started_at)


def recorded_processes(records: Path | None = None) -> list[WorkshopProcess]:
    """The processes the workshop started that still run (the record in ``records``, by default the user's)."""
    spared = _spared()
    return [_as_workshop_process(started) for started in started_processes.recorded(records)
            if started.pid not in spared]


def looks_like_the_workshops(argv: Sequence[str], markers: Sequence[str] = PROCESS_MARKERS) -> bool:
    """``argv`` runs a service module (``-m app.wine``) or carries one of ``markers``."""
    runs_a_service = any(argv[i] == "-m" and argv[i + 1] in SERVICE_MODULES for i in range(len(argv) - 1))
    return runs_a_service or any(marker in " ".join(argv) for marker in markers)


def lookalike_processes(markers: Sequence[str] = PROCESS_MARKERS,
                        leave_out: Iterable[int] = ()) -> list[WorkshopProcess]:
    """Processes of this user that look like the workshop's (:func:`looks_like_the_workshops`), but ``leave_out``."""
    ignored = _spared() | set(leave_out)
    me = psutil.Process().username()
    found = []
    for process in psutil.process_iter(["pid", "username", "cmdline", "create_time"], ad_value=None):
        info = process.info
        if info["pid"] in ignored or info["username"] != me or not info["cmdline"]:
            continue
        if looks_like_the_workshops(info["cmdline"], markers):
            found.append(WorkshopProcess(info["pid"], " ".join(info["cmdline"]), info["create_time"] or 0.0))
    return sorted(found, key=lambda p: p.pid)


def workshop_processes(markers: Sequence[str] = PROCESS_MARKERS,
                       records: Path | None = None) -> tuple[list[WorkshopProcess], list[WorkshopProcess]]:
    """What the workshop started and still runs, and the look-alikes it did not start (to list, not stop)."""
    started = recorded_processes(records)
    return started, lookalike_processes(markers, leave_out=[p.pid for p in started])


def workshop_containers(images: Iterable[str]) -> list[str]:
    """Ids of containers (running or stopped) made from ``images``, which must exist locally."""
    ids: list[str] = []
    for image in images:
        listed = container.docker("ps", "--all", "--quiet", "--filter", f"ancestor={image}")
        ids += [line for line in listed.split() if line not in ids]
    return ids


def find_leftovers(images: Sequence[str] = WORKSHOP_IMAGES, records: Path | None = None) -> Leftovers:
    engine = container.engine_available()
    started, others = workshop_processes(records=records)
    leftovers = Leftovers(processes=started, engine=engine.reason, others=others)
    if engine:
        leftovers.images = [image for image in images if container.image_exists(image)]
        leftovers.containers = workshop_containers(leftovers.images)
    return leftovers


def _still_the_one(process: WorkshopProcess) -> psutil.Process | None:
    """The live process with ``process``'s pid *and* start time; None when it exited or its pid was reused."""
    return started_processes.StartedProcess(process.pid, process.started_at, "", process.command).process()


def _wait_gone(processes: Sequence[WorkshopProcess], timeout: float) -> list[WorkshopProcess]:
    """Those of ``processes`` still running after ``timeout`` seconds (an exited one not yet reaped is gone)."""
    remaining = list(processes)

    def all_gone() -> bool:
        remaining[:] = [p for p in remaining if _still_the_one(p) is not None]
        return not remaining

    with contextlib.suppress(WaitTimeout):
        wait_for(all_gone, timeout, "the processes to exit", interval=0.05, retry_on=())
    return remaining


def _signal(process: WorkshopProcess, how: str) -> None:
    found = _still_the_one(process)
    if found is not None:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            getattr(found, how)()  # psutil checks once more that the pid was not reused before signalling


def stop_processes(processes: Sequence[WorkshopProcess], grace: float = 5.0, records: Path | None = None) -> None:
    """SIGTERM (services drain and exit), then SIGKILL for whatever is still there after ``grace`` seconds.

    Each is signalled only while its pid and start time still match; its record is removed once it is gone.
    """
    for process in processes:
        _signal(process, "terminate")
    for process in _wait_gone(processes, grace):
        _signal(process, "kill")
    still_running = _wait_gone(processes, grace)
    for process in processes:
        if process not in still_running:
            started_processes.forget(
                started_processes.StartedProcess(process.pid, process.started_at, "", process.command), records)


def clean(*, remove_images: bool = True, images: Sequence[str] = WORKSHOP_IMAGES,
          processes: bool = True, records: Path | None = None) -> Leftovers:
    """Stop the workshop's processes, remove its containers (and images); return what was removed.

    The look-alikes it did not start are in the answer's ``others``, still running.
    """
    found = find_leftovers(images, records)
    if processes:
        stop_processes(found.processes, records=records)
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
