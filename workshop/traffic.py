"""Traffic for the monitoring notebook: real wines, bad requests, and drifted wines.

A dashboard is only understood once you have watched it move. Three kinds of
requests make each panel move in a known way:

* ``valid``: rows of the real dataset; request rate and latency go up, no errors.
* ``invalid``: strings, out-of-range values, missing fields; every one a 422, so
  the rejection panels move and the model never sees them.
* ``drifted``: valid wines, but stronger (+3 % vol alcohol) and sweeter (residual
  sugar x3): still inside the physical bounds, so accepted, but their mean is far
  from the training mean, which is what the drift panel and alert measure.

Everything is seeded, so a notebook sends the same requests on every run.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any, Literal

import numpy as np
import pandas as pd

from app.wine.data import load_wine_frame
from app.wine.features import FEATURE_NAMES, FEATURES
from workshop.service_client import http_client

Kind = Literal["valid", "invalid", "drifted"]
KINDS: tuple[str, ...] = ("valid", "invalid", "drifted")
MAX_REQUESTS = 10_000  # a workshop demo, not a load test (that is Locust's job)
BOUNDS = {f.name: (f.minimum, f.maximum) for f in FEATURES}
INVALID_CASES = ("string", "out_of_range", "missing_field", "nan", "free_exceeds_total")


def wine_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` real wines (features and colour), sampled with ``seed``; with replacement past the dataset size."""
    frame = load_wine_frame()
    sample = frame.sample(n, random_state=seed, replace=n > len(frame))
    return sample[[*FEATURE_NAMES, "color"]].reset_index(drop=True)


def drift(frame: pd.DataFrame, alcohol_added: float = 3.0, sugar_factor: float = 3.0) -> pd.DataFrame:
    """Stronger, sweeter wines that the API still accepts: clipped to the physical bounds, free SO2 <= total."""
    drifted = frame.copy()
    drifted["alcohol"] = (drifted["alcohol"] + alcohol_added).clip(*BOUNDS["alcohol"])
    drifted["residual_sugar"] = (drifted["residual_sugar"] * sugar_factor).clip(*BOUNDS["residual_sugar"])
    drifted["free_sulfur_dioxide"] = np.minimum(drifted["free_sulfur_dioxide"], drifted["total_sulfur_dioxide"])
    return drifted


def as_requests(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as the API takes them: plain floats and a colour string."""
    return [
        {**{name: float(row[name]) for name in FEATURE_NAMES}, "color": str(row["color"])}
        for row in frame.to_dict("records")
    ]


def invalid_wine(wine: dict[str, Any], case: str, rng: np.random.Generator) -> dict[str, Any]:
    """One way a real client gets it wrong; each is a 422 naming the field."""
    feature = str(rng.choice(FEATURE_NAMES))
    bad = dict(wine)
    if case == "string":
        bad[feature] = "high"
    elif case == "out_of_range":
        bad[feature] = BOUNDS[feature][1] * 2 + 1 if rng.random() < 0.5 else -1.0
    elif case == "missing_field":
        del bad[feature]
    elif case == "nan":
        bad[feature] = float("nan")
    elif case == "free_exceeds_total":
        bad["free_sulfur_dioxide"] = bad["total_sulfur_dioxide"] + 10.0
    else:
        raise ValueError(f"unknown invalid case {case!r}; choose one of {', '.join(INVALID_CASES)}")
    return bad


def bodies(kind: Kind, n: int, seed: int = 0) -> list[str]:
    """The JSON bodies ``send_traffic`` posts (NaN written as JSON's non-standard ``NaN`` on purpose)."""
    if kind not in KINDS:
        raise ValueError(f"unknown traffic kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not 0 <= n <= MAX_REQUESTS:
        raise ValueError(f"n must be between 0 and {MAX_REQUESTS}, got {n}")
    if n == 0:  # a round of a ramp may have nothing to send
        return []
    frame = wine_frame(n, seed)
    if kind == "drifted":
        frame = drift(frame)
    wines = as_requests(frame)
    if kind == "invalid":
        rng = np.random.default_rng(seed)
        wines = [invalid_wine(wine, INVALID_CASES[i % len(INVALID_CASES)], rng) for i, wine in enumerate(wines)]
    return [json.dumps(wine) for wine in wines]


def send_traffic(url: str, kind: Kind = "valid", n: int = 100, seed: int = 0, timeout: float = 10.0) -> Counter[int]:
    """POST ``n`` wines of ``kind`` to ``/predict`` one by one; count the answers by status code."""
    statuses: Counter[int] = Counter()
    with http_client(url, timeout, headers={"content-type": "application/json"}) as client:
        for body in bodies(kind, n, seed):
            statuses[client.post("/predict", content=body).status_code] += 1
    return statuses


def ramp(total: int, rounds: int) -> list[int]:
    """``total`` requests over ``rounds`` rounds, each round more than the one before (1, 2, 3... parts), so a
    rate panel climbs instead of drawing a flat line; the counts add up to ``total`` exactly."""
    if rounds < 1 or total < 0:
        raise ValueError("ramp needs at least one round and a non-negative total")
    parts = rounds * (rounds + 1) // 2
    edges = [total * sum(range(1, done + 1)) // parts for done in range(rounds + 1)]
    return [after - before for before, after in itertools.pairwise(edges)]
