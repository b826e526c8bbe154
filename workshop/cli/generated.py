"""The one command-line shape every generator has: write its files, or ``--check`` them (exit 1 naming each stale one).

The files and their text come from the library (:mod:`workshop.observability.generated`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from workshop.observability import generated


def add_check(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")


def write_or_check(files: Mapping[Path, str], command: str, check: bool) -> int:
    """Write ``files``, or with ``check`` exit 1 naming each stale one and the command that regenerates it."""
    if check:
        outdated = generated.stale(files)
        for path in outdated:
            print(f"{path} is stale: run python -m workshop {command}", file=sys.stderr)
        return 1 if outdated else 0
    for path in generated.write(files):
        print(f"wrote {path}")
    return 0
