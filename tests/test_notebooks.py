"""The notebooks as files: parameters CI can override, checked outputs only, and no leaked services."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.test_process import wait_gone
from workshop.notebook_outputs import CHECK_TAG, keep_checked_outputs

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_every_step_of_the_workshop_has_its_notebook_in_order():
    assert [p.name for p in NOTEBOOKS] == [
        "00_setup.ipynb", "01_train.ipynb", "02_serve.ipynb", "03_containerise.ipynb", "04_deploy.ipynb",
        "05_monitor.ipynb", "06_load_test.ipynb", "07_llm_serving.ipynb", "08_close_the_loop.ipynb",
        "09_teardown.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_has_a_parameters_cell_with_a_local_target(path):
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters' for papermill"
    namespace: dict = {}
    exec(cells[0].source, namespace)  # parameters cells hold plain assignments
    assert namespace["target"] == "local"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_checked_cells_carry_outputs(path):
    """Learners open clean notebooks; nbval has the answers it compares against."""
    notebook = nbformat.read(path, as_version=4)
    checked = [c for c in notebook.cells if CHECK_TAG in c.metadata.get("tags", [])]
    assert checked, "at least one deterministic cell is checked by nbval"
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell not in checked:
            assert not cell.outputs, f"unchecked cell has stored outputs: {cell.source[:60]!r}"
    for cell in checked:
        assert cell.outputs, f"checked cell has no stored output to compare: {cell.source[:60]!r}"


def test_keep_checked_outputs_matches_cells_by_id():
    checked = new_code_cell("print(1)", metadata={"tags": [CHECK_TAG]})
    plain = new_code_cell("print(2)")
    source = new_notebook(cells=[checked, plain])
    executed = nbformat.from_dict(nbformat.v4.new_notebook(cells=[
        new_code_cell("injected = 1"),  # papermill inserts a parameters cell, shifting indices
        {**checked, "outputs": [nbformat.v4.new_output("stream", text="1\n")], "execution_count": 2},
        {**plain, "outputs": [nbformat.v4.new_output("stream", text="2\n")], "execution_count": 3},
    ]))
    result = keep_checked_outputs(source, executed)
    assert result.cells[0].outputs[0]["text"] == "1\n"
    assert result.cells[1].outputs == [] and result.cells[1].execution_count is None


@pytest.mark.slow
def test_a_failing_cell_does_not_leave_the_service_running(tmp_path, model_dir):
    """02_serve's promise: a cell that fails after the service started still stops it."""
    pid_file = tmp_path / "pid"
    cells = [
        new_code_cell("model_dir = None\npid_file = None", metadata={"tags": ["parameters"]}),
        new_code_cell("from workshop.targets import get_target\n"
                      "service = get_target('local').deploy_wine(model_dir)\n"
                      "open(pid_file, 'w').write(str(service.process.pid))"),
        new_code_cell("raise RuntimeError('a learner typo')"),
        new_code_cell("where.teardown()"),
    ]
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})
    nbformat.write(notebook, tmp_path / "serve.ipynb")
    with pytest.raises(papermill.PapermillExecutionError, match="a learner typo"):
        papermill.execute_notebook(
            str(tmp_path / "serve.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False,
            parameters={"model_dir": str(model_dir), "pid_file": str(pid_file)},
        )
    pid = int(pid_file.read_text())
    # An orphan that exited stays a zombie until whoever adopted it reaps it: gone or a zombie is gone.
    assert wait_gone(pid, timeout=60), f"the service (pid {pid}) outlived the failed notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_that_picks_a_target_takes_the_instructors_namespace(path):
    """``make workshop TARGET=kubernetes NAMESPACE=...`` must reach every notebook that deploys something."""
    notebook = nbformat.read(path, as_version=4)
    if not any("get_target(" in cell.source for cell in notebook.cells if cell.cell_type == "code"):
        return
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(parameters.source, namespace)
    assert namespace.get("namespace") == "wine-workshop"
    calls = [c.source for c in notebook.cells if c.cell_type == "code" and "get_target(target" in c.source]
    assert calls and all("namespace" in source for source in calls)
