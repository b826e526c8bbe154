"""Predictions: one wine, or a batch in one model call.

The handlers are ``async``: the model call is tens of microseconds for one
row and well under a millisecond for a batch of 100, cheaper than the hop to a
worker thread that FastAPI makes for a plain ``def`` handler.

Responses are written as JSON directly: the values are floats the service just
computed, so validating them again through the response model would only cost
time (a third of a batch request's CPU). The response models still document
the answers in OpenAPI, and the tests check the bodies against them.
"""

# No `from __future__ import annotations` here: FastAPI must see the BatchRequest
# class built inside build_router, not a string it cannot resolve.
import json
import time

from fastapi import APIRouter, Response

from app.wine.dependencies import ServingDep
from app.wine.model import encode
from app.wine.schemas import (
    BatchPredictionResponse,
    ErrorResponse,
    PredictionResponse,
    WineInput,
    batch_request_model,
)

ERRORS = {
    413: {"model": ErrorResponse, "description": "Body larger than WINE_MAX_BODY_BYTES."},
    415: {"model": ErrorResponse, "description": "Content type is not application/json."},
    422: {"model": ErrorResponse, "description": "Invalid input; `details` names each field and reason."},
    503: {"model": ErrorResponse, "description": "No model loaded yet."},
}


def _json(body: str) -> Response:
    return Response(body.encode(), media_type="application/json")


def build_router(max_batch_size: int) -> APIRouter:
    """The predict routes, with the batch limit baked into the schema."""
    router = APIRouter(prefix="/predict", tags=["predict"], responses=ERRORS)
    BatchRequest = batch_request_model(max_batch_size)

    @router.post("", summary="Predict the quality of one wine", response_model=PredictionResponse)
    async def predict(wine: WineInput, serving: ServingDep) -> Response:
        model, metrics = serving.model, serving.metrics
        X = encode((wine,))
        started = time.perf_counter()
        quality = model.predict(X)
        metrics.observe_predictions(X, quality, time.perf_counter() - started, "predict")
        # repr() of a finite float is a valid JSON number.
        return _json(f'{{"quality":{float(quality[0])!r},"model_version":{json.dumps(model.version)}}}')

    @router.post(
        "/batch", summary=f"Predict up to {max_batch_size} wines in one call", response_model=BatchPredictionResponse
    )
    async def predict_batch(batch: BatchRequest, serving: ServingDep) -> Response:  # type: ignore[valid-type]
        model, metrics = serving.model, serving.metrics
        X = encode(batch.instances)
        started = time.perf_counter()
        qualities = model.predict(X)
        metrics.observe_predictions(X, qualities, time.perf_counter() - started, "predict_batch")
        predictions = ",".join(f'{{"quality":{q!r}}}' for q in qualities.tolist())
        return _json(f'{{"predictions":[{predictions}],"model_version":{json.dumps(model.version)}}}')

    return router
