"""``python -m workshop dashboards [--check] [--out DIR]``: the Grafana dashboards of ``dashboards/``."""

from __future__ import annotations

import argparse
from pathlib import Path

from workshop.cli.generated import add_check, write_or_check
from workshop.observability.dashboards import dashboards_dir, generated_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_check(parser)
    parser.add_argument("--out", type=Path, default=None, help="folder to write to (default: dashboards/)")


def run(args: argparse.Namespace) -> int:
    return write_or_check(generated_files(args.out or dashboards_dir()), "dashboards", args.check)
