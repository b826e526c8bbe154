"""The unattended runner: order, outputs, timings, and a failure that names notebook and cell."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workshop.run_notebooks import NotebookFailedError, discover, main, parse_value, run_all

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
    assert main(["--notebooks", str(source), "--output", str(tmp_path / "build")]) == 1
    stderr = capsys.readouterr().err
    assert "01_broken.ipynb failed in code cell 3" in stderr
    assert "raise ValueError('the model file is corrupt')" in stderr
    assert "ValueError: the model file is corrupt" in stderr
    assert (tmp_path / "build" / "01_broken.html").is_file()
    assert not (source / "ran.txt").exists()


def test_failure_is_an_exception_for_callers(tmp_path):
    source = tmp_path / "nb"
    source.mkdir()
    write_notebook(source / "00_x.ipynb", "1 / 0")
    with pytest.raises(NotebookFailedError, match="ZeroDivisionError"):
        run_all(discover(source), tmp_path / "out", {}, echo=lambda *a, **k: None)


def test_no_notebooks_is_an_error(tmp_path, capsys):
    assert main(["--notebooks", str(tmp_path)]) == 2
    assert "no notebooks" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "value"), [("8080", 8080), ("0.5", 0.5), ("true", True), ("None", None),
                                             ("/srv/wine", "/srv/wine")])
def test_parameter_values_are_typed(text, value):
    assert parse_value(text) == value


def test_a_finished_kernel_is_shut_down_without_an_interrupt_and_over_unix_sockets():
    """No SIGINT races the kernel's last reply (ipykernel would log an ERROR in every unattended run)."""
    import asyncio
    import signal

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
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        client.stop_channels()
        await manager.interrupt_kernel()  # an interrupt asked for outside a shutdown still goes through
        await manager.shutdown_kernel()
        assert not await manager.is_alive()
        return sent

    assert asyncio.run(scenario()) == [signal.SIGINT]
