"""``python -m workshop k8s-dashboards [--check]``: ``k8s/monitoring/grafana-dashboards.yaml`` from ``dashboards/``."""

from __future__ import annotations

import argparse
import sys

from workshop.cli.generated import add_check, write_or_check
from workshop.observability.k8s_dashboards import MANIFEST_FILE, render
from workshop.paths import project_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_check(parser)


def run(args: argparse.Namespace) -> int:
    root = project_root()
    try:
        manifest = render(root)
    except ValueError as error:  # a dashboard that is not JSON (none at all: python -m workshop's path error)
        print(f"error: {error}", file=sys.stderr)
        return 1
    return write_or_check({root / MANIFEST_FILE: manifest}, "k8s-dashboards", args.check)
