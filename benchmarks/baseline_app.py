"""The least an app on the wine service's stack can do: parse the same body, answer a constant.

The benchmark serves this app with the same uvicorn, options and Python as the
service, so the service's ratio to it measures what the service adds (model,
metrics, middleware, response models) on top of what any FastAPI app pays for
HTTP and for validating the same request schema.
"""

# No `from __future__ import annotations`: FastAPI must see the request classes, as in app/wine/routers/predict.py.
from fastapi import FastAPI, Response

from app.wine.config import Settings
from app.wine.schemas import WineInput, batch_request_model

# Bytes built once: the baseline's own work must be nothing but parsing the request.
PREDICTION = b'{"quality":5.0,"model_version":"baseline"}'
READY = b'{"status":"ready","model_version":"baseline"}'

# The service's batch limit, so the batch schema (and its validation) is the service's.
BatchRequest = batch_request_model(Settings().max_batch_size)

app = FastAPI(title="Wine service baseline")


@app.get("/ready")
async def ready() -> Response:
    """Same probe as the service, so the benchmark waits for both the same way."""
    return Response(READY, media_type="application/json")


@app.post("/predict")
async def predict(wine: WineInput) -> Response:
    """One wine, parsed and validated like the service's, then ignored."""
    return Response(PREDICTION, media_type="application/json")


@app.post("/predict/batch")
async def predict_batch(batch: BatchRequest) -> Response:  # type: ignore[valid-type]
    """A batch, parsed and validated like the service's, then ignored."""
    return Response(PREDICTION, media_type="application/json")
