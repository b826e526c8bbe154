"""Checks for notebook 07's exercises."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workshop.exercises import Verdict, done, not_done, wrong
from workshop.llm_client import LLMClient


def check_failed_swap(client: LLMClient, statuses: Sequence[dict[str, Any]] | None, *, serving_before: str,
                      conversation: list[dict[str, str]], max_new_tokens: int) -> Verdict:
    """Exercise: ask for a model that cannot load. The swap must fail *safely*: state FAILED, the previous model
    still serving, /ready 200 and completions answered by it."""
    if statuses is None:
        return not_done("set `typo_swap` to what `watch_swap(...)` returns for a model id with a typo")
    last = statuses[-1]
    if last["state"] != "FAILED":
        return wrong(f"the swap ended in {last['state']}, serving {last['serving_model_id']}: that model loaded. "
                     "Ask for one that cannot, e.g. a hub id with a letter missing")
    if last["serving_model_id"] != serving_before:
        return wrong(f"{last['serving_model_id']} serves now, not {serving_before}: the failed swap lost the model")
    if not client.ready():
        return wrong("/ready no longer answers 200 after the failed swap")
    answered = client.complete(conversation, max_new_tokens=max_new_tokens)["model"]
    if answered != serving_before:
        return wrong(f"a completion came from {answered}, not from {serving_before}")
    reason = (last.get("last_error") or {}).get("message", "")
    return done(f"FAILED, and {serving_before} still serves and answers. The service said why: {reason[:160]}")
