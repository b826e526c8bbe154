"""``python -m workshop notebook-outputs build/*.ipynb`` (``make refresh-notebooks``): the outputs nbval checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from workshop.notebook_outputs import refresh


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("executed", nargs="+", type=Path, help="executed notebooks (e.g. build/*.ipynb)")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"))


def run(args: argparse.Namespace) -> int:
    for path in args.executed:
        print(f"refreshed {refresh(path, args.notebooks)}")
    return 0
