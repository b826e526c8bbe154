"""make install takes torch's CPU build from PyTorch's CPU index where it answers, and moves on quickly where not.

The index cannot be reached from here, so the tests put a stand-in in its place on 127.0.0.1: a port that
refuses connections, and one that accepts them and never answers. Either way the install must carry on
with one line that says what happened, after about the timeout, not after pip's default retries (5 tries
of 15 s each).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from workshop.container import TORCH_CPU_INDEX, pinned_version

SCRIPT = PROJECT_ROOT / "scripts" / "install-cpu-torch.py"


def _script_module():
    spec = importlib.util.spec_from_file_location("install_cpu_torch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(index_url: str, tmp_path: Path, timeout_s: float = 2) -> tuple[subprocess.CompletedProcess, float]:
    """The script as make runs it, with pip's own configuration set aside and nothing installed yet (--target)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_TARGET=str(tmp_path / "target"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT), "--index-url", index_url, "--timeout", f"{timeout_s:g}"],
                          capture_output=True, text=True, env=env, timeout=120)
    return done, time.monotonic() - started


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU index is tried on Linux only")
def test_an_index_that_refuses_connections_costs_one_line_and_the_install_goes_on(tmp_path):
    done, took = _run(f"http://127.0.0.1:{_closed_port()}/whl/cpu", tmp_path)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("torch: nothing from http://127.0.0.1:") and "pip's default index" in line
    assert "Connection refused" in line, "pip's reason, which it gives only when asked for -vv"
    assert not (tmp_path / "target").exists() or not list((tmp_path / "target").glob("torch*"))
    assert took < 30


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU index is tried on Linux only")
def test_an_index_that_never_answers_costs_about_the_timeout_not_pips_retries(tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing is ever read or answered
        port = silent.getsockname()[1]
        done, took = _run(f"http://127.0.0.1:{port}/whl/cpu", tmp_path, timeout_s=2)
    assert done.returncode == 0, done.stderr
    assert re.match(r"torch: nothing from http://127\.0\.0\.1:\d+/whl/cpu after \d+ s "
                    r"\(127\.0\.0\.1 didn.t respond within 2\.0 seconds\)", done.stdout), done.stdout
    # pip's defaults (15 s, 5 retries) would take over a minute; one try of 2 s plus pip's start is far less.
    assert took < 25, f"{took:.0f} s"


def test_the_script_installs_the_version_constraints_txt_pins():
    assert _script_module().pinned_torch() == pinned_version("torch")


def test_which_build_a_torch_is_is_read_from_its_metadata():
    build_of = _script_module().build_of
    assert build_of("2.13.0+cpu", []) == "the CPU build"
    pypi_linux = ["filelock", 'cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"',
                  'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"']  # PyPI's torch 2.13.0 for Linux
    assert build_of("2.13.0", pypi_linux) == "a CUDA build"
    assert build_of("2.13.0", ["filelock", "nvidia-cublas-cu12==12.8.4.1"]) == "a CUDA build"
    assert build_of("2.13.0", ["filelock", "sympy>=1.13.3"]) == "the CPU build"  # macOS' wheels
    installed = importlib.metadata.distribution("torch")
    assert build_of(installed.version, installed.requires or []) == "the CPU build", "this venv has CPU torch"


def test_elsewhere_than_linux_pypis_torch_is_left_to_the_projects_install(monkeypatch, capsys):
    module = _script_module()
    monkeypatch.setattr(sys, "platform", "darwin")
    assert module.main([]) == 0
    assert capsys.readouterr().out == "torch: on darwin PyPI's torch is the CPU build; the project's install takes " \
                                      "it from there\n"


def test_make_install_runs_it_from_the_cpu_index_before_the_projects_install():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("$(STAMP): pyproject.toml constraints.txt"):].split("\n\n")[0].splitlines()
    torch = next(i for i, line in enumerate(recipe) if "scripts/install-cpu-torch.py" in line)
    project = next(i for i, line in enumerate(recipe) if '-e ".[' in line)
    assert torch < project
    assert '--index-url "$(TORCH_INDEX_URL)"' in recipe[torch]
    assert f"TORCH_INDEX_URL ?= {TORCH_CPU_INDEX}" in makefile
    assert re.search(r"^TORCH_INDEX_TIMEOUT_S \?= \d+$", makefile, flags=re.MULTILINE)
