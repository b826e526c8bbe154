"""Readiness: 200 once the model is loaded. Liveness (``/health``) is both services' one route, ``app.common.probes``:
a process without a model is alive but not ready."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.wine.dependencies import ModelDep
from app.wine.errors import ModelNotReadyError
from app.wine.schemas import ErrorResponse

router = APIRouter(tags=["probes"])


@router.get(
    "/ready",
    summary="Readiness: 200 once the model is loaded, 503 before",
    responses={503: {"model": ErrorResponse, "description": "The model is not loaded; the body says why."}},
)
async def ready(model: ModelDep) -> JSONResponse:
    if not model.ready:
        not_ready = ModelNotReadyError(model.not_ready_reason())
        return JSONResponse(status_code=not_ready.status_code, content=not_ready.body())
    return JSONResponse({"status": "ready", "model_version": model.version})
