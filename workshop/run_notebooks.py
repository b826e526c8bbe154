"""Run the workshop unattended: every notebook in order, with papermill.

``python -m workshop run-notebooks --target local --output build``

Both editions run (see ``workshop.editions``): the learner's, exercises left undone, into the output
folder, and the answer key, solutions filled in, into its ``answer-key/`` folder. Each executed
notebook and an HTML rendering of it land there. Every exercise's self-check must say "not done yet"
in the learner's edition and "done" in the answer key, or the run fails. Progress and the time each
notebook took are printed; the first failure stops the run, naming the notebook and the cell.

On the local target the two editions run at the same time, like two learners on one machine: each
starts its own services on free ports, and the answer key writes its model, load-test results, chat
models and image where the learner's edition does not (``EDITION_PATHS``). The teardown notebook stops
every workshop process on the machine, so it runs last, once both editions are done. On a cluster the
editions share the namespace, so they run one after the other.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from workshop.cleanup import ANSWER_KEY_WINE_IMAGE
from workshop.editions import ANSWER_KEY, EXPECTED_STATE, LEARNER, edition, unexpected_checks
from workshop.paths import numbered_notebooks


class LocalSocketKernelManager(AsyncKernelManager):
    """Kernels that talk over Unix sockets (ZeroMQ's ``ipc`` transport) in the user's Jupyter runtime folder,
    not over TCP ports that any local user could connect to; ipykernel warns about the latter, rightly.

    Each kernel's socket files get a name of their own: jupyter_client's default for ``ipc`` is ``kernel-ipc``
    in the current folder, where two runs at once (the two editions) would connect to each other's kernels.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("transport", "ipc")
        if kwargs["transport"] == "ipc":
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
            kwargs.setdefault("ip", str(runtime / f"workshop-kernel-{uuid.uuid4().hex}-ipc"))
        super().__init__(**kwargs)

    async def _async_interrupt_kernel(self) -> None:
        # jupyter_client sends SIGINT before every shutdown, in case a cell still runs. After a finished run none
        # does, and the signal only races the kernel's last reply (ipykernel then logs "KeyboardInterrupt caught
        # in kernel" as an ERROR). A stuck kernel still goes: the shutdown request is followed by a kill.
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


@dataclass
class NotebookRun:
    name: str
    seconds: float
    ok: bool
    output: Path
    html: Path
    error: str = ""


class NotebookFailedError(RuntimeError):
    def __init__(self, run: NotebookRun) -> None:
        super().__init__(run.error)
        self.run = run


# Notebooks that act on the whole machine (teardown stops every process the workshop started and removes the
# images): when the editions run at the same time, these run after both, one edition after the other.
MACHINE_WIDE = ("teardown",)
# Where the answer key keeps what a notebook writes, relative to its edition folder, when it runs beside the
# learner's edition: {notebook parameter: value}. A parameter goes only to the notebooks that declare it.
EDITION_PATHS = {
    "model_dir": "artifacts/wine",
    "results_dir": "load_test",
    "models_dir": "llm-models",
    "loop_dir": "artifacts/loop",
}


def discover(folder: Path, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order; ``only`` filters by name prefix."""
    notebooks = numbered_notebooks(folder)
    if only:
        notebooks = [p for p in notebooks if any(p.name.startswith(prefix) for prefix in only)]
    return notebooks


def failed_cell(output: Path) -> str:
    """Where the executed notebook stopped, numbered as in the source notebook (without the
    cell papermill injects for the parameters)."""
    notebook = nbformat.read(output, as_version=4)
    code_cells = [
        c for c in notebook.cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]
    for number, cell in enumerate(code_cells, start=1):
        for item in cell.get("outputs", []):
            if item.get("output_type") == "error":
                first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return f"code cell {number} (execution count {cell.get('execution_count')}): {first_line!r}"
    return "unknown cell"


def render_html(output: Path) -> Path:
    html, _ = HTMLExporter().from_filename(str(output))
    path = output.with_suffix(".html")
    path.write_text(html, encoding="utf-8")
    return path


def edition_folder(output_dir: Path, which: str) -> Path:
    """Where edition ``which`` lands: the learner's in ``output_dir`` itself, the answer key beside it."""
    return output_dir if which == LEARNER else output_dir / ANSWER_KEY


def run_notebook(notebook: Path, output_dir: Path, parameters: dict[str, Any], timeout: int,
                 which: str = ANSWER_KEY) -> NotebookRun:
    """Execute edition ``which`` of ``notebook`` into ``output_dir`` (the cwd is the notebook's own folder)."""
    output = output_dir / notebook.name
    started = time.perf_counter()
    error = ""
    try:
        # The kernel starts in the notebook's folder (nbclient's resources path), not through papermill's cwd=,
        # which changes the working folder of this whole process while the notebook runs: with two editions
        # at once, one edition's change back started the other's kernel in the wrong folder.
        papermill.execute_notebook(
            edition(nbformat.read(notebook, as_version=4), which), str(output), parameters=parameters,
            kernel_name="python3", progress_bar=False, execution_timeout=timeout,
            kernel_manager_class=LocalSocketKernelManager, resources={"metadata": {"path": str(notebook.parent)}},
        )
        if wrong := unexpected_checks(nbformat.read(output, as_version=4), which):
            error = (f"{notebook.name} ({which}): checks that did not say {EXPECTED_STATE[which]!r}: "
                     + "; ".join(wrong))
    except PapermillExecutionError as failure:
        error = f"{notebook.name} failed in {failed_cell(output)}: {failure.ename}: {failure.evalue}"
    except Exception as failure:  # noqa: BLE001 - a dead kernel or a cell timeout must still name the notebook
        error = f"{notebook.name} failed: {type(failure).__name__}: {failure}"
    seconds = time.perf_counter() - started
    html = render_html(output) if output.exists() else output.with_suffix(".html")
    run = NotebookRun(notebook.name, seconds, not error, output, html, error)
    if error:
        raise NotebookFailedError(run)
    return run


def run_all(
    notebooks: list[Path], output_dir: Path, parameters: dict[str, Any], timeout: int = 900, echo=print,
    editions: tuple[str, ...] = (ANSWER_KEY,), parallel: bool = False,
) -> list[NotebookRun]:
    """Every notebook of each edition, as a learner runs the workshop: one edition after the other, or, with
    ``parallel``, the editions at the same time (the machine-wide notebooks after both, in turn)."""
    output_dir = output_dir.resolve()
    if not parallel or len(editions) < 2:
        steps = [(which, notebook, parameters) for which in editions for notebook in notebooks]
        return _run_steps(steps, output_dir, timeout, echo, total=len(steps))
    with _threads_per_kernel(len(editions)):
        return _run_editions_together(notebooks, output_dir, parameters, timeout, echo, editions)


@contextlib.contextmanager
def _threads_per_kernel(kernels: int):
    """Share the cores among kernels that run at once: OpenMP (scikit-learn's gradient boosting, PyTorch) spins
    its threads between parallel regions, and two kernels each with a thread per core ran a 10-second training
    for minutes. One thread per kernel, or the user's own ``OMP_NUM_THREADS``, trains as fast here."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // kernels))
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


def _run_editions_together(notebooks: list[Path], output_dir: Path, parameters: dict[str, Any], timeout: int,
                           echo, editions: tuple[str, ...]) -> list[NotebookRun]:
    alone = [n for n in notebooks if any(word in n.stem for word in MACHINE_WIDE)]
    together = [n for n in notebooks if n not in alone]
    total = len(editions) * len(notebooks)
    counter = _Counter()
    tracks = [[(which, notebook, edition_parameters(notebook, which, parameters, output_dir))
               for notebook in together] for which in editions]
    results: list[list[NotebookRun]] = [[] for _ in tracks]
    failures: list[NotebookFailedError] = []
    stop = threading.Event()

    def run_track(index: int) -> None:
        try:
            results[index] = _run_steps(tracks[index], output_dir, timeout, echo, total, counter, stop)
        except NotebookFailedError as failure:
            failures.append(failure)
            stop.set()  # the other edition ends after the notebook it is running

    threads = [threading.Thread(target=run_track, args=(index,), name=f"edition-{which}")
               for index, which in enumerate(editions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    last = [(which, notebook, edition_parameters(notebook, which, parameters, output_dir))
            for notebook in alone for which in editions]
    return [run for track in results for run in track] + _run_steps(last, output_dir, timeout, echo, total, counter)


def edition_parameters(notebook: Path, which: str, parameters: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """``parameters``, plus, for the answer key beside the learner's edition, its own paths and image tag
    (:data:`EDITION_PATHS`) where ``notebook`` declares them and the caller did not set them."""
    if which == LEARNER:
        return parameters
    declared = papermill.inspect_notebook(str(notebook))
    folder = edition_folder(output_dir, which).resolve()
    own: dict[str, Any] = {name: str(folder / relative) for name, relative in EDITION_PATHS.items()}
    own["image_tag"] = ANSWER_KEY_WINE_IMAGE
    return {**{name: value for name, value in own.items() if name in declared}, **parameters}


class _Counter:
    """The step numbers of a run whose editions print their progress from two threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def next(self) -> int:
        with self._lock:
            self._count += 1
            return self._count


def _run_steps(steps: list[tuple[str, Path, dict[str, Any]]], output_dir: Path, timeout: int, echo, total: int,
               counter: _Counter | None = None, stop: threading.Event | None = None) -> list[NotebookRun]:
    counter = counter or _Counter()
    runs = []
    for which, notebook, parameters in steps:
        if stop is not None and stop.is_set():
            break
        folder = edition_folder(output_dir, which)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{notebook.name} ({which})"
        index = counter.next()
        echo(f"[{index}/{total}] {name} ...", flush=True)
        try:
            run = run_notebook(notebook, folder, parameters, timeout, which)
        except NotebookFailedError as failure:
            echo(f"[{index}/{total}] {name} FAILED after {failure.run.seconds:.1f} s", flush=True)
            raise
        echo(f"[{index}/{total}] {name} ok in {run.seconds:.1f} s -> {run.output}, {run.html.name}", flush=True)
        runs.append(run)
    return runs
