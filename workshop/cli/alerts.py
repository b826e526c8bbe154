"""``python -m workshop alerts [--check]``: the rules files and PrometheusRule manifests of every service."""

from __future__ import annotations

import argparse

from workshop.cli.generated import add_check, write_or_check
from workshop.observability.alerts import generated_files
from workshop.paths import project_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_check(parser)


def run(args: argparse.Namespace) -> int:
    return write_or_check(generated_files(project_root()), "alerts", args.check)
