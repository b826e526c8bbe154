"""Domain exceptions of the LLM service and the one place that maps them to HTTP.

The JSON shape of every error is the one both services share (``app.common.errors``), plus ``"state"``
when the lifecycle is the reason (503, 409), so a client knows whether to wait (LOADING) or to act
(NOT_DEPLOYED, FAILED).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.common.errors import (
    PayloadTooLargeError,
    ServiceError,
    UnsupportedMediaTypeError,
    error_body,
    http_error_headers,
    http_error_kind,
    undecodable_json,
    validation_body,
    validation_details,
)

__all__ = ["GenerationError", "InputTooLongError", "InvalidModelIdError", "LLMServiceError", "ModelNotReadyError",
           "OverloadedError", "PayloadTooLargeError", "SwapInProgressError", "UnsupportedMediaTypeError",
           "error_body", "install_error_handlers"]

log = logging.getLogger(__name__)


class LLMServiceError(ServiceError):
    """Base of the LLM service's own errors (``state`` adds the lifecycle state to the body)."""


class ModelNotReadyError(LLMServiceError):
    """No model serves (NOT_DEPLOYED, the first LOADING, or a first load that FAILED)."""

    status_code = 503
    kind = "model_not_ready"


class OverloadedError(LLMServiceError):
    """Every generation slot is busy and the queue is full: come back later (Retry-After)."""

    status_code = 429
    kind = "overloaded"


class InvalidModelIdError(LLMServiceError):
    """A model_id that is neither a folder under the models directory nor a hub id."""

    status_code = 422
    kind = "invalid_model_id"

    def __init__(self, model_id: str, reason: str, field: str = "model_id") -> None:
        super().__init__(
            f"{field} {model_id!r} is refused: {reason}",
            [{"field": field, "reason": reason, "type": "invalid_model_id"}],
        )


class InputTooLongError(LLMServiceError):
    """The prompt, once the chat template is applied, has more tokens than allowed."""

    status_code = 422
    kind = "validation_error"


class SwapInProgressError(LLMServiceError):
    status_code = 409
    kind = "load_in_progress"


class GenerationError(LLMServiceError):
    """The model raised while generating; the message says what, the log has the traceback."""

    status_code = 500
    kind = "generation_error"


def install_error_handlers(app: FastAPI, on_invalid: Callable[[Request], None]) -> None:
    """Map exceptions to responses; ``on_invalid(request)`` is told of every 422 (for the metrics)."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        on_invalid(request)
        return JSONResponse(status_code=422, content=validation_body(validation_details(error)))

    @app.exception_handler(ServiceError)
    async def _domain(request: Request, error: ServiceError) -> JSONResponse:
        if error.status_code in (413, 415, 422):
            on_invalid(request)
        return JSONResponse(status_code=error.status_code, content=error.body(), headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        details = undecodable_json(error)
        if details is not None:
            on_invalid(request)
            return JSONResponse(status_code=422, content=validation_body(details))
        return JSONResponse(status_code=error.status_code,
                            content=error_body(http_error_kind(error.status_code), str(error.detail)),
                            headers=http_error_headers(app, request, error))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(status_code=500, content=error_body("internal_error", "internal server error"))
