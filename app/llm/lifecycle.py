"""The model lifecycle as a small, pure state machine (no torch, no HTTP).

Four states::

    NOT_DEPLOYED --begin_load--> LOADING --succeed--> RUNNING --begin_load--> LOADING ...
                                 LOADING --fail-----> FAILED  --begin_load--> LOADING ...

What is *serving* is kept apart from the state, because the two disagree on
purpose during a swap: while a new model is LOADING, and after its load FAILED,
the previous model keeps answering. Readiness follows what serves, not the
state. Only one load runs at a time: ``begin_load`` while LOADING raises
:class:`LoadInProgressError` (the API's 409).

The machine holds the served object without knowing what it is (a loaded model
in the service, any object in the unit tests), and it is thread-safe: the
loading thread reports success or failure while request handlers read it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

M = TypeVar("M")


class State(StrEnum):
    NOT_DEPLOYED = "NOT_DEPLOYED"
    LOADING = "LOADING"
    RUNNING = "RUNNING"
    FAILED = "FAILED"


class LifecycleError(RuntimeError):
    """A transition that the current state does not allow."""


class LoadInProgressError(LifecycleError):
    """A load was asked for while another one runs; carries the model being loaded."""

    def __init__(self, loading_model_id: str) -> None:
        super().__init__(
            f"model {loading_model_id!r} is loading; wait until GET /status leaves LOADING, then ask again"
        )
        self.loading_model_id = loading_model_id


@dataclass(frozen=True)
class LoadFailure:
    model_id: str
    message: str
    at: datetime


@dataclass(frozen=True)
class Snapshot(Generic[M]):
    """A consistent view of the lifecycle at one instant (what ``GET /status`` shows)."""

    state: State
    serving: M | None
    serving_model_id: str | None
    loading_model_id: str | None
    last_error: LoadFailure | None
    entered: dict[State, datetime | None]
    loads: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Something answers requests, whatever the state (a failed swap leaves the old model serving)."""
        return self.serving is not None

    @property
    def since(self) -> datetime:
        entered = self.entered[self.state]
        assert entered is not None  # the current state has always been entered
        return entered


def _now() -> datetime:
    return datetime.now(UTC)


class Lifecycle(Generic[M]):
    """The state, what serves, and the history a status page needs; transitions are atomic."""

    def __init__(self, clock: Callable[[], datetime] = _now) -> None:
        self._clock = clock
        # Re-entrant: listeners run inside the lock (so they see transitions in order) and may read.
        self._lock = threading.RLock()
        self._state = State.NOT_DEPLOYED
        self._serving: M | None = None
        self._serving_id: str | None = None
        self._loading_id: str | None = None
        self._last_error: LoadFailure | None = None
        self._entered: dict[State, datetime | None] = dict.fromkeys(State)
        self._entered[State.NOT_DEPLOYED] = clock()
        self._loads = {"success": 0, "failure": 0}
        self._listeners: list[Callable[[Snapshot[M]], Any]] = []

    def subscribe(self, listener: Callable[[Snapshot[M]], Any]) -> None:
        """Call ``listener(snapshot)`` after every transition (and once now), e.g. to update metrics."""
        with self._lock:
            self._listeners.append(listener)
            listener(self._snapshot())

    # Transitions ---------------------------------------------------------------------------------

    def begin_load(self, model_id: str) -> Snapshot[M]:
        """NOT_DEPLOYED, RUNNING or FAILED -> LOADING; raises :class:`LoadInProgressError` when LOADING."""
        with self._lock:
            if self._state is State.LOADING:
                assert self._loading_id is not None
                raise LoadInProgressError(self._loading_id)
            self._loading_id = model_id
            snapshot = self._enter(State.LOADING)
            self._notify(snapshot)
        return snapshot

    def succeed(self, model: M, model_id: str) -> Snapshot[M]:
        """LOADING -> RUNNING: ``model`` replaces what served, in one step."""
        with self._lock:
            self._require_loading(model_id)
            self._serving, self._serving_id = model, model_id
            self._loading_id, self._last_error = None, None
            self._loads["success"] += 1
            snapshot = self._enter(State.RUNNING)
            self._notify(snapshot)
        return snapshot

    def fail(self, model_id: str, message: str) -> Snapshot[M]:
        """LOADING -> FAILED: the error is kept and whatever served before keeps serving."""
        with self._lock:
            self._require_loading(model_id)
            self._loading_id = None
            self._last_error = LoadFailure(model_id, message, self._clock())
            self._loads["failure"] += 1
            snapshot = self._enter(State.FAILED)
            self._notify(snapshot)
        return snapshot

    # Reading -------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def serving(self) -> M | None:
        """What answers requests now. Read it once per request and keep the reference:
        a swap replaces the attribute, never the object a request already holds."""
        return self._serving

    def snapshot(self) -> Snapshot[M]:
        with self._lock:
            return self._snapshot()

    # Internals -----------------------------------------------------------------------------------

    def _require_loading(self, model_id: str) -> None:
        if self._state is not State.LOADING or self._loading_id != model_id:
            raise LifecycleError(
                f"cannot finish loading {model_id!r}: state is {self._state} (loading {self._loading_id!r})"
            )

    def _enter(self, state: State) -> Snapshot[M]:
        self._state = state
        self._entered[state] = self._clock()
        return self._snapshot()

    def _snapshot(self) -> Snapshot[M]:
        return Snapshot(
            state=self._state, serving=self._serving, serving_model_id=self._serving_id,
            loading_model_id=self._loading_id, last_error=self._last_error, entered=dict(self._entered),
            loads=dict(self._loads),
        )

    def _notify(self, snapshot: Snapshot[M]) -> None:
        for listener in self._listeners:
            listener(snapshot)
