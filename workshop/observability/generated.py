"""Generated files: deterministic text, and the one command-line shape every generator has.

Each generator (dashboards, alert rules, the dashboards ConfigMap) knows which files it makes and the text
each must have; writing them, and ``--check`` (exit 1 naming every stale file), are the same for all of them.
The text must be deterministic, so ``--check`` can compare it; YAML writes multi-line strings as literal
blocks, which keeps PromQL expressions and embedded JSON readable in the files and their diffs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """A SafeDumper that writes multi-line strings as ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(document: dict[str, Any], header: str = "") -> str:
    """``header`` (a comment saying which command made the file) followed by the document."""
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def stale(files: Mapping[Path, str]) -> list[Path]:
    """The files that are missing or differ from the text they must have."""
    return [path for path, text in files.items() if not path.is_file() or path.read_text(encoding="utf-8") != text]


def write(files: Mapping[Path, str]) -> list[Path]:
    """Write every file (creating folders); returns the paths written."""
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def cli(
    argv: Sequence[str] | None,
    *,
    module: str,
    description: str,
    files: Callable[[argparse.Namespace], Mapping[Path, str]],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """``python -m MODULE [--check]``: write the files, or exit 1 naming each stale one."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    expected = files(args)
    if args.check:
        outdated = stale(expected)
        for path in outdated:
            print(f"{path} is stale: run python -m {module}", file=sys.stderr)
        return 1 if outdated else 0
    for path in write(expected):
        print(f"wrote {path}")
    return 0
