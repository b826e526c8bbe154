"""The exercises as the notebooks hold them, and the two editions made from them."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tests.conftest import PROJECT_ROOT
from workshop.editions import (
    ANSWER_KEY,
    CHECK_TAG,
    EXERCISE_TAG,
    LEARNER,
    SOLUTION_TAG,
    edition,
    exercise_titles,
    tags,
    write_learner_notebooks,
)
from workshop.run_notebooks import NotebookFailedError, discover, run_all

NOTEBOOKS = PROJECT_ROOT / "notebooks"
WITH_EXERCISES = [p for p in discover(NOTEBOOKS) if "01" <= p.name[:2] <= "07"]


def exercises(notebook: nbformat.NotebookNode) -> list[list[nbformat.NotebookNode]]:
    """Each exercise: its markdown cell and the cells after it, up to and with its check."""
    groups: list[list[nbformat.NotebookNode]] = []
    open_group = False
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("**Exercise"):
            groups.append([cell])
            open_group = True
        elif open_group:
            groups[-1].append(cell)
            open_group = CHECK_TAG not in tags(cell)
    return groups


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.name)
def test_every_notebook_from_01_to_07_has_both_kinds_of_exercise_each_with_a_solution_and_a_check(path):
    notebook = nbformat.read(path, as_version=4)
    groups = exercises(notebook)
    titles = exercise_titles(notebook)
    assert len(titles) >= 2 and len(groups) == len(titles)
    assert any("predict, then run" in t for t in titles) and any("· do." in t for t in titles), titles
    for number, group in enumerate(groups, start=1):
        assert group[0].source.startswith(f"**Exercise {number} ·"), "numbered in order"
        kinds = [tags(cell) for cell in group[1:]]
        flat = [t for k in kinds for t in k]
        assert flat.count(EXERCISE_TAG) == 1 and flat.count(SOLUTION_TAG) == 1 and flat.count(CHECK_TAG) == 1, \
            f"{titles[number - 1]}: one learner's cell, one solution, one check ({kinds})"
        assert flat.index(EXERCISE_TAG) < flat.index(SOLUTION_TAG) < flat.index(CHECK_TAG)
        learner_cell = next(c for c in group if EXERCISE_TAG in tags(c))
        assert "None" in learner_cell.source, "the learner's cell leaves the answer as None: the check says so"
        check = next(c for c in group if CHECK_TAG in tags(c))
        assert "check_" in check.source, "a check calls a function of workshop.exercises"
        assert all(not c.get("outputs") for c in group if SOLUTION_TAG in tags(c) or EXERCISE_TAG in tags(c))


def test_the_learners_edition_lacks_only_the_solutions_and_the_source_is_untouched():
    for path in WITH_EXERCISES:
        source = nbformat.read(path, as_version=4)
        before = nbformat.writes(source)
        learner, key = edition(source, LEARNER), edition(source, ANSWER_KEY)
        assert nbformat.writes(source) == before
        kept = [c.source for c in source.cells if SOLUTION_TAG not in tags(c)]
        assert [c.source for c in learner.cells] == kept
        assert [c.source for c in key.cells] == [c.source for c in source.cells]
        assert learner.metadata["workshop_edition"] == LEARNER
    with pytest.raises(ValueError, match="unknown edition"):
        edition(source, "teacher")


def test_lab_gets_the_learners_edition_once_and_keeps_the_learners_work(tmp_path):
    lab = tmp_path / "lab"
    written = write_learner_notebooks(NOTEBOOKS, lab)
    assert [p.name for p in written] == [p.name for p in discover(NOTEBOOKS)]
    train = nbformat.read(lab / "01_train.ipynb", as_version=4)
    assert not any(SOLUTION_TAG in tags(c) for c in train.cells)
    assert all(not c.outputs for c in train.cells if c.cell_type == "code"), "a fresh copy has no outputs"
    mine = lab / "01_train.ipynb"
    mine.write_text(mine.read_text().replace("predicted_choice = None", "predicted_choice = 'linear'"))
    assert write_learner_notebooks(NOTEBOOKS, lab) == []
    assert "predicted_choice = 'linear'" in mine.read_text()


def exercise_notebook(path, solution_source):
    cells = [
        new_code_cell("target = 'local'", metadata={"tags": ["parameters"]}),
        new_code_cell("from workshop.exercises import check_prediction"),
        new_markdown_cell("**Exercise 1 · predict, then run.** What is 6 × 7?"),
        new_code_cell("answer = None", metadata={"tags": [EXERCISE_TAG]}),
        new_code_cell(solution_source, metadata={"tags": [SOLUTION_TAG]}),
        new_code_cell("print(check_prediction(answer, 6 * 7, variable='answer', explanation='Arithmetic.'))",
                      metadata={"tags": [CHECK_TAG]}),
    ]
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), path)


@pytest.mark.slow
def test_both_editions_run_and_each_checks_says_what_its_edition_must(tmp_path):
    source = tmp_path / "notebooks"
    source.mkdir()
    exercise_notebook(source / "01_sums.ipynb", "answer = 42")
    runs = run_all(discover(source), tmp_path / "build", {}, echo=lambda *a, **k: None,
                   editions=(LEARNER, ANSWER_KEY))
    assert [run.output.relative_to(tmp_path / "build").as_posix() for run in runs] == [
        "01_sums.ipynb", "answer-key/01_sums.ipynb"]
    learner, key = (nbformat.read(run.output, as_version=4) for run in runs)
    assert "not done yet" in learner.cells[-1].outputs[0]["text"]
    assert "✓ done" in key.cells[-1].outputs[0]["text"]


@pytest.mark.slow
def test_an_answer_key_whose_check_fails_fails_the_run(tmp_path):
    source = tmp_path / "notebooks"
    source.mkdir()
    exercise_notebook(source / "01_sums.ipynb", "answer = 41")
    run_all(discover(source), tmp_path / "build", {}, echo=lambda *a, **k: None, editions=(LEARNER,))
    with pytest.raises(NotebookFailedError, match=r"01_sums.ipynb \(answer-key\): checks that did not say 'done'"
                                                  r".*you predicted 41, but it was 42"):
        run_all(discover(source), tmp_path / "build", {}, echo=lambda *a, **k: None, editions=(ANSWER_KEY,))
