"""One way to wait: poll until something is there, or a deadline passes, and say what was awaited.

Services, containers, Prometheus and Kubernetes objects all come up in their own time. :func:`wait_for`
polls a check until it returns something truthy (which it returns), with the last answer or error in the
:class:`WaitTimeout` when time runs out, so that the caller can turn it into its own error with the story
(a container's log, a pod's events).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The deadline passed: what was awaited, and the last thing the check answered or raised."""

    def __init__(self, message: str, *, last_result: object = None, last_error: BaseException | None = None):
        super().__init__(message)
        self.last_result = last_result
        self.last_error = last_error


def _truthy(result: object) -> bool:
    """A frame is "done" when it has rows (``bool(frame)`` would raise). A result can only be a pandas object
    once pandas is imported, so waiting does not import it."""
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(result, pandas.DataFrame | pandas.Series):
        return not result.empty
    return bool(result)


def wait_for(
    check: Callable[[], T], timeout: float, what: str, interval: float = 0.5, *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``check`` until it returns something truthy (returned) or ``timeout`` s pass; then :class:`WaitTimeout`.

    ``check`` runs at least once, and once more at the deadline. An exception of ``retry_on`` counts as "not yet"
    (a server still starting refuses connections) and is reported if nothing better comes; any other exception
    ends the wait at once, so a check can fail fast by raising (a container that exited, a pod that cannot
    start). ``retry_on=()`` lets every exception through.
    """
    deadline = clock() + timeout
    last_result: object = None
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
        except retry_on as error:
            last_error = error
        else:
            if _truthy(result):
                return result
            last_result, last_error = result, None
        remaining = deadline - clock()
        if remaining <= 0:
            last = f"{type(last_error).__name__}: {last_error}" if last_error is not None \
                else f"last result {last_result!r}"
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what} ({last})",
                              last_result=last_result, last_error=last_error)
        sleep(min(interval, remaining))
