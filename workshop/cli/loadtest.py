"""``python -m workshop loadtest --host http://127.0.0.1:8000 --users 10 --run-time 30 --results build/load_test``.

Locust runs headless in its own process (:func:`workshop.loadtest.run_load_test`); the statistics, the SLO
verdict and the report's path are printed. A failed run exits 1 with Locust's own account of why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workshop.loadtest import SLO_P50_MS, SLO_P99_MS, LoadTestError, p99_by_users, run_load_test


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="URL of the wine service")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--spawn-rate", type=float, default=5.0)
    parser.add_argument("--run-time", type=float, default=30.0, help="seconds")
    parser.add_argument("--think-time", type=float, default=1.0, help="mean seconds between a user's requests")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--drift", action="store_true", help="send drifted wines (more alcohol, sweeter)")
    parser.add_argument("--step-load", action="store_true", help="ramp users up in steps")
    parser.add_argument("--step-users", type=int, default=5)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--results", type=Path, default=Path("build/load_test"), help="folder for CSVs and report")


def run(args: argparse.Namespace) -> int:
    try:
        result = run_load_test(
            args.host, args.users, args.spawn_rate, args.run_time, args.results, args.drift, args.step_load,
            think_time_s=args.think_time, seed=args.seed, step_users=args.step_users, step_seconds=args.step_seconds,
            steps=args.steps,
        )
    except LoadTestError as error:
        print(error, file=sys.stderr)
        return 1
    print(result.stats.round(1).to_string())
    print(f"\n{result.total_requests} requests, 0 failures; SLO (p50 <= {SLO_P50_MS:.0f} ms, p99 <= "
          f"{SLO_P99_MS:.0f} ms) {'met' if result.meets_slo() else 'MISSED'}. Report: {result.html_report}")
    if args.step_load:
        print(p99_by_users(result).to_string())
    return 0
