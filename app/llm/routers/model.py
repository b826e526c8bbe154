"""The model lifecycle as resources: ``GET /status``, ``GET /model``, ``POST /model`` (swap)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.llm.dependencies import ServingDep
from app.llm.lifecycle import Snapshot
from app.llm.schemas import ErrorResponse, ModelResponse, StatusResponse, SwapRequest

router = APIRouter(tags=["model"])


def status_body(snapshot: Snapshot) -> dict[str, Any]:
    error = snapshot.last_error
    return {
        "state": snapshot.state.value,
        "ready": snapshot.ready,
        "serving_model_id": snapshot.serving_model_id,
        "loading_model_id": snapshot.loading_model_id,
        "last_error": None if error is None else
        {"model_id": error.model_id, "message": error.message, "at": error.at.isoformat()},
        "state_since": snapshot.since.isoformat(),
        "entered_at": {state.value: at.isoformat() if at else None for state, at in snapshot.entered.items()},
        "loads": snapshot.loads,
    }


@router.get("/status", summary="The lifecycle: state, serving and loading model, errors", response_model=StatusResponse)
async def status(serving: ServingDep) -> dict[str, Any]:
    return status_body(serving.manager.lifecycle.snapshot())


@router.get(
    "/model", summary="The model serving: id, source, dtype, parameter count", response_model=ModelResponse,
    responses={503: {"model": ErrorResponse, "description": "No model serves; the body says the state."}},
)
async def model(serving: ServingDep) -> dict[str, Any]:
    return serving.manager.serving_or_503().describe()


@router.post(
    "/model", status_code=202, response_model=StatusResponse,
    summary="Swap the model: load it in the background, then serve it (the old one serves meanwhile)",
    responses={
        409: {"model": ErrorResponse, "description": "A load is in progress; wait until /status leaves LOADING."},
        413: {"model": ErrorResponse, "description": "Body larger than LLM_MAX_BODY_BYTES."},
        415: {"model": ErrorResponse, "description": "Content type is not application/json."},
        422: {"model": ErrorResponse, "description": "A model_id that is not a folder under LLM_MODELS_DIR nor a hub "
              "id (URLs, path traversal and absolute paths elsewhere are refused)."},
    },
)
async def swap(request: SwapRequest, serving: ServingDep) -> JSONResponse:
    snapshot = serving.manager.swap(request.model_id, request.revision)
    return JSONResponse(status_code=202, content=status_body(snapshot))
