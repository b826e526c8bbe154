"""The model's inputs, described once.

The training code, the model card, the API schemas and the encoder that turns a
request into the model's input matrix all read this table, so the column order
and the physical bounds cannot drift apart. Importing it is cheap (no pandas):
the service imports it on its hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

COLORS = ("red", "white")
TARGET = "quality"


@dataclass(frozen=True)
class Feature:
    """One physicochemical measurement, as the UCI files and the API name it."""

    name: str
    csv_column: str
    unit: str
    description: str
    minimum: float
    maximum: float
    example: float


# Bounds are physical limits, deliberately wider than what the data shows:
# a value outside them is a broken sensor or a typo, not an unusual wine.
FEATURES: tuple[Feature, ...] = (
    Feature("fixed_acidity", "fixed acidity", "g(tartaric acid)/dm³",
            "Non-volatile acids, mostly tartaric.", 0.0, 30.0, 7.4),
    Feature("volatile_acidity", "volatile acidity", "g(acetic acid)/dm³",
            "Acetic acid; high values taste of vinegar.", 0.0, 5.0, 0.7),
    Feature("citric_acid", "citric acid", "g/dm³",
            "Adds freshness in small amounts.", 0.0, 5.0, 0.0),
    Feature("residual_sugar", "residual sugar", "g/dm³",
            "Sugar left after fermentation.", 0.0, 500.0, 1.9),
    Feature("chlorides", "chlorides", "g(sodium chloride)/dm³",
            "Salt content.", 0.0, 2.0, 0.076),
    Feature("free_sulfur_dioxide", "free sulfur dioxide", "mg/dm³",
            "Free SO₂; part of the total SO₂.", 0.0, 500.0, 11.0),
    Feature("total_sulfur_dioxide", "total sulfur dioxide", "mg/dm³",
            "Free plus bound SO₂.", 0.0, 1000.0, 34.0),
    Feature("density", "density", "g/cm³",
            "Close to water; lower with more alcohol, higher with more sugar.", 0.9, 1.2, 0.9978),
    Feature("ph", "pH", "pH",
            "Acidity on the pH scale; wines are usually 2.7–4.", 0.0, 14.0, 3.51),
    Feature("sulphates", "sulphates", "g(potassium sulphate)/dm³",
            "Additive that feeds SO₂.", 0.0, 5.0, 0.56),
    Feature("alcohol", "alcohol", "% vol",
            "Alcohol by volume.", 0.0, 25.0, 9.4),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)

# The model sees the 11 measurements followed by one indicator column for colour.
MODEL_INPUTS: tuple[str, ...] = (*FEATURE_NAMES, "is_red")

QUALITY_RANGE = (0.0, 10.0)
