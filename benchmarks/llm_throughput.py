"""Throughput of the chat service under concurrency, beside ``transformers serve`` and in-process ceilings.

``python -m benchmarks.llm_throughput [--clients 1,4,8] [--new-tokens 64] [--rounds 2] [--json PATH]``
(``make bench-llm-throughput``)

Every contender serves the same model folder (SmolLM2-135M-Instruct in float32, from ``make llm-model``)
and answers the same 8 realistic prompts, greedily, ``--new-tokens`` new tokens each:

- **service**: ``python -m app.llm`` in a child process (continuous batching, LLM_MAX_BATCH_SIZE 8);
- **transformers serve**, without and with ``--continuous-batching``: the peer a user would reach for,
  from the same library, in a child process (``--peers none`` leaves them out);
- **in-process ceilings**: one ``model.generate`` at a time over the 8 prompts, and one batched
  ``model.generate`` of the 8 prompts left-padded: what the CPUs give with no HTTP and no scheduling.

The HTTP contenders get the same client: ``--clients`` levels of concurrent clients, each streaming
``POST /v1/chat/completions`` requests one after another, ``--rounds`` each, prompts taken in turn. For each
level: aggregate tokens/s (all completion tokens over the wall time of the level), p50/p95 latency of a
request, p50/p95 time to the first content token. Completion tokens are counted by tokenizing each answer
with the model's tokenizer, the same way for every contender. Figures, not a test: this machine may be
busy; compare the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from workshop.process import ManagedProcess, ProcessError, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 600.0
PROMPTS = [
    "Explain in a few sentences what a container image is.",
    "What is the capital of France, and what is it known for?",
    "Give me three tips for writing a clear email to a colleague.",
    "Why do leaves change colour in autumn?",
    "Write a short poem about the sea.",
    "What is the difference between a list and a tuple in Python?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "How does a refrigerator keep food cold?",
]


class BenchmarkError(RuntimeError):
    """Something broke, so the figures would be wrong; the message says what."""


@dataclass(frozen=True)
class Contender:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_path: str
    model: str  # the "model" field of a request


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def one_request(client: httpx.Client, url: str, model: str, prompt: str, new_tokens: int) -> dict[str, Any]:
    """One streamed greedy chat completion: its text, latency and time to the first content."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": new_tokens,
            "temperature": 0, "stream": True}
    started, first, text = time.perf_counter(), None, ""
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S) as response:
        if response.status_code != 200:
            raise BenchmarkError(f"{url} answered {response.status_code}: {response.read()[:500]!r}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise BenchmarkError(f"{url} failed a completion: {chunk['error']}")
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece and first is None:
                    first = time.perf_counter() - started
                text += piece
    return {"text": text, "latency_s": time.perf_counter() - started, "ttft_s": first or 0.0}


def run_level(url: str, model: str, clients: int, rounds: int, new_tokens: int,
              count_tokens: Callable[[str], int]) -> dict[str, Any]:
    """``clients`` concurrent clients, ``rounds`` requests each; aggregate and per-request figures."""
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client_loop(index: int) -> None:
        with httpx.Client() as client:
            for round_ in range(rounds):
                prompt = PROMPTS[(index + round_ * clients) % len(PROMPTS)]
                try:
                    result = one_request(client, url, model, prompt, new_tokens)
                except BaseException as error:  # noqa: BLE001 - reported after the level
                    with lock:
                        errors.append(error)
                    return
                with lock:
                    results.append(result)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise BenchmarkError(f"{len(errors)} of {clients * rounds} requests failed: {errors[0]!r}")
    tokens = sum(count_tokens(r["text"]) for r in results)
    latencies, ttfts = [r["latency_s"] for r in results], [r["ttft_s"] for r in results]
    return {"clients": clients, "requests": len(results), "tokens": tokens, "wall_s": wall,
            "tokens_per_s": tokens / wall, "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95), "ttft_p50_s": percentile(ttfts, 50),
            "ttft_p95_s": percentile(ttfts, 95)}


def measure_contenders(contenders: Sequence[Contender], levels: Sequence[int], rounds: int, new_tokens: int,
                       count_tokens: Callable[[str], int], scratch: Path) -> dict[str, list[dict[str, Any]]]:
    """Start every contender, then measure level by level, each contender in turn: a machine whose load
    drifts during the run (other work on its CPUs) weighs on every contender alike. An idle server costs
    no CPU while another is measured."""
    running: list[tuple[Contender, ManagedProcess, str]] = []
    try:
        for contender in contenders:
            port = free_port()
            argv = [a.replace("{port}", str(port)) for a in contender.argv]
            process = ManagedProcess(contender.name, argv, env=contender.env, cwd=PROJECT_ROOT,
                                     log_path=scratch / f"{contender.name.replace(' ', '-')}.log").start()
            running.append((contender, process, f"http://127.0.0.1:{port}"))
        figures: dict[str, list[dict[str, Any]]] = {contender.name: [] for contender in contenders}
        for contender, process, url in running:
            try:
                process.wait_for_http(f"{url}{contender.ready_path}", timeout=READY_TIMEOUT_S)
                with httpx.Client() as client:  # not timed: the first request pays one-off allocations
                    one_request(client, url, contender.model, PROMPTS[0], new_tokens)
            except (ProcessError, BenchmarkError, httpx.HTTPError) as error:
                raise BenchmarkError(f"{contender.name}: {error}\nits log:\n{process.log_tail()}") from error
        for clients in levels:
            for contender, process, url in running:
                try:
                    level = run_level(url, contender.model, clients, rounds, new_tokens, count_tokens)
                except (BenchmarkError, httpx.HTTPError) as error:
                    raise BenchmarkError(f"{contender.name}: {error}\nits log:\n{process.log_tail()}") from error
                figures[contender.name].append({**level, "load_average": os.getloadavg()[0]})
        return figures
    finally:
        for _, process, _ in running:
            process.stop()


def in_process_ceilings(folder: Path, new_tokens: int, threads: int | None) -> dict[str, Any]:
    """One ``generate`` at a time over the prompts, then one batched ``generate`` of all of them, left-padded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, "pad_token_id": pad,
              "max_new_tokens": new_tokens}
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]

    def new_tokens_of(row: Any, prompt_width: int) -> int:
        ids = row[prompt_width:].tolist()
        eos = tokenizer.eos_token_id
        return ids.index(eos) + 1 if eos in ids else len(ids)

    with torch.inference_mode():
        one = tokenizer.apply_chat_template(chats[0], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        model.generate(**one, **greedy)  # warm-up
        tokens, latencies, started = 0, [], time.perf_counter()
        for chat in chats:
            encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
            t0 = time.perf_counter()
            output = model.generate(**encoded, **greedy)
            latencies.append(time.perf_counter() - t0)
            tokens += new_tokens_of(output[0], encoded["input_ids"].shape[-1])
        sequential = {"tokens_per_s": tokens / (time.perf_counter() - started),
                      "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95)}
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            batch = tokenizer.apply_chat_template(chats, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True, padding=True)
        finally:
            tokenizer.padding_side = side
        t0 = time.perf_counter()
        output = model.generate(**batch, **greedy)
        elapsed = time.perf_counter() - t0
        width = batch["input_ids"].shape[-1]
        tokens = sum(new_tokens_of(row, width) for row in output)
    return {"sequential": sequential,
            "batched": {"prompts": len(chats), "tokens_per_s": tokens / elapsed, "latency_s": elapsed}}


def contenders(folder: Path, peers: bool, max_batch_size: int, threads: int | None) -> list[Contender]:
    thread_env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    service = Contender(
        "service",
        [sys.executable, "-m", "app.llm", "--host", "127.0.0.1", "--port", "{port}"],
        {"LLM_MODELS_DIR": str(folder.parent), "LLM_DEFAULT_MODEL": folder.name, "LLM_LOG_LEVEL": "WARNING",
         "LLM_DTYPE": "float32", "HF_HUB_OFFLINE": "1", "LLM_MAX_BATCH_SIZE": str(max_batch_size),
         "LLM_MAX_QUEUE": "64", **({"LLM_TORCH_THREADS": str(threads)} if threads else {}), **thread_env},
        "/ready", folder.name)
    found = [service]
    if peers:
        serve = str(Path(sys.executable).with_name("transformers"))
        base = [serve, "serve", str(folder), "--host", "127.0.0.1", "--port", "{port}", "--dtype", "float32",
                "--device", "cpu"]
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", **thread_env}
        found.append(Contender("transformers serve", base, env, "/health", str(folder)))
        found.append(Contender("transformers serve --continuous-batching", [*base, "--continuous-batching"], env,
                               "/health", str(folder)))
    return found


def run_benchmark(folder: Path, levels: Sequence[int], rounds: int, new_tokens: int, peers: bool = True,
                  max_batch_size: int = 8, threads: int | None = None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    results: dict[str, Any] = {"cpus": os.cpu_count(), "model": folder.name, "new_tokens": new_tokens,
                               "rounds": rounds, "levels": list(levels), "http": {}}
    with tempfile.TemporaryDirectory(prefix="llm-throughput-") as scratch:
        results["http"] = measure_contenders(contenders(folder, peers, max_batch_size, threads), levels, rounds,
                                             new_tokens, count_tokens, Path(scratch))
    results["in_process"] = in_process_ceilings(folder, new_tokens, threads)
    return results


def format_report(results: dict[str, Any]) -> str:
    lines = [
        f"{results['model']} ({results['cpus']} CPUs, greedy, {results['new_tokens']} new tokens, "
        f"{len(PROMPTS)} prompts, {results['rounds']} streamed requests per client)",
        "",
        f"{'contender':<42} {'clients':>7} {'tokens/s':>9} {'p50 s':>7} {'p95 s':>7} {'TTFT p50':>9} "
        f"{'TTFT p95':>9} {'load':>5}",
    ]
    for name, levels in results["http"].items():
        for level in levels:
            lines.append(f"{name:<42} {level['clients']:>7} {level['tokens_per_s']:>9.1f} "
                         f"{level['latency_p50_s']:>7.2f} {level['latency_p95_s']:>7.2f} "
                         f"{level['ttft_p50_s']:>9.3f} {level['ttft_p95_s']:>9.3f} {level['load_average']:>5.1f}")
    ceilings = results["in_process"]
    seq, batched = ceilings["sequential"], ceilings["batched"]
    lines += [
        "(load: the machine's 1-minute load average after each level; above its CPU count, other work shared "
        "them; levels run contender after contender, so drift weighs on all alike)",
        "",
        f"in-process, one generate at a time: {seq['tokens_per_s']:.1f} tokens/s (latency p50 "
        f"{seq['latency_p50_s']:.2f} s, p95 {seq['latency_p95_s']:.2f} s)",
        f"in-process, one batched generate of {batched['prompts']} left-padded prompts: "
        f"{batched['tokens_per_s']:.1f} tokens/s ({batched['latency_s']:.2f} s for all)",
        "",
        "ratios (tokens/s of the service over each, per clients):",
    ]
    service = {level["clients"]: level for level in results["http"]["service"]}
    for name, levels in results["http"].items():
        if name == "service":
            continue
        ratios = ", ".join(
            f"{level['clients']}: {service[level['clients']]['tokens_per_s'] / level['tokens_per_s']:.2f}x"
            for level in levels if level["tokens_per_s"] > 0)
        lines.append(f"  over {name}: {ratios}")
    top = max(service)
    lines.append(f"  service at {top} clients over one generate at a time: "
                 f"{service[top]['tokens_per_s'] / seq['tokens_per_s']:.2f}x; over one batched generate: "
                 f"{service[top]['tokens_per_s'] / batched['tokens_per_s']:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="the model folder (default: the float32 SmolLM2 of "
                        "make llm-model)")
    parser.add_argument("--clients", default="1,4,8", help="concurrency levels, comma-separated (default 1,4,8)")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per level (default 2)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens a request asks for (default 64)")
    parser.add_argument("--peers", choices=("all", "none"), default="all",
                        help="measure transformers serve too (default all)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="the service's LLM_MAX_BATCH_SIZE")
    parser.add_argument("--threads", type=int, help="torch threads for every contender (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    if not levels or min(levels) < 1 or args.rounds < 1 or args.new_tokens < 1:
        parser.error("--clients, --rounds and --new-tokens must be at least 1")
    folder = args.model_dir
    if folder is None:
        from workshop.chat_model import FLOAT32, ensure_chat_models

        folder = ensure_chat_models()[0].parent / FLOAT32.name
    try:
        results = run_benchmark(folder, levels, args.rounds, args.new_tokens, peers=args.peers == "all",
                                max_batch_size=args.max_batch_size, threads=args.threads)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    print(format_report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
