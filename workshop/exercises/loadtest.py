"""Checks for notebook 06's exercises."""

from __future__ import annotations

import pandas as pd

from workshop.exercises import Verdict, done, not_done, wrong


def most_users_within_slo(by_users: pd.DataFrame) -> int:
    """The largest user count up to which every step met the SLO (0 when the first step already missed it)."""
    most = 0
    for users, row in by_users.sort_index().iterrows():
        if not row["meets_slo"]:
            break
        most = int(users)
    return most


def check_most_users_within_slo(answer: int | None, by_users: pd.DataFrame) -> Verdict:
    """Exercise: read the step load's table like a capacity plan."""
    if answer is None:
        return not_done("set `most_users_within_slo` to the most users at which every step so far met the SLO")
    expected = most_users_within_slo(by_users)
    if answer == expected:
        if expected == by_users.index.max():
            return done(f"{expected} users, the last step: this machine met the SLO all the way; "
                        "the limit is further up")
        return done(f"{expected} users: one step more and the service broke the SLO on this machine "
                    "(its p50 or p99, or a failed request)")
    if answer > expected:
        return wrong(f"{answer} users is past a step that missed the SLO (see `meets_slo`)")
    return wrong(f"{answer} users is not the largest: every step up to {expected} users met the SLO")
