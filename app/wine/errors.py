"""The wine service's domain exceptions and the one place that maps them (and validation errors) to HTTP.

The JSON shape of every error is the one both services share (``app.common.errors``).
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

__all__ = ["ModelNotReadyError", "PayloadTooLargeError", "UnsupportedMediaTypeError", "WineServiceError",
           "error_body", "install_error_handlers"]

log = logging.getLogger(__name__)


class WineServiceError(ServiceError):
    """Base of the wine service's own errors."""


class ModelNotReadyError(WineServiceError):
    status_code = 503
    kind = "model_not_ready"


def install_error_handlers(app: FastAPI, on_rejected: Callable[[str, str], None]) -> None:
    """Map exceptions to responses; ``on_rejected(reason, field)`` counts refused input."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        details = validation_details(error)
        for detail in details:
            on_rejected(detail["type"] or "invalid", detail["field"].split(".")[-1].split("[")[0])
        return JSONResponse(status_code=422, content=validation_body(details))

    @app.exception_handler(ServiceError)
    async def _domain(request: Request, error: ServiceError) -> JSONResponse:
        if error.status_code in (413, 415):
            on_rejected(error.kind, "body")
        return JSONResponse(status_code=error.status_code, content=error.body(), headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        details = undecodable_json(error)
        if details is not None:
            on_rejected("json_invalid", "body")
            return JSONResponse(status_code=422, content=validation_body(details))
        return JSONResponse(status_code=error.status_code,
                            content=error_body(http_error_kind(error.status_code), str(error.detail)),
                            headers=http_error_headers(app, request, error))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(status_code=500, content=error_body("internal_error", "internal server error"))
