"""The two editions of every notebook: the learner's (exercises to do) and the answer key (solutions in).

The notebooks in ``notebooks/`` are the instructors' sources. Each exercise there is a markdown cell whose
first line begins "**Exercise**", the learner's cell (tagged ``exercise``, a placeholder), the solution
(tagged ``solution``) and a self-check (tagged ``check``) that prints a :class:`workshop.exercises.Verdict`.

* the **learner's edition** is the source without its ``solution`` cells, removed by nbconvert's
  ``TagRemovePreprocessor``: every check then says "not done yet" and the notebook still runs to the end;
* the **answer key** is the source as it is: executed, every check says "done".

``make lab`` (``python -m workshop editions``) writes the learner's edition into ``lab/`` (never over a
notebook already there: that is the learner's work), and ``workshop.run_notebooks`` executes either edition
and verifies its checks.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbconvert.preprocessors import TagRemovePreprocessor

from workshop.exercises import DONE, NOT_DONE, verdict_state
from workshop.paths import numbered_notebooks

EXERCISE_TAG, SOLUTION_TAG, CHECK_TAG = "exercise", "solution", "check"
LEARNER, ANSWER_KEY = "learner", "answer-key"
EDITIONS = (LEARNER, ANSWER_KEY)
# What every check of an executed edition must print: the learner has done nothing, the key everything.
EXPECTED_STATE = {LEARNER: NOT_DONE, ANSWER_KEY: DONE}


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def edition(notebook: nbformat.NotebookNode, which: str) -> nbformat.NotebookNode:
    """A copy of ``notebook`` as edition ``which`` (the source is never changed)."""
    if which not in EDITIONS:
        raise ValueError(f"unknown edition {which!r}: choose one of {', '.join(EDITIONS)}")
    result = copy.deepcopy(notebook)
    if which == LEARNER:
        result, _ = TagRemovePreprocessor(remove_cell_tags={SOLUTION_TAG}).preprocess(result, {})
    result.metadata["workshop_edition"] = which
    return result


def write_learner_notebooks(source: Path, destination: Path) -> list[Path]:
    """The learner's edition of every ``NN_*.ipynb`` in ``source`` into ``destination``, outputs cleared;
    a notebook already in ``destination`` is the learner's work and stays. Returns the notebooks written."""
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for path in numbered_notebooks(source):
        target = destination / path.name
        if target.exists():
            continue
        notebook = edition(nbformat.read(path, as_version=4), LEARNER)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(notebook, target)
        written.append(target)
    return written


def exercise_titles(notebook: nbformat.NotebookNode) -> list[str]:
    """The first line of every exercise's markdown cell, in order."""
    return [cell.source.splitlines()[0] for cell in notebook.cells
            if cell.cell_type == "markdown" and cell.source.startswith("**Exercise")]


def check_results(executed: nbformat.NotebookNode) -> list[tuple[int, str | None, str]]:
    """(cell number, verdict state, what it printed) for every ``check`` cell of an executed notebook."""
    results = []
    for number, cell in enumerate(executed.cells, start=1):
        if CHECK_TAG in tags(cell):
            text = "".join(output.get("text", "") or output.get("data", {}).get("text/plain", "")
                           for output in cell.get("outputs", []))
            results.append((number, verdict_state(text), text.strip()))
    return results


def unexpected_checks(executed: nbformat.NotebookNode, which: str) -> list[str]:
    """The checks of an executed edition that did not say what that edition must say (empty: all did)."""
    expected = EXPECTED_STATE[which]
    return [f"cell {number}: {text or 'printed nothing'}" for number, state, text in check_results(executed)
            if state != expected]
