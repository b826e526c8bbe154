"""The errors a notebook cell or an exercise catches, in one place, whichever target or service raised them.

Each carries what a learner needs to act (the message says what to do) and what a caller needs without
parsing text (``status_code`` and ``body`` of a refused request, ``status`` of a state never reached). The
kubernetes target's own errors (``workshop.k8s.errors``) derive from these where a notebook catches them on
either target. The modules that raise them re-export them, so ``from workshop.targets import
RolloutFailedError`` and ``from workshop.llm_client import LLMServiceError`` keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class TargetUnavailableError(RuntimeError):
    """The chosen target cannot be used here; the message says what to do instead."""


class RolloutFailedError(RuntimeError):
    """New replicas never became ready; the old ones keep serving. The message says what the new ones reported."""


class ServiceError(RuntimeError):
    """The wine or the LLM service refused a request; carries the status and its JSON error body."""

    def __init__(self, status_code: int, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.body = body


class StateTimeoutError(TimeoutError):
    """The LLM service did not reach the wanted state in time; carries the last status seen."""

    def __init__(self, states: Iterable[str], timeout: float, status: dict[str, Any] | None) -> None:
        state = status.get("state") if status else "unknown"
        error = (status or {}).get("last_error")
        super().__init__(
            f"not in {', '.join(states)} after {timeout:.0f} s (state {state}"
            + (f", last error: {error['message']}" if error else "") + ")"
        )
        self.status = status
