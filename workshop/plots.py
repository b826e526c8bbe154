"""Plots for the notebooks, built on ``matplotlib.figure.Figure`` (not pyplot).

A returned Figure is displayed once by Jupyter and leaks no global state, so a
re-run cell never stacks plots on top of each other.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure

COLORS = {"red": "#8e1b2c", "white": "#d8c36a"}


def quality_by_color(frame: pd.DataFrame) -> Figure:
    """How many wines got each score, per colour: the target is imbalanced (mostly 5-6)."""
    counts = frame.groupby(["quality", "color"], observed=False).size().unstack("color").fillna(0)
    figure = Figure(figsize=(7, 3.5))
    axes = figure.subplots()
    counts.plot.bar(ax=axes, color=[COLORS.get(c, "grey") for c in counts.columns], edgecolor="black", rot=0)
    axes.set(xlabel="quality score", ylabel="wines", title="Quality scores by colour")
    figure.tight_layout()
    return figure


def feature_correlations(frame: pd.DataFrame, target: str = "quality") -> Figure:
    """Correlation of each measurement with the score: alcohol up, volatile acidity and density down."""
    numeric = frame.select_dtypes("number")
    correlations = numeric.corr()[target].drop(target).sort_values()
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    correlations.plot.barh(ax=axes, color=["#c0392b" if v < 0 else "#2e86c1" for v in correlations])
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set(xlabel=f"Pearson correlation with {target}", title="What goes with a better score")
    figure.tight_layout()
    return figure


def model_comparison(table: pd.DataFrame, rmse_target: float, latency_budget_ms: float,
                     baseline_rmse: float | None = None) -> Figure:
    """Accuracy and single-row latency side by side, with the target and the budget drawn in, and the RMSE of
    always answering the training mean (``baseline_rmse``): what a model has to beat to have learnt anything."""
    figure = Figure(figsize=(10, 3.8))
    left, right = figure.subplots(1, 2)
    chosen = table["chosen"]
    left.bar(table.index, table["rmse"], color=["#27ae60" if c else "#95a5a6" for c in chosen])
    left.axhline(rmse_target, color="#c0392b", linestyle="--", label=f"target RMSE {rmse_target}")
    if baseline_rmse is not None:
        left.axhline(baseline_rmse, color="#34495e", linestyle=":", label=f"always the mean: {baseline_rmse:.2f}")
    left.set(ylabel="held-out RMSE (lower is better)", title="Accuracy")
    left.legend(loc="lower left")
    latency = table[["sklearn_latency_ms", "onnx_latency_ms"]].rename(
        columns={"sklearn_latency_ms": "scikit-learn", "onnx_latency_ms": "onnxruntime"}
    )
    latency.plot.bar(ax=right, logy=True, rot=0, color=["#7f8c8d", "#2980b9"])
    right.axhline(latency_budget_ms, color="#c0392b", linestyle="--", label=f"budget {latency_budget_ms} ms")
    right.set(ylabel="one-row predict, ms (log)", xlabel="", title="Latency (missing bar: no ONNX export)")
    right.legend(loc="upper left")
    figure.tight_layout()
    return figure


def predicted_vs_tasters(tasters, predicted) -> Figure:
    """Each held-out wine's prediction against the tasters' score: a regressor trained on squared error
    pulls the rare extremes toward the common middle, and this is where that shows."""
    frame = pd.DataFrame({"tasters": pd.Series(tasters).round().astype(int), "predicted": predicted})
    figure = Figure(figsize=(10, 3.8))
    left, right = figure.subplots(1, 2)
    scores = sorted(frame["tasters"].unique())
    groups = [frame.loc[frame["tasters"] == score, "predicted"] for score in scores]
    left.boxplot(groups, positions=scores, widths=0.6, showfliers=False)
    left.plot([min(scores), max(scores)], [min(scores), max(scores)], color="#c0392b", linestyle="--",
              label="perfect: predicted = tasters")
    left.set(xlabel="tasters' score", ylabel="predicted quality", title="Predictions per tasters' score")
    left.legend(loc="upper left")
    counts = pd.DataFrame({"tasters": frame["tasters"].value_counts(),
                           "predicted (rounded)": frame["predicted"].round().astype(int).value_counts()}).fillna(0)
    counts.sort_index().plot.bar(ax=right, rot=0, color=["#7f8c8d", "#2980b9"])
    right.set(xlabel="score", ylabel="test wines", title="How often each score is given")
    figure.tight_layout()
    return figure


def traffic_during(counts_by_status: pd.DataFrame, counts_by_answer: pd.DataFrame, title: str) -> Figure:
    """Requests per second while something changed: by HTTP status (top) and by who answered (bottom).
    A drop to zero, a 5xx or a "no answer" band is a request a user saw fail."""
    figure = Figure(figsize=(10, 4.6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    for axes, counts, what in ((top, counts_by_status, "status"), (bottom, counts_by_answer, "answered by")):
        labels = [("no answer" if str(c) == "0" else str(c)) for c in counts.columns]
        axes.stackplot(counts.index, counts.T.to_numpy(), labels=labels, step="post", alpha=0.85)
        axes.set(ylabel="requests / s")
        axes.legend(title=what, fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    top.set_title(title)
    bottom.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
    return figure
