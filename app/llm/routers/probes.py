"""Readiness; liveness (``/health``) is both services' one route, ``app.common.probes``: a process loading its
first model is alive but not ready.

Readiness follows what serves, not the lifecycle state: during a swap (LOADING)
and after a failed one (FAILED) the previous model still answers, so the pod
stays in its Service's endpoints.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.llm.dependencies import ServingDep
from app.llm.errors import ModelNotReadyError
from app.llm.manager import not_ready_reason
from app.llm.schemas import ErrorResponse

router = APIRouter(tags=["probes"])


@router.get(
    "/ready",
    summary="Readiness: 200 whenever a model serves, 503 before",
    responses={503: {"model": ErrorResponse, "description": "No model serves; the body says the state and why."}},
)
async def ready(serving: ServingDep) -> JSONResponse:
    snapshot = serving.manager.lifecycle.snapshot()
    if not snapshot.ready:
        not_ready = ModelNotReadyError(not_ready_reason(snapshot), state=snapshot.state.value)
        return JSONResponse(status_code=not_ready.status_code, content=not_ready.body())
    return JSONResponse({"status": "ready", "model_id": snapshot.serving_model_id, "state": snapshot.state.value})
