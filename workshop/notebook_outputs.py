"""Keep in the committed notebooks only the outputs that nbval checks.

nbval (``--nbval-lax``) re-runs each notebook and compares the cells tagged
``nbval-check-output`` with the outputs stored in the notebook. So those
outputs, and only those, are committed: learners open clean notebooks, and CI
still has an answer to compare with.

``python -m workshop notebook-outputs build/*.ipynb`` copies the checked
outputs from executed notebooks back into ``notebooks/``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

CHECK_TAG = "nbval-check-output"


def is_checked(cell) -> bool:
    return CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def keep_checked_outputs(source: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``source`` with outputs only on checked cells, taken from ``executed`` (matched by cell id)."""
    executed_by_id = {cell.get("id"): cell for cell in executed.cells}
    for cell in source.cells:
        if cell.cell_type != "code":
            continue
        match = executed_by_id.get(cell.get("id"))
        if is_checked(cell) and match is not None:
            cell.outputs = match.get("outputs", [])
            cell.execution_count = match.get("execution_count")
        else:
            cell.outputs = []
            cell.execution_count = None
    return source


def refresh(executed_path: Path, notebooks_dir: Path) -> Path:
    source_path = notebooks_dir / executed_path.name
    source = nbformat.read(source_path, as_version=4)
    executed = nbformat.read(executed_path, as_version=4)
    nbformat.write(keep_checked_outputs(source, executed), source_path)
    return source_path
