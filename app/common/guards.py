"""Cheap checks on a request body before anything parses it.

A pure ASGI middleware (no ``BaseHTTPMiddleware`` overhead): a body with a
non-JSON content type gets a 415 and a body over ``max_body_bytes`` a 413,
whether the client announces its length or streams it chunked. Without it, a
100 MB body would be read and parsed in full before any field limit could refuse
it. The errors are raised inside the app so its error handlers shape the response.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.common.errors import PayloadTooLargeError, UnsupportedMediaTypeError

BODY_METHODS = {b"POST", b"PUT", b"PATCH"}


class BodyGuard:
    """``setting`` names the limit's variable and ``advice`` what to send instead, in the 413's message."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, *, setting: str, advice: str) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.setting = setting
        self.advice = advice

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].encode() not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        problem: Exception | None = None
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            shown = content_type.decode("latin-1") or "none"
            problem = UnsupportedMediaTypeError(f"content-type must be application/json, got {shown}")
        elif _announced_length(headers) > self.max_body_bytes:
            problem = PayloadTooLargeError(self._too_large_message())
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            if problem is not None:
                raise problem
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLargeError(self._too_large_message())
            return message

        await self.app(scope, counting_receive, send)

    def _too_large_message(self) -> str:
        return f"request body exceeds {self.max_body_bytes} bytes ({self.setting}); {self.advice}"


def _announced_length(headers: dict[bytes, bytes]) -> int:
    """Content-Length as sent; a malformed one counts as unannounced (the streamed count still applies)."""
    try:
        return int(headers.get(b"content-length", b"0") or 0)
    except ValueError:
        return 0
