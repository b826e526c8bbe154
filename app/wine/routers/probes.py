"""Liveness and readiness, kept apart: a process without a model is alive but not ready."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.wine.dependencies import ModelDep
from app.wine.errors import error_body

router = APIRouter(tags=["probes"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: 200 once the model is loaded, 503 before",
    responses={503: {"description": "The model is not loaded; the body says why."}},
)
async def ready(model: ModelDep) -> JSONResponse:
    if not model.ready:
        return JSONResponse(status_code=503, content=error_body("model_not_ready", model.not_ready_reason()))
    return JSONResponse({"status": "ready", "model_version": model.version})
