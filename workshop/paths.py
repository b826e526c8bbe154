"""Where things are, wherever a notebook or the CLI runs from."""

from __future__ import annotations

from pathlib import Path

PROJECT_NAME = 'name = "ml-serving-workshop"'


def project_root(start: Path | None = None) -> Path:
    """The folder with the project's pyproject.toml: searched upward from ``start`` (or the
    working directory, which is ``notebooks/`` in a notebook), then from this package."""
    for origin in (start or Path.cwd(), Path(__file__).resolve().parent):
        for folder in (origin.resolve(), *origin.resolve().parents):
            pyproject = folder / "pyproject.toml"
            if pyproject.is_file() and PROJECT_NAME in pyproject.read_text():
                return folder
    raise FileNotFoundError("Cannot find the workshop's pyproject.toml; run from inside the repository.")


def numbered_notebooks(folder: Path) -> list[Path]:
    """The workshop's notebooks in ``folder``, ``NN_name.ipynb``, in their order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))
