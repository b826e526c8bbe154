"""Domain exceptions and the one place that maps them (and validation errors) to HTTP.

Every error a client sees is JSON of one shape::

    {"error": "<kind>", "message": "<what happened>", "details": [{"field": ..., "reason": ...}]}

so a client, a learner or a log query can read any of them the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class WineServiceError(HTTPException):
    """Base of the errors the API maps to a status code.

    It is an ``HTTPException`` so that FastAPI lets it through when it is raised
    while the body is read (FastAPI turns any other exception there into a 400).
    """

    status_code = 500
    kind = "internal_error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(status_code=type(self).status_code, detail=message)
        self.message = message
        self.details = details or []


class ModelNotReadyError(WineServiceError):
    status_code = 503
    kind = "model_not_ready"


class PayloadTooLargeError(WineServiceError):
    status_code = 413
    kind = "payload_too_large"


class UnsupportedMediaTypeError(WineServiceError):
    status_code = 415
    kind = "unsupported_media_type"


def error_body(kind: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": kind, "message": message, "details": details or []}


def field_of(location: tuple | list) -> str:
    """``("body", "instances", 3, "alcohol")`` -> ``"instances[3].alcohol"``."""
    parts = [p for p in location if p != "body"]
    text = ""
    for part in parts:
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


def install_error_handlers(app: FastAPI, on_rejected) -> None:
    """Map exceptions to responses; ``on_rejected(reason, field)`` counts refused input."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        details = validation_details(error)
        for detail in details:
            on_rejected(detail["type"] or "invalid", detail["field"].split(".")[-1].split("[")[0])
        summary = "; ".join(f"{d['field']}: {d['reason']}" for d in details[:5])
        return JSONResponse(
            status_code=422, content=error_body("validation_error", f"invalid request: {summary}", details)
        )

    @app.exception_handler(WineServiceError)
    async def _domain(request: Request, error: WineServiceError) -> JSONResponse:
        if error.status_code in (413, 415):
            on_rejected(error.kind, "body")
        return JSONResponse(status_code=error.status_code, content=error_body(error.kind, error.message, error.details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and isinstance(error.__cause__, ValueError | RecursionError):
            # FastAPI answers a body json.loads cannot decode (not UTF-8, nested too deep) with a bare 400;
            # it is malformed JSON like any other, so it gets the same documented 422.
            cause = error.__cause__
            reason = "body is not UTF-8" if isinstance(cause, UnicodeDecodeError) else type(cause).__name__
            reason = f"JSON decode error: {reason}"
            on_rejected("json_invalid", "body")
            details = [{"field": "body", "reason": reason, "type": "json_invalid"}]
            return JSONResponse(
                status_code=422, content=error_body("validation_error", f"invalid request: body: {reason}", details)
            )
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse(
            status_code=error.status_code, content=error_body(kind, str(error.detail)), headers=error.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(status_code=500, content=error_body("internal_error", "internal server error"))
