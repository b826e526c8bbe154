"""The real chat model in the service: load time, memory, time to first token, tokens per second.

``python -m benchmarks.llm_real_model [--requests 5] [--new-tokens 64] [--json PATH]`` (``make bench-llm-model``)

It serves SmolLM2-135M-Instruct (the float32 folder of ``make llm-model``) from ``python -m app.llm``
in a child process, as notebook 07 does, and measures what a learner and an operator would ask:

- **start**: from starting the process to ``/ready`` (imports, load, warm-up), and the loader's own load time;
- **memory**: the process' resident memory with one model serving, and its peak during a swap to the
  bfloat16 copy and back (sampled every 10 ms with psutil), beside the size of the weights on disk;
- **one request at a time**: ``--requests`` streamed greedy completions of ``--new-tokens`` tokens, with the
  time to the first token as the client sees it and the service's tokens/s, for each dtype.

The baseline, measured in the same run on the same machine: the same prompt through ``model.generate`` in
this process (no HTTP, no service), so the ratio says what serving costs, whatever the machine's speed.
Figures, not a test: this machine may be busy; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from workshop.chat_model import BFLOAT16, FLOAT32, ensure_chat_models
from workshop.llm_client import LLMClient
from workshop.llm_load import stream_once
from workshop.process import ManagedProcess, ProcessError, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROMPT = [{"role": "user", "content": "Explain in a few sentences what a container image is."}]
READY_TIMEOUT_S = 300.0
SAMPLE_S = 0.01
MB = 1_000_000


class BenchmarkError(RuntimeError):
    """Something broke, so the figures would be wrong; the message says what."""


@contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, float]]:
    """Sample a process' resident memory every 10 ms while the block runs; ``result["peak_mb"]`` after it."""
    process, result, stop = psutil.Process(pid), {"peak_mb": 0.0}, threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result["peak_mb"] = max(result["peak_mb"], process.memory_info().rss / MB)
            stop.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def swap(client: LLMClient, model_id: str) -> dict[str, Any]:
    status = client.swap_and_wait(model_id, timeout=READY_TIMEOUT_S)
    if status["state"] != "RUNNING" or status["serving_model_id"] != model_id:
        raise BenchmarkError(f"the swap to {model_id} ended {status['state']}: {status.get('last_error')}")
    return client.model()


def one_request(client: LLMClient, new_tokens: int) -> dict[str, float]:
    """One streamed greedy completion: the client's time to first token, the service's tokens/s."""
    try:
        run = stream_once(client, PROMPT, new_tokens)
    except RuntimeError as error:
        raise BenchmarkError(str(error)) from error
    return {"ttft_s": run["ttft_s"], "tokens": run["tokens"], "tokens_per_s": run["tokens"] / run["generation_s"]}


def requests_figures(client: LLMClient, requests: int, new_tokens: int) -> dict[str, float]:
    one_request(client, new_tokens)  # not timed: the first request of a dtype pays one-off allocations
    runs = [one_request(client, new_tokens) for _ in range(requests)]
    return {"requests": requests, "ttft_p50_s": statistics.median(r["ttft_s"] for r in runs),
            "ttft_max_s": max(r["ttft_s"] for r in runs),
            "tokens_per_s_p50": statistics.median(r["tokens_per_s"] for r in runs),
            "tokens_p50": statistics.median(r["tokens"] for r in runs)}


def in_process_tokens_per_s(folder: Path, requests: int, new_tokens: int) -> float:
    """The baseline: ``model.generate`` on the same prompt in this process, greedy, same token budget."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()
    encoded = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    rates = []
    with torch.inference_mode():
        for index in range(requests + 1):
            started = time.perf_counter()
            output = model.generate(**encoded, max_new_tokens=new_tokens, do_sample=False, temperature=None,
                                    top_p=None, top_k=None, pad_token_id=tokenizer.eos_token_id)
            elapsed = time.perf_counter() - started
            if index:  # the first run warms up, as for the service
                rates.append((output.shape[-1] - encoded["input_ids"].shape[-1]) / elapsed)
    return statistics.median(rates)


def run_benchmark(requests: int, new_tokens: int) -> dict[str, Any]:
    models = ensure_chat_models()[0].parent
    weights_mb = {v.dtype: (models / v.name / "model.safetensors").stat().st_size / MB for v in (FLOAT32, BFLOAT16)}
    port = free_port()
    env = {"LLM_MODELS_DIR": str(models), "LLM_DEFAULT_MODEL": FLOAT32.name, "LLM_LOG_LEVEL": "WARNING",
           "HF_HUB_OFFLINE": "1", "LLM_MAX_NEW_TOKENS_CAP": str(max(256, new_tokens))}
    argv = [sys.executable, "-m", "app.llm", "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryDirectory(prefix="llm-real-") as scratch:
        started = time.perf_counter()
        process = ManagedProcess("llm-service", argv, env=env, cwd=PROJECT_ROOT,
                                 log_path=Path(scratch) / "llm.log").start()
        try:
            url = f"http://127.0.0.1:{port}"
            with peak_rss(process.pid) as start_peak:
                process.wait_for_http(f"{url}/ready", timeout=READY_TIMEOUT_S)
            to_ready = time.perf_counter() - started
            client = LLMClient(url, timeout=READY_TIMEOUT_S)
            results: dict[str, Any] = {
                "cpus": os.cpu_count(), "new_tokens": new_tokens, "weights_mb": weights_mb,
                "start": {"to_ready_s": to_ready, "load_s": client.model()["load_seconds"],
                          "peak_mb": start_peak["peak_mb"]},
                "float32": {"rss_mb": rss_mb(process.pid), **requests_figures(client, requests, new_tokens)},
            }
            with peak_rss(process.pid) as swap_peak:
                loaded = swap(client, BFLOAT16.name)
            results["bfloat16"] = {"load_s": loaded["load_seconds"], "swap_peak_mb": swap_peak["peak_mb"],
                                   "rss_mb": rss_mb(process.pid), **requests_figures(client, requests, new_tokens)}
            with peak_rss(process.pid) as back_peak:
                loaded = swap(client, FLOAT32.name)
            results["float32"].update(load_s=loaded["load_seconds"], swap_peak_mb=back_peak["peak_mb"],
                                      rss_after_swaps_mb=rss_mb(process.pid))
        except ProcessError as error:
            raise BenchmarkError(f"{error}\nservice log:\n{process.log_tail()}") from error
        finally:
            process.stop()
    results["baseline_tokens_per_s"] = in_process_tokens_per_s(models / FLOAT32.name, requests, new_tokens)
    return results


def format_report(results: dict[str, Any]) -> str:
    f32, b16, start, disk = results["float32"], results["bfloat16"], results["start"], results["weights_mb"]
    baseline = results["baseline_tokens_per_s"]
    lines = [
        f"SmolLM2-135M-Instruct in the chat service ({results['cpus']} CPUs, greedy, {results['new_tokens']} new "
        f"tokens, {f32['requests']} requests one at a time per dtype)",
        "",
        f"start to /ready: {start['to_ready_s']:.1f} s (the load itself: {start['load_s']:.2f} s; peak "
        f"{start['peak_mb']:.0f} MB)",
        "",
        f"{'':<28} {'float32':>10} {'bfloat16':>10}",
        f"{'weights on disk, MB':<28} {disk['float32']:>10.0f} {disk['bfloat16']:>10.0f}",
        f"{'load (swap to it), s':<28} {f32['load_s']:>10.2f} {b16['load_s']:>10.2f}",
        f"{'resident, one model, MB':<28} {f32['rss_mb']:>10.0f} {b16['rss_mb']:>10.0f}",
        f"{'peak during the swap, MB':<28} {f32['swap_peak_mb']:>10.0f} {b16['swap_peak_mb']:>10.0f}",
        f"{'time to first token p50, s':<28} {f32['ttft_p50_s']:>10.3f} {b16['ttft_p50_s']:>10.3f}",
        f"{'tokens/s p50':<28} {f32['tokens_per_s_p50']:>10.1f} {b16['tokens_per_s_p50']:>10.1f}",
        "",
        f"baseline, model.generate in-process (float32, same prompt): {baseline:.1f} tokens/s; the service "
        f"reaches {f32['tokens_per_s_p50'] / baseline:.2f}x of it in float32, bfloat16 "
        f"{b16['tokens_per_s_p50'] / baseline:.2f}x",
        f"(peak during a swap is the memory a pod limit must hold: the swap to bfloat16 peaks at "
        f"{b16['swap_peak_mb']:.0f} MB, the swap back to float32 at {f32['swap_peak_mb']:.0f} MB)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5, help="timed requests per dtype (default 5)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens a request asks for (default 64)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.new_tokens < 1:
        parser.error("--requests and --new-tokens must be at least 1")
    try:
        results = run_benchmark(args.requests, args.new_tokens)
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
