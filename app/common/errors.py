"""The error shape both services answer with, and the helpers that build it.

Every error a client sees is JSON of one shape::

    {"error": "<kind>", "message": "<what happened>", "details": [{"field": ..., "reason": ..., "type": ...}]}

(plus ``"state"`` where a lifecycle state is the reason), so a client, a learner or a log query reads any of
them the same way. Each service defines its own exceptions in its ``errors`` module; :func:`install_error_handlers`
maps them, and every other error, to responses. A service that also speaks another API's dialect under a path
prefix (the LLM service's OpenAI-compatible ``/v1/``) gives a :data:`Formatter` for it, which rewrites the status
and body there. What both services raise alike (:class:`ModelNotReadyError`, the body guard's 413 and 415) is
defined here once; ``app.common.schemas`` documents the shape in OpenAPI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)


class ServiceError(HTTPException):
    """Base of the errors a service maps to a status code.

    It is an ``HTTPException`` so that FastAPI lets it through when it is raised while the body is read
    (FastAPI turns any other exception there into a 400).
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

    def body(self) -> dict[str, Any]:
        return error_body(self.kind, self.message, self.details, **({"state": self.state} if self.state else {}))


class ModelNotReadyError(ServiceError):
    """No model serves (none loaded yet, still loading, or the load failed); the message says which."""

    status_code = 503
    kind = "model_not_ready"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    kind = "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    kind = "unsupported_media_type"


def error_body(kind: str, message: str, details: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": kind, "message": message, "details": details or [], **extra}


def field_of(location: tuple | list) -> str:
    """``("body", "instances", 3, "alcohol")`` -> ``"instances[3].alcohol"``."""
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


def validation_body(details: list[dict[str, Any]]) -> dict[str, Any]:
    summary = "; ".join(f"{d['field']}: {d['reason']}" for d in details[:5])
    return error_body("validation_error", f"invalid request: {summary}", details)


def undecodable_json(error: StarletteHTTPException) -> list[dict[str, Any]] | None:
    """The details of a 422 for a body ``json.loads`` could not decode, or None for any other HTTP error.

    FastAPI answers such a body (not UTF-8, nested too deep) with a bare 400; it is malformed JSON like any
    other, so the services answer it with the same documented 422.
    """
    if error.status_code != 400 or not isinstance(error.__cause__, ValueError | RecursionError):
        return None
    cause = error.__cause__
    reason = "body is not UTF-8" if isinstance(cause, UnicodeDecodeError) else type(cause).__name__
    return [{"field": "body", "reason": f"JSON decode error: {reason}", "type": "json_invalid"}]


def http_error_headers(app: FastAPI, request: Request, error: StarletteHTTPException) -> dict[str, str]:
    """The error's headers, with a 405's ``Allow`` naming every method of the path.

    Starlette's names the methods of the first route of the path only, which is wrong for a path with
    two routes (``GET /model`` and ``POST /model``).
    """
    headers = dict(error.headers or {})
    if error.status_code == 405:
        methods: set[str] = set()
        for route in app.router.routes:
            match, _ = route.matches({**request.scope, "method": "GET", "type": "http"})
            if match is not Match.NONE:
                methods |= set(getattr(route, "methods", None) or ())
        headers["Allow"] = ", ".join(sorted(methods))
    return headers


def http_error_kind(status_code: int) -> str:
    return {404: "not_found", 405: "method_not_allowed"}.get(status_code, "http_error")


REFUSED_STATUSES = (413, 415, 422)  # refused input, as opposed to a service that cannot answer

Formatter = Callable[[int, dict[str, Any]], tuple[int, dict[str, Any]]]
"""``(status, shared body) -> (status, body)``: an error in another API's shape, for the paths it serves."""


def install_error_handlers(app: FastAPI, on_rejected: Callable[[Request, list[dict[str, Any]]], None],
                           formatters: Mapping[str, Formatter] | None = None) -> None:
    """Map every exception to the shared JSON shape; ``on_rejected(request, details)`` hears of refused input.

    ``details`` are the body's ``details`` (for a refusal that has none, one entry for the body), so a
    service can count refusals by field and reason, or once per request. ``formatters`` maps a path prefix
    to the :data:`Formatter` of the errors under it (the first prefix that matches applies; headers such as
    Retry-After and Allow are kept).
    """
    prefixes = tuple((formatters or {}).items())

    def respond(request: Request, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
                ) -> JSONResponse:
        path = request.url.path
        formatter = next((f for prefix, f in prefixes if path.startswith(prefix)), None)
        if formatter is not None:
            status, body = formatter(status, body)
        return JSONResponse(status_code=status, content=body, headers=dict(headers) if headers else None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        details = validation_details(error)
        on_rejected(request, details)
        return respond(request, 422, validation_body(details))

    @app.exception_handler(ServiceError)
    async def _domain(request: Request, error: ServiceError) -> JSONResponse:
        if error.status_code in REFUSED_STATUSES:
            on_rejected(request, error.details or [{"field": "body", "reason": error.message, "type": error.kind}])
        return respond(request, error.status_code, error.body(), error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        details = undecodable_json(error)
        if details is not None:
            on_rejected(request, details)
            return respond(request, 422, validation_body(details))
        return respond(request, error.status_code, error_body(http_error_kind(error.status_code), str(error.detail)),
                       http_error_headers(app, request, error))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return respond(request, 500, error_body("internal_error", "internal server error"))
