"""The wine-quality HTTP service's ASGI app, ``app.wine.api:app``, which ``python -m app.wine`` serves.

:func:`create_app` builds an independent app (its own settings, model and
metrics registry), so tests and notebooks can create as many as they like.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from app.common.errors import install_error_handlers
from app.common.guards import BodyGuard
from app.common.http import add_routes, expose_http_metrics
from app.common.logs import configure_logging
from app.common.probes import router as liveness
from app.wine.config import Settings
from app.wine.dependencies import Serving
from app.wine.metrics import HTTP_LATENCY_BUCKETS, InFlightRequests, WineMetrics
from app.wine.model import WineModel
from app.wine.routers import model_card, predict, probes

DESCRIPTION = """Predicts the sensory quality (0-10) of a Portuguese *vinho verde* from 11
physicochemical measurements and its colour. Every field carries its unit and
physical bounds; invalid input gets a 4xx whose `details` name the field and the reason."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    model = WineModel(settings.model_dir, threads=settings.inference_threads)
    metrics = WineMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if model.load():
            metrics.set_model(model.card)
        # Everything alive now (modules, the model) lives as long as the process: moving it out of
        # the collector's reach turns the full collections that batch traffic triggers from tens of
        # milliseconds of stalled event loop into a few.
        gc.collect()
        gc.freeze()
        yield

    app = FastAPI(title="Wine quality", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.model, app.state.metrics = settings, model, metrics
    app.state.serving = Serving(model, metrics)

    for router in (liveness, probes.router, model_card.router, predict.build_router(settings.max_batch_size)):
        add_routes(app, router)

    def on_rejected(request: Request, details: list[dict]) -> None:
        for detail in details:  # by reason and field: which inputs clients get wrong
            metrics.reject(detail["type"] or "invalid", detail["field"].split(".")[-1].split("[")[0])

    install_error_handlers(app, on_rejected)

    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes, setting="WINE_MAX_BODY_BYTES",
                       advice="send a smaller batch")
    app.add_middleware(InFlightRequests, metrics=metrics)
    expose_http_metrics(app, metrics.registry, HTTP_LATENCY_BUCKETS)  # last: the outermost middleware
    return app


app = create_app()
