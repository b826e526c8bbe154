"""YAML for generated files: deterministic text, multi-line strings as literal blocks.

The generators compare text for ``--check``, so the same document must always give the same bytes;
literal blocks keep PromQL expressions and embedded JSON readable in the generated files and their diffs.
"""

from __future__ import annotations

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
