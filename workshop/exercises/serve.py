"""Checks for notebook 02's exercises."""

from __future__ import annotations

import json
from typing import Any

from workshop.client import WineClient
from workshop.exercises import Verdict, done, not_done, wrong


def check_batch_names_the_bad_wine(client: WineClient, body: dict[str, Any] | None, *, index: int = 2) -> Verdict:
    """Exercise: a batch whose wine number ``index`` (0-based) has an impossible colour is refused, and the
    error names that wine and that field, so a client with a thousand rows knows which one to fix."""
    if body is None:
        return not_done("set `bad_batch` to a body for /predict/batch: three wines, the third with colour 'rosé'")
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or len(instances) <= index:
        return wrong(f'the body needs an "instances" list of at least {index + 1} wines')
    response = client.post_raw("/predict/batch", json.dumps(body))
    if response.status_code == 200:
        return wrong("the service accepted this batch: every wine in it is valid. Change the third one's colour")
    if response.status_code != 422:
        return wrong(f"expected a 422, got {response.status_code}: {response.text[:200]}")
    fields = [detail["field"] for detail in response.json()["details"]]
    wanted = f"instances[{index}].color"
    if fields == [wanted]:
        return done(f"422, and the only detail names {wanted}: the other wines were fine, and the client can tell")
    return wrong(f"the 422 names {fields}; only {wanted} should be wrong (the other wines must be valid)")
