"""The import contracts of pyproject.toml hold: imports run one way (workshop -> training -> app), the two
services share code only through app.common, and no package's modules import each other in a circle.

import-linter's ``lint-imports`` checks them; a broken contract fails here with its report, which names the
import chain to cut.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("app", "training", "workshop")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # installed with the dev extra, beside python


def test_the_import_contracts_hold() -> None:
    assert LINT_IMPORTS.is_file(), f"{LINT_IMPORTS} is missing: install the dev extra (pip install -e '.[dev]')"
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"an import contract is broken:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


def test_the_contracts_cover_the_layers_the_design_names() -> None:
    """Dropping a contract (or a package from it) would let its arrows turn unnoticed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {contract["id"]: contract for contract in config["contracts"]}
    assert contracts["layers"]["layers"] == ["workshop", "training", "app"]
    assert set(contracts["services"]["modules"]) == {"app.wine", "app.llm"}
    assert contracts["common"]["source_modules"] == ["app.common"]
    assert set(contracts["acyclic"]["ancestors"]) == set(config["root_packages"]) == {"app", "training", "workshop"}


def _source_of(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    return next((p for p in (path / "__init__.py", path.with_suffix(".py")) if p.is_file()), None)


def _top_level_names(module: str) -> set[str]:
    """What ``from module import X`` finds without running it: its definitions, imports and submodules."""
    source = _source_of(module)
    names: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if source.name == "__init__.py":
        names |= {p.stem for p in source.parent.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    return names


def _notebook_imports() -> list[tuple[str, str, str]]:
    """(notebook, module, name) of every ``from <project package> import name`` in the notebooks' code cells."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROJECT_PACKAGES:
                    found += [(path.name, node.module, alias.name) for alias in node.names]
    return found


def test_every_name_a_notebook_imports_is_where_it_imports_it_from() -> None:
    """Moving a class into a module of its own must leave it importable where the notebooks (a learner's
    copy among them) import it from: ``from workshop.targets import RolloutFailedError`` and the like."""
    imports = _notebook_imports()
    if not imports:
        pytest.fail("no project imports found in notebooks/*.ipynb: the notebooks moved?")
    missing = [f"{notebook}: from {module} import {name}" for notebook, module, name in imports
               if _source_of(module) is None or name not in _top_level_names(module)]
    assert not missing, "names the notebooks import are gone:\n" + "\n".join(missing)
