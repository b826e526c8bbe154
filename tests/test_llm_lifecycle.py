"""The lifecycle state machine, alone: every transition, the 409 case, failures while loading.

No torch, no HTTP: the machine serves plain objects here, which is the point of keeping it pure.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from app.llm.lifecycle import Lifecycle, LifecycleError, LoadInProgressError, Snapshot, State


class Clock:
    """A clock that moves one second a reading, so every 'entered at' is distinct and predictable."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lifecycle(clock: Clock) -> Lifecycle[str]:
    return Lifecycle(clock=clock)


def test_starts_not_deployed_and_not_ready(lifecycle: Lifecycle[str]) -> None:
    snapshot = lifecycle.snapshot()
    assert snapshot.state is State.NOT_DEPLOYED
    assert not snapshot.ready and snapshot.serving is None and snapshot.serving_model_id is None
    assert snapshot.entered[State.NOT_DEPLOYED] is not None
    assert all(snapshot.entered[s] is None for s in (State.LOADING, State.RUNNING, State.FAILED))
    assert snapshot.since == snapshot.entered[State.NOT_DEPLOYED]


def test_not_deployed_to_loading_to_running(lifecycle: Lifecycle[str]) -> None:
    loading = lifecycle.begin_load("a")
    assert loading.state is State.LOADING and loading.loading_model_id == "a" and not loading.ready
    running = lifecycle.succeed("model-a", "a")
    assert running.state is State.RUNNING and running.ready
    assert running.serving == "model-a" and running.serving_model_id == "a" and running.loading_model_id is None
    assert lifecycle.serving == "model-a"
    assert running.entered[State.RUNNING] > running.entered[State.LOADING] > running.entered[State.NOT_DEPLOYED]
    assert running.loads == {"success": 1, "failure": 0}


def test_first_load_failing_leaves_nothing_serving(lifecycle: Lifecycle[str]) -> None:
    lifecycle.begin_load("broken")
    failed = lifecycle.fail("broken", "no chat template")
    assert failed.state is State.FAILED and not failed.ready and failed.serving is None
    assert failed.last_error is not None
    assert (failed.last_error.model_id, failed.last_error.message) == ("broken", "no chat template")
    assert failed.loads == {"success": 0, "failure": 1}


def test_running_to_loading_keeps_the_old_model_serving(lifecycle: Lifecycle[str]) -> None:
    lifecycle.begin_load("a")
    lifecycle.succeed("model-a", "a")
    loading = lifecycle.begin_load("b")
    assert loading.state is State.LOADING and loading.ready
    assert loading.serving == "model-a" and loading.serving_model_id == "a" and loading.loading_model_id == "b"


def test_swap_replaces_what_serves_atomically(lifecycle: Lifecycle[str]) -> None:
    lifecycle.begin_load("a")
    lifecycle.succeed("model-a", "a")
    held = lifecycle.serving  # what an in-flight request keeps
    lifecycle.begin_load("b")
    running = lifecycle.succeed("model-b", "b")
    assert running.serving == "model-b" and running.serving_model_id == "b"
    assert held == "model-a"


def test_failure_while_loading_keeps_the_old_model_serving(lifecycle: Lifecycle[str]) -> None:
    lifecycle.begin_load("a")
    lifecycle.succeed("model-a", "a")
    lifecycle.begin_load("broken")
    failed = lifecycle.fail("broken", "weights are corrupt")
    assert failed.state is State.FAILED
    assert failed.ready and failed.serving == "model-a" and failed.serving_model_id == "a"
    assert failed.loading_model_id is None
    assert failed.last_error is not None and failed.last_error.message == "weights are corrupt"
    assert failed.loads == {"success": 1, "failure": 1}


def test_failed_to_loading_to_running_clears_the_error(lifecycle: Lifecycle[str]) -> None:
    lifecycle.begin_load("broken")
    lifecycle.fail("broken", "boom")
    loading = lifecycle.begin_load("a")
    assert loading.state is State.LOADING
    assert loading.last_error is not None  # still visible while the retry loads
    running = lifecycle.succeed("model-a", "a")
    assert running.state is State.RUNNING and running.last_error is None
    assert running.entered[State.FAILED] is not None  # the history of the failure stays


def test_a_second_load_while_loading_is_refused(lifecycle: Lifecycle[str]) -> None:
    lifecycle.begin_load("a")
    with pytest.raises(LoadInProgressError) as raised:
        lifecycle.begin_load("b")
    assert raised.value.loading_model_id == "a"
    assert "'a' is loading" in str(raised.value) and "GET /status" in str(raised.value)
    snapshot = lifecycle.snapshot()
    assert snapshot.state is State.LOADING and snapshot.loading_model_id == "a"


@pytest.mark.parametrize("finish", ["succeed", "fail"])
def test_finishing_a_load_that_is_not_running_is_an_error(lifecycle: Lifecycle[str], finish: str) -> None:
    def call(model_id: str) -> None:
        if finish == "succeed":
            lifecycle.succeed("model", model_id)
        else:
            lifecycle.fail(model_id, "error")

    with pytest.raises(LifecycleError, match="NOT_DEPLOYED"):
        call("a")
    lifecycle.begin_load("a")
    with pytest.raises(LifecycleError, match="loading 'a'"):
        call("b")  # only the load in progress can finish
    call("a")
    with pytest.raises(LifecycleError):
        call("a")  # and only once


def test_listeners_see_every_transition_in_order(lifecycle: Lifecycle[str]) -> None:
    seen: list[Snapshot[str]] = []
    lifecycle.subscribe(seen.append)
    lifecycle.begin_load("a")
    lifecycle.succeed("model-a", "a")
    lifecycle.begin_load("b")
    lifecycle.fail("b", "boom")
    assert [s.state for s in seen] == [State.NOT_DEPLOYED, State.LOADING, State.RUNNING, State.LOADING, State.FAILED]
    assert seen[-1].serving == "model-a"


def test_concurrent_begin_load_admits_exactly_one() -> None:
    lifecycle: Lifecycle[str] = Lifecycle()
    barrier = threading.Barrier(8)
    admitted, refused = [], []

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            lifecycle.begin_load(f"m{index}")
            admitted.append(index)
        except LoadInProgressError:
            refused.append(index)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 1 and len(refused) == 7
    assert lifecycle.snapshot().loading_model_id == f"m{admitted[0]}"


def test_lifecycle_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, app.llm.lifecycle; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
