"""Domain exceptions of the LLM service and the one place that maps them to HTTP.

Every error a client sees is JSON of one shape (the wine service's)::

    {"error": "<kind>", "message": "<what happened>", "details": [{"field": ..., "reason": ..., "type": ...}]}

plus ``"state"`` when the lifecycle is the reason (503, 409), so a client knows
whether to wait (LOADING) or to act (NOT_DEPLOYED, FAILED).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)


class LLMServiceError(HTTPException):
    """Base of the errors the API maps to a status code.

    It is an ``HTTPException`` so that FastAPI lets it through when raised while
    the body is read (FastAPI turns any other exception there into a 400).
    """

    status_code = 500
    kind = "internal_error"

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        state: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
        super().__init__(status_code=type(self).status_code, detail=message, headers=headers)
        self.message = message
        self.details = details or []
        self.state = state


class ModelNotReadyError(LLMServiceError):
    """No model serves (NOT_DEPLOYED, the first LOADING, or a first load that FAILED)."""

    status_code = 503
    kind = "model_not_ready"


class OverloadedError(LLMServiceError):
    """Every generation slot is busy and the queue is full: come back later (Retry-After)."""

    status_code = 429
    kind = "overloaded"


class PayloadTooLargeError(LLMServiceError):
    status_code = 413
    kind = "payload_too_large"


class UnsupportedMediaTypeError(LLMServiceError):
    status_code = 415
    kind = "unsupported_media_type"


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


def error_body(kind: str, message: str, details: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": kind, "message": message, "details": details or [], **extra}


def field_of(location: tuple | list) -> str:
    """``("body", "messages", 3, "content")`` -> ``"messages[3].content"``."""
    text = ""
    for part in (p for p in location if p != "body"):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_details(error: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for item in error.errors():
        # A JSON syntax error's location is a character offset, not a field.
        location = ("body",) if item.get("type") == "json_invalid" else item.get("loc", ())
        detail = {"field": field_of(location), "reason": item.get("msg", ""), "type": item.get("type", "")}
        if "ctx" in item:
            detail["context"] = jsonable_encoder(item["ctx"], custom_encoder={Exception: str})
        details.append(detail)
    return details


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of this path answers (the ``Allow`` header of a 405)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET", "type": "http"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI, on_invalid: Callable[[Request], None]) -> None:
    """Map exceptions to responses; ``on_invalid(request)`` is told of every 422 (for the metrics)."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        on_invalid(request)
        details = validation_details(error)
        summary = "; ".join(f"{d['field']}: {d['reason']}" for d in details[:5])
        return JSONResponse(
            status_code=422, content=error_body("validation_error", f"invalid request: {summary}", details)
        )

    @app.exception_handler(LLMServiceError)
    async def _domain(request: Request, error: LLMServiceError) -> JSONResponse:
        if error.status_code in (413, 415, 422):
            on_invalid(request)
        extra = {"state": error.state} if error.state else {}
        return JSONResponse(
            status_code=error.status_code, content=error_body(error.kind, error.message, error.details, **extra),
            headers=error.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and isinstance(error.__cause__, ValueError | RecursionError):
            # A body json.loads cannot decode (not UTF-8, nested too deep) is malformed JSON like any other.
            cause = error.__cause__
            reason = "body is not UTF-8" if isinstance(cause, UnicodeDecodeError) else type(cause).__name__
            on_invalid(request)
            details = [{"field": "body", "reason": f"JSON decode error: {reason}", "type": "json_invalid"}]
            return JSONResponse(
                status_code=422,
                content=error_body("validation_error", f"invalid request: body: JSON decode error: {reason}", details),
            )
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Starlette's Allow names the methods of the first route of the path only; /model has two.
            headers["Allow"] = ", ".join(allowed_methods(app, request))
        return JSONResponse(status_code=error.status_code, content=error_body(kind, str(error.detail)), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(status_code=500, content=error_body("internal_error", "internal server error"))
