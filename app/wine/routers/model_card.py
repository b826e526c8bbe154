"""The model card of the served model: what it is, how good, trained on what."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.wine.dependencies import ModelDep
from app.wine.errors import ModelNotReadyError
from app.wine.schemas import ErrorResponse

router = APIRouter(tags=["model"])


@router.get("/model", summary="The model card", responses={503: {"model": ErrorResponse}})
async def model_card(model: ModelDep) -> dict[str, Any]:
    if model.card is None:
        raise ModelNotReadyError(model.not_ready_reason())
    return model.card
