"""``python -m workshop run-notebooks --target local --output build`` (``make workshop``): the notebooks, unattended.

The runner is :mod:`workshop.run_notebooks`; here are its options, the ``-p NAME VALUE`` parameters typed
(:func:`parse_value`), and the exit status: 1 naming the notebook and cell that failed, 2 when no notebook matches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from workshop.editions import EDITIONS
from workshop.paths import project_root
from workshop.run_notebooks import NotebookFailedError, discover, run_all
from workshop.targets import TARGETS


def parse_value(text: str) -> Any:
    """``-p name value`` values: numbers and true/false/none are typed, the rest stay strings."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    root = project_root()
    parser.add_argument("--target", choices=TARGETS, default="local")
    parser.add_argument("--notebooks", type=Path, default=root / "notebooks")
    parser.add_argument("--output", type=Path, default=root / "build")
    parser.add_argument("--only", action="append", help="run only notebooks whose name starts with this (repeatable)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a single cell may run")
    parser.add_argument("--edition", choices=[*EDITIONS, "both"], default="both",
                        help="the learner's (exercises undone, into --output), the answer key (into "
                             "--output/answer-key), or both, the learner's first")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="run the editions one after the other (on the local target they run at the same time)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="papermill parameter passed to every notebook (repeatable)")


def run(args: argparse.Namespace) -> int:
    notebooks = discover(args.notebooks, args.only)
    if not notebooks:
        print(f"error: no notebooks matching NN_*.ipynb in {args.notebooks}", file=sys.stderr)
        return 2
    parameters = {"target": args.target, **{name: parse_value(value) for name, value in args.parameter}}
    started = time.perf_counter()
    try:
        editions = EDITIONS if args.edition == "both" else (args.edition,)
        parallel = args.target == "local" and not args.one_at_a_time
        runs = run_all(notebooks, args.output, parameters, args.timeout, editions=editions, parallel=parallel)
    except NotebookFailedError as failure:
        print(f"\nerror: {failure.run.error}\nexecuted notebook: {failure.run.output}\n"
              f"rendered: {failure.run.html}", file=sys.stderr)
        return 1
    print(f"\n{len(runs)} notebooks executed in {time.perf_counter() - started:.1f} s; results in {args.output}")
    return 0
