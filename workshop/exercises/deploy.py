"""Checks for notebook 04's exercises."""

from __future__ import annotations

from typing import Any

from app.wine.schemas import EXAMPLE_WINE
from workshop.client import WineClient
from workshop.exercises import Verdict, done, not_done, wrong


def check_rolled_out(where: Any, url: str, rollout: Any, *, version: str, replicas: int, setting: str,
                     value: str) -> Verdict:
    """Exercise: a rollout that works. Every replica must run the new setting, be ready, and still serve the
    model of notebook 01: a rolling update changes how the service runs, not what it answers."""
    if rollout is None:
        return not_done(f'set `good_rollout` to what `where.roll_out("wine", {setting}="{value}", ...)` returns')
    variable = f"WINE_{setting.upper()}"
    # Local replicas and a cluster's Deployment both carry the WINE_* settings they run with.
    settings = [d.env.get(variable) for d in where.deployments if d.name == "wine" and d.running]
    if not settings or any(found != value for found in settings):
        return wrong(f"the replicas run with {variable}={settings}: roll out {setting}={value!r}")
    ready = where.ready_replicas("wine")
    if ready < replicas:
        return wrong(f"only {ready} of {replicas} replicas are ready after the rollout")
    answered = WineClient(url).predict(EXAMPLE_WINE)["model_version"]
    if answered != version:
        return wrong(f"the service now answers with model {answered}, not {version}")
    return done(f"{ready} replicas ready, each with {variable}={value}, and model {version} still answers: "
                "the new replicas took over one by one while the old ones served")

