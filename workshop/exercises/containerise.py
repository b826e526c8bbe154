"""Checks for notebook 03's exercises."""

from __future__ import annotations

from collections.abc import Sequence

from workshop.container import HARDENED_RUN_FLAGS
from workshop.exercises import Verdict, done, not_done, wrong

WHY = {
    "--read-only": "the root filesystem is read-only (readOnlyRootFilesystem: true)",
    "--tmpfs": "/tmp stays writable, in memory (the emptyDir mounted at /tmp)",  # noqa: S108
    "--cap-drop": "every Linux capability is dropped (capabilities: drop: [ALL])",
    "--security-opt": "no process can gain privileges (allowPrivilegeEscalation: false)",
}


def _pairs(flags: Sequence[str]) -> set[tuple[str, str]]:
    """``--flag value`` and ``--flag=value`` alike, as (flag, value) pairs; a lone flag pairs with ''."""
    pairs, items = set(), list(flags)
    while items:
        flag = items.pop(0)
        if "=" in flag:
            name, value = flag.split("=", 1)
        elif items and not items[0].startswith("--"):
            name, value = flag, items.pop(0)
        else:
            name, value = flag, ""
        pairs.add((name, value.upper() if name == "--cap-drop" else value))
    return pairs


def check_hardening_flags(flags: Sequence[str] | None) -> Verdict:
    """Exercise: the ``docker run`` flags that give a container the pod's securityContext."""
    if flags is None:
        return not_done("set `hardening_flags` to the list of `docker run` flags, e.g. ['--read-only', ...]")
    if isinstance(flags, str):
        flags = flags.split()
    expected, given = _pairs(HARDENED_RUN_FLAGS), _pairs(flags)
    missing = sorted(expected - given)
    if not missing:
        return done("these are the flags run_container uses: " + "; ".join(WHY.values()))
    return wrong("still missing " + ", ".join(f"{name} {value}".strip() + f" ({WHY[name]})" for name, value in missing))
