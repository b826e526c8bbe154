"""``python -m workshop editions --output lab`` (``make lab``): the learner's notebooks, never over their work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workshop.editions import write_learner_notebooks
from workshop.paths import numbered_notebooks, project_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebooks", type=Path, default=project_root() / "notebooks")
    parser.add_argument("--output", type=Path, default=project_root() / "lab")


def run(args: argparse.Namespace) -> int:
    if not numbered_notebooks(args.notebooks):
        print(f"error: no notebooks matching NN_*.ipynb in {args.notebooks}", file=sys.stderr)
        return 2
    written = write_learner_notebooks(args.notebooks, args.output)
    kept = sorted({p.name for p in numbered_notebooks(args.output)} - {p.name for p in written})
    for path in written:
        print(f"wrote {path.name} (the learner's edition)")
    if kept:
        print(f"kept your work in {args.output}: {', '.join(kept)} (delete a notebook there to start it afresh)")
    return 0
