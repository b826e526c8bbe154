"""The service stays lean: serving imports none of the training or notebook libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pandas", "sklearn", "skl2onnx", "matplotlib", "papermill", "locust")


def test_the_service_imports_no_training_or_notebook_library(tmp_path):
    """The image installs only the base dependencies; importing the app must not need the others."""
    probe = (
        "import sys; import app.wine.api; "
        f"print(','.join(name for name in {HEAVY!r} if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60,
        env={"WINE_MODEL_DIR": str(tmp_path), "PATH": "", "HOME": str(tmp_path)},
    )
    assert result.stdout.strip() == "", f"the service imported {result.stdout.strip()}"
