"""The unattended runner: order, outputs, timings, and a failure that names notebook and cell."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workshop.__main__ import main
from workshop.cli.run_notebooks import parse_value
from workshop.run_notebooks import NotebookFailedError, discover, run_all

pytestmark = pytest.mark.slow


def write_notebook(path, *sources, parameters="target = 'local'"):
    cells = [new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(source) for source in sources]
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})
    nbformat.write(notebook, path)
    return path


def test_runs_in_order_with_parameters_and_writes_notebooks_and_html(tmp_path):
    source = tmp_path / "notebooks"
    source.mkdir()
    write_notebook(source / "01_second.ipynb", "open('order.txt', 'a').write('01,')")
    write_notebook(source / "00_first.ipynb", "open('order.txt', 'a').write(f'00:{target},')")
    write_notebook(source / "helper.ipynb", "raise RuntimeError('not a numbered notebook')")
    messages = []
    echo = lambda message, **_: messages.append(message)  # noqa: E731
    runs = run_all(discover(source), tmp_path / "build", {"target": "kubernetes"}, echo=echo)
    assert (source / "order.txt").read_text() == "00:kubernetes,01,"  # cwd is the notebooks folder
    assert [run.name for run in runs] == ["00_first.ipynb", "01_second.ipynb"]
    for run in runs:
        assert run.output.is_file() and run.html.is_file() and run.seconds > 0
        assert "<html" in run.html.read_text().lower()
    assert messages[0] == "[1/2] 00_first.ipynb (answer-key) ..."
    assert messages[1].startswith("[1/2] 00_first.ipynb (answer-key) ok in ")


def test_a_failing_cell_is_named_and_stops_the_run(tmp_path, capsys):
    source = tmp_path / "notebooks"
    source.mkdir()
    write_notebook(source / "00_ok.ipynb", "x = 1")
    write_notebook(source / "01_broken.ipynb", "y = 2", "raise ValueError('the model file is corrupt')")
    write_notebook(source / "02_never.ipynb", "open('ran.txt', 'w').write('yes')")
    assert main(["run-notebooks", "--notebooks", str(source), "--output", str(tmp_path / "build")]) == 1
    stderr = capsys.readouterr().err
    assert "01_broken.ipynb failed in code cell 3" in stderr
    assert "raise ValueError('the model file is corrupt')" in stderr
    assert "ValueError: the model file is corrupt" in stderr
    rendered = Path(stderr.split("rendered: ")[1].split()[0])  # whichever edition failed first
    assert rendered.name == "01_broken.html" and rendered.is_file()
    assert not (source / "ran.txt").exists()


def test_failure_is_an_exception_for_callers(tmp_path):
    source = tmp_path / "nb"
    source.mkdir()
    write_notebook(source / "00_x.ipynb", "1 / 0")
    with pytest.raises(NotebookFailedError, match="ZeroDivisionError"):
        run_all(discover(source), tmp_path / "out", {}, echo=lambda *a, **k: None)


def test_no_notebooks_is_an_error(tmp_path, capsys):
    assert main(["run-notebooks", "--notebooks", str(tmp_path)]) == 2
    assert "no notebooks" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "value"), [("8080", 8080), ("0.5", 0.5), ("true", True), ("None", None),
                                             ("/srv/wine", "/srv/wine")])
def test_parameter_values_are_typed(text, value):
    assert parse_value(text) == value


def test_a_finished_kernel_is_shut_down_without_an_interrupt_and_over_unix_sockets():
    """No SIGINT races the kernel's last reply (ipykernel would log an ERROR in every unattended run)."""
    import asyncio
    import signal

    from jupyter_core.paths import jupyter_runtime_dir

    from workshop.run_notebooks import LocalSocketKernelManager

    async def scenario() -> list[int]:
        manager = LocalSocketKernelManager(kernel_name="python3")
        sent: list[int] = []
        deliver = manager._async_signal_kernel

        async def recording(signum: int) -> None:
            sent.append(signum)
            await deliver(signum)

        manager._async_signal_kernel = recording
        await manager.start_kernel()
        assert manager.transport == "ipc"
        # its sockets are its own, in the runtime folder, not a shared "kernel-ipc" in the current folder
        assert Path(manager.ip).parent == Path(jupyter_runtime_dir())
        assert manager.ip != LocalSocketKernelManager(kernel_name="python3").ip
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        client.stop_channels()
        await manager.interrupt_kernel()  # an interrupt asked for outside a shutdown still goes through
        await manager.shutdown_kernel()
        assert not await manager.is_alive()
        return sent

    assert asyncio.run(scenario()) == [signal.SIGINT]


def test_editions_run_at_the_same_time_each_with_its_own_paths_and_the_teardown_after_both(tmp_path):
    """Two learners on one machine: the answer key writes where the learner's edition does not, both run at
    once, and the notebook that cleans the whole machine starts only when both are done."""
    source = tmp_path / "notebooks"
    source.mkdir()
    log = tmp_path / "log.txt"
    record = (f"import os, time\nwith open({str(log)!r}, 'a') as f:\n"
              "    f.write(f'{name} {time.time()} {globals().get(\"model_dir\", \"undeclared\")} '\n"
              "            f'{os.environ.get(\"OMP_NUM_THREADS\")} {os.getcwd()}\\n')")
    write_notebook(source / "01_train.ipynb", "import time; time.sleep(2)", record,
                   parameters="name = 'train'\nmodel_dir = '../artifacts/wine'")
    write_notebook(source / "08_teardown.ipynb", record, parameters="name = 'teardown'")
    runs = run_all(discover(source), tmp_path / "build", {}, echo=lambda *a, **k: None,
                   editions=("learner", "answer-key"), parallel=True)
    assert sorted(run.output.relative_to(tmp_path / "build").as_posix() for run in runs) == [
        "01_train.ipynb", "08_teardown.ipynb", "answer-key/01_train.ipynb", "answer-key/08_teardown.ipynb"]
    rows = [line.split() for line in log.read_text().splitlines()]
    trains = {row[2]: float(row[1]) for row in rows if row[0] == "train"}
    answer_key_model = str((tmp_path / "build" / "answer-key" / "artifacts" / "wine").resolve())
    assert sorted(trains) == sorted(["../artifacts/wine", answer_key_model])
    assert abs(trains["../artifacts/wine"] - trains[answer_key_model]) < 2, "the two trainings overlapped"
    assert {row[3] for row in rows if row[0] == "train"} == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert {row[4] for row in rows} == {str(source)}, "every kernel starts in the notebooks' folder"
    teardowns = [row for row in rows if row[0] == "teardown"]
    assert len(teardowns) == 2 and min(float(row[1]) for row in teardowns) > max(trains.values())
    assert {row[2] for row in teardowns} == {"undeclared"}, "a notebook gets only the paths it declares"
    assert "OMP_NUM_THREADS" not in os.environ, "the kernels' thread count is not left behind"
