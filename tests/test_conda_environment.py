"""environment.yml (the conda path) installs what the Makefile's venv installs: pyproject.toml is the one list.

conda itself cannot run here (conda-forge is out of reach), so what is checked is that the file cannot drift:
it installs the project with every extra, at constraints.txt's versions, on the Python the project supports,
and lists no package of its own.
"""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import PROJECT_ROOT
from workshop.container import TORCH_CPU_INDEX

ENVIRONMENT = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
MAKEFILE = (PROJECT_ROOT / "Makefile").read_text()
EDITABLE = re.compile(r'-e\s+"?\.\[([a-z0-9_,-]+)\]"?')


def _conda_and_pip() -> tuple[list[str], list[str]]:
    conda, pip = [], []
    for entry in ENVIRONMENT["dependencies"]:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"only a pip section may follow the conda packages: {entry}"
            pip += entry["pip"]
        else:
            conda.append(str(entry))
    return conda, pip


def _makefile_extras() -> set[str]:
    (install,) = [line for line in MAKEFILE.splitlines() if "pip install" in line and EDITABLE.search(line)]
    return set(EDITABLE.search(install)[1].split(","))


def test_conda_provides_only_python_and_pip_the_package_list_is_pyprojects():
    conda, _ = _conda_and_pip()
    assert sorted(name.split("=")[0] for name in conda) == ["pip", "python"], conda


def test_it_installs_the_project_with_every_extra_the_makefile_installs():
    _, pip = _conda_and_pip()
    editable = [EDITABLE.fullmatch(line) for line in pip if line.startswith("-e")]
    assert len(editable) == 1 and editable[0], f"one `-e .[extras]` line: {pip}"
    extras = set(editable[0][1].split(","))
    assert extras == set(PYPROJECT["project"]["optional-dependencies"]), "every extra of pyproject.toml"
    assert extras == _makefile_extras()
    assert "llm" in extras, "notebook 07 and the LLM tests need the llm extra"


def test_it_installs_at_the_versions_constraints_txt_pins():
    _, pip = _conda_and_pip()
    assert "-c constraints.txt" in pip
    assert "-c constraints.txt" in MAKEFILE


def test_its_python_is_the_lowest_the_project_supports_and_the_one_ci_runs():
    conda, _ = _conda_and_pip()
    (python,) = [name for name in conda if name.startswith("python=")]
    version = python.removeprefix("python=")
    assert PYPROJECT["project"]["requires-python"] == f">={version}"
    ci = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    pythons = {step["with"]["python-version"] for job in ci["jobs"].values() for step in job["steps"]
               if step.get("uses", "").startswith("actions/setup-python@")}
    assert pythons == {version}


def test_any_other_pip_line_is_pytorchs_cpu_index_the_makefile_uses_too():
    _, pip = _conda_and_pip()
    others = [line for line in pip if not line.startswith(("-e", "-c "))]
    assert others == [f"--extra-index-url {TORCH_CPU_INDEX}"], others
    assert f"TORCH_INDEX_URL ?= {TORCH_CPU_INDEX}" in MAKEFILE
