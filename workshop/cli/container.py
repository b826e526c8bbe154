"""``python -m workshop container wheelhouse [--dest DIR] [--index-url URL]`` (``make wheelhouse``).

Torch's CPU wheel, the version ``constraints.txt`` pins, for building the llm image without PyTorch's index.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workshop.container import TORCH_CPU_INDEX, WHEELHOUSE_DIR, ContainerError, fill_wheelhouse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="container_command", metavar="ACTION", required=True)
    fill = actions.add_parser("wheelhouse", help="download torch's CPU wheel (the pinned version) into a folder")
    fill.add_argument("--dest", type=Path, default=WHEELHOUSE_DIR, help=f"default: {WHEELHOUSE_DIR}")
    fill.add_argument("--index-url", default=TORCH_CPU_INDEX,
                      help="the index tried first (empty: only pip's default index)")


def run(args: argparse.Namespace) -> int:
    try:
        fill_wheelhouse(args.dest, index_url=args.index_url or None)
    except ContainerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
