"""The model card that training writes (``model_card.json``), as a table a reader can scan."""

from __future__ import annotations

from typing import Any

import pandas as pd

SUMMARY_FIELDS = ("name", "version", "algorithm", "trained_at")
SUMMARY_SECTIONS = ("metrics", "libraries")


def summary(card: dict[str, Any]) -> pd.DataFrame:
    """What identifies the model, how good it is and what built it: one row per entry, by section
    (the per-feature statistics have a table of their own)."""
    rows = [("model", field, card[field]) for field in SUMMARY_FIELDS]
    rows += [(section, key, value) for section in SUMMARY_SECTIONS for key, value in card[section].items()]
    frame = pd.DataFrame(rows, columns=["section", "entry", "value"])
    frame["value"] = [f"{value:.4g}" if isinstance(value, float) else str(value) for value in frame["value"]]
    return frame.set_index(["section", "entry"])
