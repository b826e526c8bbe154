"""Many chat clients at once: the LLM service's throughput and latency against concurrency (notebook 07).

Each level runs ``clients`` threads that each stream ``rounds`` completions, one after the other, from
the first byte sent to the ``done`` event: what a user waits for (latency), when the first piece of text
arrives (time to first token), and how many tokens the service produced for all of them per second of
wall time (throughput). A batching server turns more clients into more tokens per second; each client's
own answer comes somewhat slower.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from workshop.llm_client import LLMClient


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a value that was measured."""
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * q // 100)) - 1]


def stream_once(client: LLMClient, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, float]:
    """One streamed completion as its client sees it: latency, time to first token, tokens (and the
    service's own generation time)."""
    started, first, done = time.perf_counter(), None, None
    for event in client.stream(messages, max_new_tokens=max_new_tokens):
        if event["event"] == "token" and first is None:
            first = time.perf_counter() - started
        elif event["event"] == "done":
            done = event
        elif event["event"] == "error":
            raise RuntimeError(f"a completion failed: {event.get('message', event)}")
    if done is None:
        raise RuntimeError("a stream ended without its done event")
    elapsed = time.perf_counter() - started
    return {"latency_s": elapsed, "ttft_s": first if first is not None else elapsed,
            "tokens": done["usage"]["completion_tokens"], "generation_s": done["generation_seconds"]}


def concurrency_sweep(url: str, conversations: Sequence[list[dict[str, str]]], levels: Sequence[int] = (1, 4, 8),
                      *, max_new_tokens: int = 48, rounds: int = 1, timeout: float = 300.0) -> pd.DataFrame:
    """One row per level of concurrent clients: tokens/s for all of them, latency and time to first token.

    Client ``i`` sends ``conversations[i % len(conversations)]``, so the levels ask for the same work per
    client. Greedy decoding: the answers, and so the token counts, do not depend on the concurrency.
    """
    if not conversations or not levels or rounds < 1:
        raise ValueError("give at least one conversation, one level and one round")
    rows = []
    with LLMClient(url, timeout=timeout) as client:
        for clients in levels:
            def run_client(index: int) -> list[dict[str, float]]:
                messages = list(conversations[index % len(conversations)])
                return [stream_once(client, messages, max_new_tokens) for _ in range(rounds)]

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                results = [result for client_results in pool.map(run_client, range(clients))
                           for result in client_results]
            wall = time.perf_counter() - started
            latencies, ttfts = [r["latency_s"] for r in results], [r["ttft_s"] for r in results]
            rows.append({"clients": clients, "completions": len(results),
                         "tokens/s": sum(r["tokens"] for r in results) / wall,
                         "latency p50 s": statistics.median(latencies), "latency p95 s": _percentile(latencies, 95),
                         "first token p50 s": statistics.median(ttfts),
                         "first token p95 s": _percentile(ttfts, 95)})
    return pd.DataFrame(rows).set_index("clients")
