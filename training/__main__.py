"""``python -m training [--output DIR]``: train the wine-quality model and print the comparison."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from app.wine.data import DataError
from training.wine import DEFAULT_OUTPUT, latency_verdict, train

COLUMNS = ["rmse", "mae", "rounded_accuracy", "sklearn_latency_ms", "onnx_latency_ms", "onnx_batch_ms", "chosen"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training",
                                     description="Train, compare and export the wine-quality model.")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"artifact folder (default {DEFAULT_OUTPUT})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = train(args.output)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(report.table()[COLUMNS])
    card = report.model_card
    print(f"\nserving model: {card['version']} (RMSE {card['metrics']['rmse']:.3f}) written to {args.output}")
    print(latency_verdict(next(r for r in report.results if r.chosen)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
