"""The chat service's memory at its worst: a swap while a full batch of the longest prompts is decoding.

``python -m benchmarks.llm_swap_memory [--prompts 8] [--json PATH]`` (part of ``make bench-llm-model``)

A swap holds two models while the old one finishes its batch, and every sequence in that batch holds a KV
cache of up to ``LLM_MAX_INPUT_TOKENS + LLM_MAX_NEW_TOKENS_CAP`` positions. The pod's memory limit has to
hold all of it, so this measures exactly that on a fresh process with the service's default settings (the
pod's): ``--prompts`` streamed requests (default ``LLM_MAX_BATCH_SIZE``), each a prompt as close to
``LLM_MAX_INPUT_TOKENS`` as ``LLM_MAX_INPUT_CHARS`` allows, asking for ``LLM_MAX_NEW_TOKENS_CAP`` tokens;
once every one has its first token, a swap from the float32 folder to the bfloat16 one. The resident memory
is sampled every 10 ms with psutil from start to the last answer.

The baseline, in the same run: the same process with one model serving and nothing in flight.
Figures, not a test: ``tests/test_llm_manifests.py`` holds the measured peak against the pod's limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.llm.config import Settings
from benchmarks.llm_real_model import MB, READY_TIMEOUT_S, BenchmarkError, peak_rss, rss_mb, swap
from workshop.chat_model import BFLOAT16, FLOAT32, ensure_chat_models
from workshop.llm_client import LLMClient
from workshop.process import ManagedProcess, ProcessError, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20
# Words and numbers in turn: about four characters a token, so a prompt within LLM_MAX_INPUT_CHARS
# reaches LLM_MAX_INPUT_TOKENS (plain prose runs nearer five, and would stop short of it).
FILLER = ("pod {n}, node {m}, probe {k}; replicas {n} of {m}. ")


def longest_prompt(tokenizer: Any, settings: Settings, index: int) -> tuple[str, int]:
    """A user message as long as the limits admit: the chat template's tokens at most max_input_tokens
    minus a margin of 16, its characters at most max_input_chars."""
    text, tokens, n = f"Request {index}. Summarise this list. ", 0, index * 1000
    while True:
        n += 1
        longer = text + FILLER.format(n=n, m=n % 97, k=n % 13)
        if len(longer) > settings.max_input_chars:
            return text, tokens
        chat = [{"role": "user", "content": longer}]
        count = len(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
        if count > settings.max_input_tokens - 16:
            return text, tokens
        text, tokens = longer, count


def run_benchmark(prompts: int | None = None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    settings = Settings()
    prompts = prompts or settings.max_batch_size
    models = ensure_chat_models()[0].parent
    tokenizer = AutoTokenizer.from_pretrained(models / FLOAT32.name)
    longest = [longest_prompt(tokenizer, settings, index) for index in range(prompts)]
    new_tokens = settings.max_new_tokens_cap
    port = free_port()
    env = {"LLM_MODELS_DIR": str(models), "LLM_DEFAULT_MODEL": FLOAT32.name, "LLM_LOG_LEVEL": "WARNING",
           "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "app.llm", "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryDirectory(prefix="llm-swap-memory-") as scratch:
        process = ManagedProcess("llm-service", argv, env=env, cwd=PROJECT_ROOT,
                                 log_path=Path(scratch) / "llm.log").start()
        try:
            url = f"http://127.0.0.1:{port}"
            process.wait_for_http(f"{url}/ready", timeout=READY_TIMEOUT_S)
            client = LLMClient(url, timeout=READY_TIMEOUT_S)
            idle_mb = rss_mb(process.pid)
            figures = under_load(process, url, client, [text for text, _ in longest], new_tokens)
        except ProcessError as error:
            raise BenchmarkError(f"{error}\nservice log:\n{process.log_tail()}") from error
        finally:
            process.stop()
    return {"prompts": prompts, "prompt_tokens": [tokens for _, tokens in longest], "new_tokens": new_tokens,
            "max_batch_size": settings.max_batch_size, "idle_mb": idle_mb, **figures}


def under_load(process: ManagedProcess, url: str, client: LLMClient, texts: list[str],
               new_tokens: int) -> dict[str, Any]:
    """Stream every text at once; swap to bfloat16 when all have a first token; the peak until the last ends."""
    all_started = threading.Barrier(len(texts) + 1, timeout=READY_TIMEOUT_S)
    endings: list[str] = []
    lock = threading.Lock()

    def one(text: str) -> None:
        seen = False
        try:
            for event in LLMClient(url, timeout=READY_TIMEOUT_S).stream([{"role": "user", "content": text}],
                                                                        max_new_tokens=new_tokens):
                if event["event"] == "token" and not seen:
                    seen = True
                    all_started.wait()
                elif event["event"] in ("done", "error"):
                    with lock:
                        endings.append(event.get("finish_reason", event["event"]) if event["event"] == "done"
                                       else f"error: {event.get('message')}")
        except Exception as error:  # noqa: BLE001 - reported as this request's ending
            with lock:
                endings.append(f"failed: {error!r}")
            if not seen:
                all_started.abort()

    with peak_rss(process.pid) as peak:
        threads = [threading.Thread(target=one, args=(text,)) for text in texts]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        try:
            all_started.wait()
        except threading.BrokenBarrierError as error:
            raise BenchmarkError(f"a request failed before its first token: {endings}") from error
        before_swap_mb = rss_mb(process.pid)
        first_tokens_s = time.perf_counter() - started
        swap(client, BFLOAT16.name)
        swapped_s = time.perf_counter() - started
        for thread in threads:
            thread.join()
    failed = [ending for ending in endings if ending not in ("stop", "length")]
    if failed or len(endings) != len(texts):
        raise BenchmarkError(f"requests failed during the swap: {endings}")
    return {"first_tokens_s": first_tokens_s, "swapped_s": swapped_s, "before_swap_mb": before_swap_mb,
            "peak_mb": peak["peak_mb"], "after_mb": rss_mb(process.pid), "endings": endings}


def format_report(results: dict[str, Any]) -> str:
    tokens = results["prompt_tokens"]
    return "\n".join([
        f"a swap float32 -> bfloat16 with {results['prompts']} streamed prompts of {min(tokens)}-{max(tokens)} "
        f"tokens in flight, each asking for {results['new_tokens']} tokens (LLM_MAX_BATCH_SIZE "
        f"{results['max_batch_size']}), on a fresh process",
        f"resident, one model idle:       {results['idle_mb']:>6.0f} MB (the baseline)",
        f"resident, batch decoding:        {results['before_swap_mb']:>6.0f} MB "
        f"(all first tokens after {results['first_tokens_s']:.1f} s)",
        f"peak, swap and batch together:   {results['peak_mb']:>6.0f} MB = {results['peak_mb'] * MB / MiB:.0f} MiB"
        f" ({results['peak_mb'] / results['idle_mb']:.2f}x the baseline; swap done at {results['swapped_s']:.1f} s)",
        f"resident after the last answer:  {results['after_mb']:>6.0f} MB; every request ended: "
        f"{', '.join(sorted(set(results['endings'])))}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, help="long prompts in flight (default LLM_MAX_BATCH_SIZE)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.prompts is not None and args.prompts < 1:
        parser.error("--prompts must be at least 1")
    try:
        results = run_benchmark(args.prompts)
    except (BenchmarkError, ProcessError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 2
    print(format_report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
