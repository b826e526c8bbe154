"""Self-checks for the notebooks' exercises: each says, in words, what is right or still wrong.

Every exercise of notebooks 01-07 ends with a cell (tagged ``check``) that prints a :class:`Verdict`. A
learner who has not done the exercise yet gets "not done yet" and what to do, and the notebook goes on; the
answer key (the instructors' run, solutions filled in) must print "done" for every check, which
``workshop.run_notebooks`` verifies. One module per notebook holds its checks; the two kinds every notebook
shares, a prediction compared with what happened and the common verdicts, live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DONE, NOT_DONE, WRONG = "done", "not done yet", "still wrong"
MARKS = {DONE: "✓", NOT_DONE: "…", WRONG: "✗"}


@dataclass(frozen=True)
class Verdict:
    """What a check found: ``state`` is one of ``done``, ``not done yet``, ``still wrong``."""

    state: str
    message: str

    def __bool__(self) -> bool:
        return self.state == DONE

    def __str__(self) -> str:
        return f"{MARKS[self.state]} {self.state}: {self.message}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows the sentence, not the dataclass
        printer.text(str(self))


def done(message: str) -> Verdict:
    return Verdict(DONE, message)


def not_done(message: str) -> Verdict:
    return Verdict(NOT_DONE, message)


def wrong(message: str) -> Verdict:
    return Verdict(WRONG, message)


def verdict_state(text: str) -> str | None:
    """The state a printed verdict starts with (``run_notebooks`` reads the check cells' outputs with it)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    for state, mark in MARKS.items():
        if first.startswith(f"{mark} {state}:"):
            return state
    return None


def check_prediction(prediction: Any, outcome: Any, *, variable: str, explanation: str) -> Verdict:
    """A *predict, then run* exercise: the learner's ``prediction`` (written before the cell ran) against the
    ``outcome`` the cell produced. Strings compare without case or surrounding blanks; numbers exactly."""
    if prediction is None:
        return not_done(f"write your prediction in `{variable}` before running the cell, then run this check")
    if _same(prediction, outcome):
        return done(f"you predicted {prediction!r}, and it was {outcome!r}. {explanation}")
    return wrong(f"you predicted {prediction!r}, but it was {outcome!r}. {explanation}")


def _same(prediction: Any, outcome: Any) -> bool:
    """Equal as answers: a yes/no question wants a bool (0 is not False), text ignores case and blanks."""
    if isinstance(prediction, bool) != isinstance(outcome, bool):
        return False
    return _normalise(prediction) == _normalise(outcome)


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and float(value).is_integer():
        return int(value)
    return value
