"""Deployment latency of the LLM service: time from ``POST /model`` to ``RUNNING``.

``python -m benchmarks.llm_swap [--swaps 20] [--models-dir DIR] [--hub-model ID] [--json PATH]``

It starts ``python -m app.llm`` as a child process, serving a tiny chat
model built offline (:mod:`workshop.tiny_llm`; two of them, different seeds),
then swaps between the two ``--swaps`` times. Each swap is timed the way an
operator sees it: from sending ``POST /model`` to ``GET /status`` saying
RUNNING, polled every 5 ms. It reports p50, p95, min and max of that time, and
beside it the service's own view: the time between entering LOADING and
RUNNING (``/status``'s ``entered_at``) and the loader's ``load_seconds``. What
the client sees beyond them is HTTP, polling, and the event loop waiting for
the loading thread to let go of the GIL.

With ``--stand-in`` (the default) it also times swaps to a random model of
SmolLM2-135M's exact shape (135M parameters, 540 MB in float32), built
locally: load time depends on the size, dtype and format of the weights, not
on their values, so it stands in for the real model where that cannot be
downloaded.

Then it tries the real default model (``--hub-model``, SmolLM2-135M-Instruct
unless told otherwise). Where the hub (or the local hub cache) has it, the
same figures are reported for swaps from the tiny model to it; where it has
not, the report says so, with the service's own error message and how long
the service took to say it.

Exit code: 0 when the benchmark ran, 2 when something broke (the service does not start, a tiny swap fails).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from workshop.llm_client import LLMClient
from workshop.process import ManagedProcess, ProcessError, free_port
from workshop.waiting import WaitTimeout, wait_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY_A, TINY_B = "tiny-a", "tiny-b"
STAND_IN = "smollm2-135m-shape"
STAND_IN_SWAPS = 10
DEFAULT_HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
POLL_S = 0.005
READY_TIMEOUT_S = 120.0
HUB_SWAP_TIMEOUT_S = 600.0


class BenchmarkError(RuntimeError):
    """Something broke, so the figures would be wrong; the message says what and what to do."""


@dataclass(frozen=True)
class SwapFigures:
    model: str
    swaps: int
    p50_s: float
    p95_s: float
    min_s: float
    max_s: float
    state_p50_s: float  # LOADING -> RUNNING as /status's entered_at says
    load_p50_s: float  # what the loader measured itself (load_seconds of /model)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was measured, never an interpolation."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def timed_swap(client: LLMClient, model_id: str, timeout: float) -> tuple[float, dict[str, Any]]:
    """Seconds from POST /model to a final state, and that final status."""
    started = time.perf_counter()
    client.swap(model_id)
    last: dict[str, Any] = {}

    def final() -> dict[str, Any] | None:
        last.update(client.status())
        return dict(last) if last["state"] in ("RUNNING", "FAILED") else None

    try:
        status = wait_for(final, timeout, f"the swap to {model_id}", interval=POLL_S, retry_on=())
    except WaitTimeout:
        raise BenchmarkError(f"swap to {model_id} still {last.get('state')} after {timeout:.0f} s") from None
    return time.perf_counter() - started, status


def in_state_seconds(status: dict[str, Any]) -> float:
    """LOADING -> RUNNING of the last swap, from the service's own timestamps."""
    entered = status["entered_at"]
    return (datetime.fromisoformat(entered["RUNNING"]) - datetime.fromisoformat(entered["LOADING"])).total_seconds()


def figures(model: str, seconds: list[float], service: list[tuple[float, float]]) -> SwapFigures:
    return SwapFigures(
        model=model, swaps=len(seconds), p50_s=percentile(seconds, 50), p95_s=percentile(seconds, 95),
        min_s=min(seconds), max_s=max(seconds), state_p50_s=statistics.median(s for s, _ in service),
        load_p50_s=statistics.median(load for _, load in service),
    )


def swap_between(client: LLMClient, back: str, to: str, swaps: int, timeout: float) -> SwapFigures:
    """Time ``swaps`` swaps from ``back`` to ``to``; the swaps back in between are not timed."""
    seconds, service = [], []
    for _ in range(swaps):
        elapsed, status = timed_swap(client, to, timeout)
        if status["state"] != "RUNNING":
            raise BenchmarkError(f"swap to {to} failed: {status['last_error']['message']}")
        seconds.append(elapsed)
        service.append((in_state_seconds(status), client.model()["load_seconds"]))
        _, status = timed_swap(client, back, timeout)
        if status["state"] != "RUNNING":
            raise BenchmarkError(f"swap back to {back} failed: {status['last_error']['message']}")
    return figures(to, seconds, service)


def tiny_swaps(client: LLMClient, swaps: int) -> SwapFigures:
    """Alternate tiny-a and tiny-b; every swap is timed."""
    seconds, service = [], []
    for index in range(swaps):
        target = TINY_B if index % 2 == 0 else TINY_A
        elapsed, status = timed_swap(client, target, 60.0)
        if status["state"] != "RUNNING":
            raise BenchmarkError(f"swap to {target} failed: {status['last_error']['message']}")
        seconds.append(elapsed)
        service.append((in_state_seconds(status), client.model()["load_seconds"]))
    return figures("tiny (tiny-a <-> tiny-b)", seconds, service)


def start_service(models_dir: Path, log_dir: Path) -> tuple[ManagedProcess, LLMClient]:
    port = free_port()
    env = {"LLM_MODELS_DIR": str(models_dir), "LLM_DEFAULT_MODEL": TINY_A, "LLM_LOG_LEVEL": "WARNING"}
    argv = [sys.executable, "-m", "app.llm", "--host", "127.0.0.1", "--port", str(port)]
    process = ManagedProcess("llm-service", argv, env=env, cwd=PROJECT_ROOT, log_path=log_dir / "llm.log").start()
    url = f"http://127.0.0.1:{port}"
    process.wait_for_http(f"{url}/ready", timeout=READY_TIMEOUT_S)
    return process, LLMClient(url, timeout=30)


def run_benchmark(models_dir: Path | None, swaps: int, hub_model: str | None, stand_in: bool = True
                  ) -> dict[str, Any]:
    from workshop.tiny_llm import SMOLLM2_135M_SHAPE, build_tiny_chat_model

    with tempfile.TemporaryDirectory(prefix="llm-swap-") as scratch:
        scratch_dir = Path(scratch)
        if models_dir is None:
            models_dir = scratch_dir / "models"
            build_tiny_chat_model(models_dir / TINY_A, seed=0, name=TINY_A)
            build_tiny_chat_model(models_dir / TINY_B, seed=1, name=TINY_B)
            if stand_in:
                build_tiny_chat_model(models_dir / STAND_IN, name=STAND_IN, shape=SMOLLM2_135M_SHAPE)
        elif stand_in and not (models_dir / STAND_IN).is_dir():
            raise BenchmarkError(f"no {STAND_IN}/ in {models_dir}: build it with workshop.tiny_llm."
                                 "build_tiny_chat_model(folder, shape=SMOLLM2_135M_SHAPE), or pass --no-stand-in")
        process, client = start_service(models_dir.resolve(), scratch_dir)
        try:
            results: dict[str, Any] = {"swaps": swaps, "tiny": asdict(tiny_swaps(client, swaps))}
            timed_swap(client, TINY_A, 60.0)
            if stand_in:
                stand_in_figures = swap_between(client, TINY_A, STAND_IN, min(swaps, STAND_IN_SWAPS), 600.0)
                results["stand_in"] = {**asdict(stand_in_figures), "model": f"{STAND_IN} (random weights)"}
            if hub_model:
                results["hub"] = hub_swaps(client, hub_model, max(1, min(swaps, 5)))
            return results
        except ProcessError:
            raise
        except BenchmarkError as error:
            raise BenchmarkError(f"{error}\nservice log:\n{process.log_tail()}") from error
        finally:
            process.stop()


def hub_swaps(client: LLMClient, model_id: str, swaps: int) -> dict[str, Any]:
    """Figures for the real model, or why there are none."""
    elapsed, status = timed_swap(client, model_id, HUB_SWAP_TIMEOUT_S)
    if status["state"] != "RUNNING":
        return {"model": model_id, "available": False, "reason": status["last_error"]["message"],
                "seconds_to_fail": round(elapsed, 3)}
    first = {"first_load_s": round(elapsed, 3)}  # includes the download when it was not cached
    timed_swap(client, TINY_A, 60.0)
    return {"available": True, **first, **asdict(swap_between(client, TINY_A, model_id, swaps, HUB_SWAP_TIMEOUT_S))}


def format_report(results: dict[str, Any]) -> str:
    lines = [f"Deployment latency: POST /model -> RUNNING ({results['swaps']} swaps; polled every "
             f"{POLL_S * 1000:.0f} ms; {os.cpu_count()} CPUs)", ""]
    header = (f"{'model':<40} {'swaps':>5} {'p50 s':>8} {'p95 s':>8} {'min s':>8} {'max s':>8} "
              f"{'LOADING->RUNNING p50 s':>23} {'load p50 s':>11}")
    lines += [header, "-" * len(header)]
    rows = [results["tiny"], *([results["stand_in"]] if "stand_in" in results else [])]
    hub = results.get("hub")
    if hub and hub.get("available"):
        rows.append(hub)
    for row in rows:
        lines.append(f"{row['model']:<40} {row['swaps']:>5} {row['p50_s']:>8.3f} {row['p95_s']:>8.3f} "
                     f"{row['min_s']:>8.3f} {row['max_s']:>8.3f} {row['state_p50_s']:>23.3f} "
                     f"{row['load_p50_s']:>11.3f}")
    if hub and hub.get("available"):
        lines.append(f"\nfirst load of {hub['model']} (download included if it was not cached): "
                     f"{hub['first_load_s']:.1f} s")
    elif hub:
        lines.append(f"\n{hub['model']}: not available here, no figures. The service said so in "
                     f"{hub['seconds_to_fail']:.2f} s:\n  {hub['reason']}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=20, help="timed swaps between the tiny models (default 20)")
    parser.add_argument("--models-dir", type=Path, help=f"a folder holding {TINY_A}/ and {TINY_B}/ (default: build "
                        "them in a temporary folder)")
    parser.add_argument("--hub-model", default=DEFAULT_HUB_MODEL,
                        help="the real model to time as well; empty to skip (default: %(default)s)")
    parser.add_argument("--no-stand-in", dest="stand_in", action="store_false",
                        help="skip the random model of SmolLM2-135M's shape (building it takes ~10 s and 540 MB)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.swaps < 1:
        parser.error("--swaps must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run_benchmark(args.models_dir, args.swaps, args.hub_model or None, args.stand_in)
    except (BenchmarkError, ProcessError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 2
    print(format_report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
