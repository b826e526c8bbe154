"""Generated files: deterministic text, written or compared the same way for every generator.

Each generator (dashboards, alert rules, the dashboards ConfigMap) knows which files it makes and the text
each must have; writing them and finding the stale ones are the same for all of them, and so is their
command (``python -m workshop dashboards|alerts|k8s-dashboards [--check]``, :mod:`workshop.cli.generated`).
The text must be deterministic, so ``--check`` can compare it; YAML writes multi-line strings as literal
blocks, which keeps PromQL expressions and embedded JSON readable in the files and their diffs.
"""

from __future__ import annotations

from collections.abc import Mapping
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
