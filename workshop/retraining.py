"""Closing the loop: drift seen in production, measured on wines the tasters scored, retrained, rolled out.

The UCI data has no dates, so notebook 08 tells the story with its two colours, and every wine in it is real:
last year the producer made red wine only, and the model then in service (v1) learned from those reds; this
year the producer also sends white wines. The whites come with the tasters' real scores, so the served
model's error on them is measured, not imagined. :func:`vintages` splits them: the wines production sends
(``traffic``), a sample the tasters scored for retraining (``labelled``), and a second scored sample kept
aside to measure v1 and v2 on the same wines (``evaluation``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.wine.data import WineData
from app.wine.features import TARGET
from workshop.client import WineClient
from workshop.service_client import http_client
from workshop.traffic import as_requests

BATCH_ROWS = 50  # wines per /predict/batch request: production traffic that arrives in small batches


@dataclass(frozen=True)
class Vintages:
    """The wines of the story, each a frame with the features, ``color`` and the tasters' ``quality``."""

    last_year: pd.DataFrame  # the reds model v1 was trained on
    traffic: pd.DataFrame  # this year's whites, sent to the service (it never sees their scores)
    labelled: pd.DataFrame  # whites the tasters scored, added to the training data of v2
    evaluation: pd.DataFrame  # whites the tasters scored, kept apart: v1 and v2 are measured on these

    def sizes(self) -> pd.Series:
        return pd.Series({name: len(getattr(self, name)) for name in ("last_year", "traffic", "labelled",
                                                                      "evaluation")}, name="wines")


def vintages(frame: pd.DataFrame, *, labelled: int = 600, evaluation: int = 400, seed: int = 0) -> Vintages:
    """Split ``frame`` (both colours, with ``quality``) into the story's wines; seeded, so every run tells the same."""
    reds = frame[frame["color"] == "red"].reset_index(drop=True)
    whites = frame[frame["color"] == "white"].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if labelled + evaluation >= len(whites):
        raise ValueError(f"{labelled} + {evaluation} scored wines leave none of the {len(whites)} whites to send")
    return Vintages(
        last_year=reds,
        traffic=whites.iloc[labelled + evaluation:].reset_index(drop=True),
        labelled=whites.iloc[:labelled].reset_index(drop=True),
        evaluation=whites.iloc[labelled:labelled + evaluation].reset_index(drop=True),
    )


def training_data(data: WineData, frame: pd.DataFrame, what: str) -> WineData:
    """``frame`` as the training data of a model whose card says where it came from (``what``)."""
    return WineData(frame=frame.reset_index(drop=True), sha256=data.sha256, source=f"{data.source}; {what}")


def send_wines(url: str, frame: pd.DataFrame, batch_rows: int = BATCH_ROWS) -> Counter[int]:
    """POST the wines of ``frame`` to ``/predict/batch``, ``batch_rows`` at a time; count the answers by status."""
    statuses: Counter[int] = Counter()
    wines = as_requests(frame)
    with http_client(url, 30) as http:
        for start in range(0, len(wines), batch_rows):
            statuses[http.post("/predict/batch", json={"instances": wines[start:start + batch_rows]}).status_code] += 1
    return statuses


def service_rmse(url: str, frame: pd.DataFrame, batch_rows: int = 500) -> float:
    """The RMSE of the model serving at ``url`` on the scored wines of ``frame``: what production answers for
    them, against what the tasters said."""
    client = WineClient(url)
    wines = as_requests(frame)
    predicted = [p["quality"] for start in range(0, len(wines), batch_rows)
                 for p in client.predict_batch(wines[start:start + batch_rows])["predictions"]]
    return float(np.sqrt(np.mean((np.asarray(predicted) - frame[TARGET].to_numpy(float)) ** 2)))


def in_rounds(frame: pd.DataFrame, rounds: int) -> list[pd.DataFrame]:
    """``frame`` cut into ``rounds`` consecutive parts of (nearly) equal size, every row in one of them."""
    return [frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), rounds)]
