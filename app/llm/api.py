"""The LLM chat service's ASGI app, ``app.llm.api:app``, which ``python -m app.llm`` serves.

:func:`create_app` builds an independent app (its own settings, lifecycle,
generation pool and metrics registry), so tests and notebooks can create as
many as they like. ``LLM_DEFAULT_MODEL`` loads in the background from the
lifespan, so ``/health`` answers at once and ``/ready`` turns 200 when the
model serves. Beside its own routes, the service speaks OpenAI's API under ``/v1/``
(:mod:`app.llm.routers.openai_compat`), with OpenAI's error shape there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from app.common.errors import install_error_handlers
from app.common.guards import BodyGuard
from app.common.http import add_routes, expose_http_metrics
from app.common.logs import configure_logging
from app.common.probes import router as liveness
from app.llm.config import Settings
from app.llm.dependencies import Serving
from app.llm.generation import Generator
from app.llm.manager import Loader, ModelManager
from app.llm.metrics import HTTP_LATENCY_BUCKETS, LLMMetrics
from app.llm.openai_schemas import openai_error
from app.llm.routers import completion, model, openai_compat, probes

DESCRIPTION = """Chat completions from a HuggingFace `transformers` model that can be swapped while the
service runs: `POST /model` loads a new model in the background while the old one keeps serving, and
`GET /status` shows the lifecycle (NOT_DEPLOYED, LOADING, RUNNING, FAILED). OpenAI's clients talk to it under
`/v1` (`POST /v1/chat/completions`, `GET /v1/models`), with OpenAI's error shape there."""
COMPLETION_PATHS = ("/completion", "/v1/chat/completions")


def create_app(settings: Settings | None = None, loader: Loader | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    metrics = LLMMetrics()
    manager = ModelManager(settings, metrics, loader=loader)
    generator = Generator(settings.max_batch_size, settings.max_queue, settings.retry_after_s,
                          on_depth=metrics.queue_depth.set, on_completion=metrics.observe_completion,
                          on_abandoned=lambda: metrics.completion("cancelled"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        generator.start()
        manager.start_default()
        yield
        generator.shutdown()

    app = FastAPI(title="LLM chat", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.metrics = settings, metrics
    app.state.serving = Serving(settings, manager, generator, metrics)

    routers = (liveness, probes.router, model.router, completion.build_router(settings),
               openai_compat.build_router(settings))
    for router in routers:
        add_routes(app, router)

    def on_rejected(request: Request, details: list[dict]) -> None:
        if request.url.path in COMPLETION_PATHS:  # once per refused completion, whatever its fields
            metrics.completion("invalid")

    install_error_handlers(app, on_rejected, formatters={"/v1/": openai_error})
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes, setting="LLM_MAX_BODY_BYTES",
                       advice="send a shorter conversation")
    expose_http_metrics(app, metrics.registry, HTTP_LATENCY_BUCKETS)  # last: the outermost middleware
    return app


app = create_app()
