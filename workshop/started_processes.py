"""What the workshop started on this machine, written down so that a cleanup later stops only that.

Every :class:`workshop.process.ManagedProcess` (the services, Prometheus, Locust) records itself here when it
starts and removes its record when it stops: one small JSON file per process, in the user's cache folder
(platformdirs: ``~/.cache/ml-serving-workshop/started-processes`` on Linux, ``~/Library/Caches/...`` on
macOS), the folder the wine data is cached in too. A record outlives a kernel killed with ``kill -9``;
that is what it is for.

A pid alone does not name a process: once it exits the system may give its pid to another program. A record
therefore holds the pid *and* the process's start time, and it counts only while a process with both
exists; records of processes that are gone are deleted when read. psutil reads both on Linux, macOS and
Windows alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from platformdirs import user_cache_dir

APP_NAME = "ml-serving-workshop"
# psutil derives a start time from the boot time, which the system computes from its clock: a clock
# adjustment (NTP) moves it by up to a second between two readers. A pid reused within a second of its
# first owner's start is what this tolerance cannot tell apart.
START_TIME_TOLERANCE_S = 1.0


def records_folder() -> Path:
    """The folder of the records (read on every call, so a changed cache folder takes effect at once)."""
    return Path(user_cache_dir(APP_NAME)) / "started-processes"


@dataclass(frozen=True)
class StartedProcess:
    """One process the workshop started: which one (pid and start time), and what it was."""

    pid: int
    started_at: float  # seconds since the epoch, as psutil's Process.create_time() says
    name: str
    command: str

    @property
    def file_name(self) -> str:
        return f"{self.pid}-{self.started_at:.2f}.json"

    def process(self) -> psutil.Process | None:
        """The live process this record names; None if it exited or its pid now belongs to another one."""
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started_at) > START_TIME_TOLERANCE_S:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return process


def record(pid: int, name: str, argv: Sequence[str], folder: Path | None = None) -> StartedProcess | None:
    """Write down that the workshop started ``pid``; None if it is already gone or the folder is not writable.

    A cache folder that cannot be written must not stop a service from starting: the process then is only
    left out of a later cleanup's record (and listed there as a look-alike to stop by hand).
    """
    try:
        started = StartedProcess(pid, psutil.Process(pid).create_time(), name, " ".join(argv))
    except psutil.Error:
        return None
    folder = folder or records_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{started.file_name}.{os.getpid()}.tmp"
        partial.write_text(json.dumps({**asdict(started), "recorded_by": os.getpid(), "recorded_at": time.time()}))
        partial.replace(folder / started.file_name)  # a reader never sees half a record
    except OSError:
        return None
    return started


def forget(started: StartedProcess, folder: Path | None = None) -> None:
    """Remove the record of ``started`` (it was stopped); nothing happens when there is none."""
    with contextlib.suppress(OSError):
        ((folder or records_folder()) / started.file_name).unlink(missing_ok=True)


def recorded(folder: Path | None = None) -> list[StartedProcess]:
    """The records whose process still runs, oldest first; the records of processes that are gone are deleted."""
    folder = folder or records_folder()
    alive = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            fields = json.loads(path.read_text())
            started = StartedProcess(int(fields["pid"]), float(fields["started_at"]), str(fields["name"]),
                                     str(fields["command"]))
        except FileNotFoundError:
            continue  # its process stopped and removed it meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()  # not a record this module wrote: it names no process to stop
            continue
        if started.process() is None:
            forget(started, folder)
        else:
            alive.append(started)
    return sorted(alive, key=lambda started: started.started_at)
