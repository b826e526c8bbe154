"""The workshop's one command line, ``python -m workshop COMMAND``: every command listed and parsed, and
only the command-line modules parse command lines (the library is called, never run)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workshop.__main__ import COMMANDS, main

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKSHOP = PROJECT_ROOT / "workshop"
CLI = WORKSHOP / "cli"
HELPERS = {"__init__", "generated"}  # workshop/cli modules that are not a command
# The module forms these commands had before: ``python -m workshop.<module>`` runs nothing any more.
OLD_FORM = re.compile(r"""-m[\s"',]+workshop\.(container|editions|loadtest|notebook_outputs|run_notebooks"""
                      r"""|tiny_llm|chat_model|observability)""")


def test_help_lists_every_command_with_its_one_line_help():
    done = subprocess.run([sys.executable, "-m", "workshop", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    listed = " ".join(done.stdout.split())  # argparse wraps long help lines
    for name, help_text in COMMANDS.items():
        assert re.search(rf"^    {re.escape(name)}\b", done.stdout, flags=re.MULTILINE), name
        assert " ".join(help_text.split()) in listed, name


def test_an_unknown_command_exits_2_with_argparses_message(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(["no-such-command"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "python -m workshop: error: argument COMMAND: invalid choice: 'no-such-command'" in err


def test_a_missing_command_exits_2_too(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_its_module_and_its_own_help(name: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main([name, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m workshop {name} ")


def test_every_command_module_is_a_command():
    modules = {path.stem for path in CLI.glob("*.py")} - HELPERS
    assert modules == {name.replace("-", "_") for name in COMMANDS}


def _parses_command_lines(path: Path) -> list[str]:
    """What in ``path`` belongs to a command line: an argparse import, an ``if __name__ == "__main__"`` block."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import) and any(alias.name == "argparse" for alias in node.names):
            found.append(f"line {node.lineno}: import argparse")
        elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
            found.append(f"line {node.lineno}: from argparse import ...")
        elif (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
              and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
            found.append(f"line {node.lineno}: if __name__ == ...")
    return found


def test_only_the_command_line_modules_parse_command_lines():
    """The library's modules are imported by notebooks, tests and the commands; only ``workshop/__main__.py``
    and ``workshop/cli/`` have options to parse and a ``__main__`` block."""
    command_line = {WORKSHOP / "__main__.py", *CLI.rglob("*.py")}
    offenders = {str(path.relative_to(PROJECT_ROOT)): found for path in sorted(WORKSHOP.rglob("*.py"))
                 if path not in command_line and (found := _parses_command_lines(path))}
    assert not offenders, f"move the command line into workshop/cli/: {offenders}"
    assert _parses_command_lines(WORKSHOP / "__main__.py"), "the check finds what it looks for"


def test_the_makefile_runs_only_commands_that_exist():
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    used = re.findall(r"-m workshop ([a-z0-9-]+)", makefile)
    assert used and set(used) <= set(COMMANDS), sorted(set(used) - set(COMMANDS))


def test_nothing_runs_the_old_module_forms():
    places = [PROJECT_ROOT / name for name in ("Makefile", "README.md", "environment.yml")]
    for folder in ("workshop", "app", "tests", "benchmarks", "scripts", "docs", "k8s", "dashboards", "load_tests",
                   "notebooks", ".github", ".ci"):
        places += [path for path in (PROJECT_ROOT / folder).rglob("*") if path.is_file()
                   and path.suffix in {".py", ".md", ".yml", ".yaml", ".ipynb", ".sh", ""}]
    stale = [f"{path.relative_to(PROJECT_ROOT)}: {match[0]}" for path in places if path.is_file()
             for match in OLD_FORM.finditer(path.read_text(encoding="utf-8", errors="replace"))]
    assert not stale, stale


def test_a_path_that_cannot_be_used_is_a_message_not_a_traceback(tmp_path, capsys: pytest.CaptureFixture[str]):
    missing = tmp_path / "no-such.ipynb"
    assert main(["notebook-outputs", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m workshop notebook-outputs: error: ") and missing.name in err
    assert "Traceback" not in err
    assert main(["editions", "--notebooks", str(tmp_path), "--output", str(tmp_path / "lab")]) == 2
    assert f"no notebooks matching NN_*.ipynb in {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "lab").exists(), "nothing written"
