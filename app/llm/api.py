"""The LLM chat service: ``uvicorn app.llm.api:app``.

:func:`create_app` builds an independent app (its own settings, lifecycle,
generation pool and metrics registry), so tests and notebooks can create as
many as they like. ``LLM_DEFAULT_MODEL`` loads in the background from the
lifespan, so ``/health`` answers at once and ``/ready`` turns 200 when the
model serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics

from app.common.guards import BodyGuard
from app.common.logs import configure_logging
from app.llm.config import Settings
from app.llm.dependencies import Serving
from app.llm.errors import install_error_handlers
from app.llm.generation import Generator
from app.llm.manager import Loader, ModelManager
from app.llm.metrics import HTTP_LATENCY_BUCKETS, LLMMetrics
from app.llm.routers import completion, model, probes

DESCRIPTION = """Chat completions from a HuggingFace `transformers` model that can be swapped while the
service runs: `POST /model` loads a new model in the background while the old one keeps serving, and
`GET /status` shows the lifecycle (NOT_DEPLOYED, LOADING, RUNNING, FAILED)."""


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add a router's routes to the app itself (cheaper per request than ``include_router``, as in the wine app)."""
    app.router.routes.extend(router.routes)


def create_app(settings: Settings | None = None, loader: Loader | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    metrics = LLMMetrics()
    manager = ModelManager(settings, metrics, loader=loader)
    generator = Generator(settings.max_concurrency, settings.max_queue, settings.retry_after_s,
                          on_depth=metrics.queue_depth.set)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        generator.start()
        manager.start_default()
        yield
        generator.shutdown()

    app = FastAPI(title="LLM chat", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.metrics = settings, metrics
    app.state.serving = Serving(settings, manager, generator, metrics)

    for router in (probes.router, model.router, completion.build_router(settings)):
        add_routes(app, router)

    def on_invalid(request: Request) -> None:
        if request.url.path == "/completion":
            metrics.completion("invalid")

    install_error_handlers(app, on_invalid=on_invalid)
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes, setting="LLM_MAX_BODY_BYTES",
                       advice="send a shorter conversation")
    instrumentator = Instrumentator(
        registry=metrics.registry, excluded_handlers=["/metrics"], should_instrument_requests_inprogress=False
    )
    instrumentator.add(
        http_metrics.requests(registry=metrics.registry),
        http_metrics.latency(buckets=HTTP_LATENCY_BUCKETS, registry=metrics.registry),
    )
    instrumentator.instrument(app).expose(app, include_in_schema=False)
    return app


app = create_app()
