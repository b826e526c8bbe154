"""wait_for, the one poll-until-deadline loop: what it returns, when it gives up, and what it says then."""

from __future__ import annotations

import pandas as pd
import pytest

from workshop.waiting import WaitTimeout, wait_for


class FakeClock:
    """A clock that only moves when the waiter sleeps: the deadline is reached without waiting for it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_it_returns_the_first_truthy_result_and_waits_the_interval_between_checks():
    answers = iter([None, 0, "", "done"])
    clock = FakeClock()
    assert wait_for(lambda: next(answers), timeout=5, what="an answer", interval=0.5, clock=clock,
                    sleep=clock.sleep) == "done"
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_a_frame_is_done_when_it_has_rows():
    frames = iter([pd.DataFrame(columns=["value"]), pd.DataFrame({"value": [1.0]})])
    clock = FakeClock()
    found = wait_for(lambda: next(frames), timeout=5, what="a series", clock=clock, sleep=clock.sleep)
    assert found["value"].tolist() == [1.0]


def test_at_the_deadline_it_checks_once_more_and_says_what_it_waited_for_and_the_last_answer():
    clock = FakeClock()
    calls: list[float] = []

    def never() -> bool:
        calls.append(clock.now)
        return False

    with pytest.raises(WaitTimeout, match=r"^timed out after 2 s waiting for the moon \(last result False\)$") as out:
        wait_for(never, timeout=2, what="the moon", interval=0.75, clock=clock, sleep=clock.sleep)
    assert calls == [0.0, 0.75, 1.5, 2.0], "the last sleep is cut to the deadline, and a check follows it"
    assert isinstance(out.value, TimeoutError) and out.value.last_result is False and out.value.last_error is None


def test_errors_it_retries_on_are_not_yet_and_the_last_one_is_reported():
    clock = FakeClock()

    def refused():
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout, match=r"waiting for the server \(ConnectionError: refused\)") as out:
        wait_for(refused, timeout=1, what="the server", clock=clock, sleep=clock.sleep)
    assert isinstance(out.value.last_error, ConnectionError)

    answers = iter([ConnectionError("refused"), None])

    def then_nothing():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(WaitTimeout, match=r"\(last result None\)"):
        wait_for(then_nothing, timeout=0.5, what="x", clock=clock, sleep=clock.sleep)


def test_an_error_it_does_not_retry_on_ends_the_wait_at_once():
    clock = FakeClock()
    calls = []

    def exited():
        calls.append(1)
        raise RuntimeError("the container exited")

    with pytest.raises(RuntimeError, match="the container exited"):
        wait_for(exited, timeout=60, what="ready", retry_on=(ConnectionError,), clock=clock, sleep=clock.sleep)
    assert calls == [1] and clock.sleeps == []

    def refused():
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):  # retry_on=(): every error is final
        wait_for(refused, timeout=60, what="x", retry_on=(), clock=clock, sleep=clock.sleep)


def test_a_real_wait_ends_near_its_deadline():
    import time

    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        wait_for(lambda: False, timeout=0.3, what="nothing", interval=0.05)
    assert 0.3 <= time.monotonic() - started < 2.0
