"""Checks for notebook 01's exercises."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from training.wine import split
from workshop.exercises import Verdict, done, not_done, wrong

TOLERANCE = 1e-3


def constant_baseline_rmse(frame: pd.DataFrame) -> float:
    """Held-out RMSE of the model that always answers the mean training quality, on 01's seeded split."""
    data = split(frame)
    return float(np.sqrt(np.mean((data.y_test - data.y_train.mean()) ** 2)))


def check_constant_baseline(baseline_rmse: float | None, frame: pd.DataFrame) -> Verdict:
    """Exercise: the RMSE a model must beat to have learnt anything from the measurements."""
    if baseline_rmse is None:
        return not_done("set `baseline_rmse` to the test-set RMSE of always predicting the training mean")
    if not isinstance(baseline_rmse, (int, float)) or not math.isfinite(baseline_rmse):
        return wrong(f"`baseline_rmse` should be a number, not {baseline_rmse!r}")
    expected = constant_baseline_rmse(frame)
    if abs(baseline_rmse - expected) <= TOLERANCE:
        return done(f"the constant baseline's RMSE is {expected:.3f}: every candidate above has to beat it")
    return wrong(f"{baseline_rmse:.3f} is not the baseline's RMSE: with `split(frame)`, predict the mean of "
                 "`y_train` for every test wine and take the root of the mean squared error on `y_test`")
