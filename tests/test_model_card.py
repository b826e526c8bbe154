"""The model card as notebook 01 shows it: a table, not a dict dump."""

from __future__ import annotations

import json
from pathlib import Path

from workshop.model_card import summary


def test_the_summary_has_one_row_per_entry_of_the_identity_metrics_and_libraries(model_dir: Path):
    card = json.loads((model_dir / "model_card.json").read_text())
    table = summary(card)
    assert table.loc[("model", "version"), "value"] == card["version"]
    assert table.loc[("libraries", "scikit-learn"), "value"] == card["libraries"]["scikit-learn"]
    assert abs(float(table.loc[("metrics", "rmse"), "value"]) - card["metrics"]["rmse"]) < 5e-4  # 4 digits
    assert len(table) == 4 + len(card["metrics"]) + len(card["libraries"])
    assert "features" not in table.index.get_level_values("section")
