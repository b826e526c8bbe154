"""The close-the-loop story's wines (notebook 08): real, scored, split without overlap, the same every run."""

from __future__ import annotations

import pandas as pd
import pytest

from workshop.retraining import in_rounds, vintages


def test_the_vintages_are_last_years_reds_and_this_years_whites_each_wine_in_one_part(wine_data):
    wines = vintages(wine_data.frame, labelled=2500, evaluation=400, seed=0)
    colors = wine_data.frame["color"]
    assert set(wines.last_year["color"]) == {"red"} and len(wines.last_year) == (colors == "red").sum()
    whites = pd.concat([wines.traffic, wines.labelled, wines.evaluation])
    assert set(whites["color"]) == {"white"} and len(whites) == (colors == "white").sum(), "every white, once"
    assert (len(wines.labelled), len(wines.evaluation)) == (2500, 400)
    assert wines.evaluation["quality"].notna().all(), "the evaluation wines carry the tasters' scores"
    again = vintages(wine_data.frame, labelled=2500, evaluation=400, seed=0)
    assert again.evaluation.equals(wines.evaluation), "seeded: every run measures on the same wines"


def test_scored_samples_that_leave_nothing_to_send_are_refused(wine_data):
    with pytest.raises(ValueError, match="leave none"):
        vintages(wine_data.frame, labelled=4000, evaluation=2000)


def test_rounds_cover_every_row_once_in_order():
    frame = pd.DataFrame({"x": range(10)})
    parts = in_rounds(frame, 3)
    assert [len(p) for p in parts] == [4, 3, 3] and pd.concat(parts).equals(frame)
