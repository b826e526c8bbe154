"""How both services are served: uvicorn with httptools, behind deadlines and bounds it lacks on its own.

uvicorn reads a request's headers for as long as the client keeps sending them, buffers them without a limit
when it parses with httptools (its fastest parser, the default), and never closes a connection that has not
finished its first request. A client that sends a header one byte a second, or a 50 MB header, holds a socket
and memory for as long as it likes; a thousand of them exhaust the open files and nobody else is served.
:class:`GuardedHttpToolsProtocol` is uvicorn's own httptools protocol with what is missing added:

- headers (request line included) over ``max_header_bytes`` get a 431 and the connection is closed, so the
  most a connection buffers is that limit plus one read (256 KiB);
- headers not complete ``header_timeout_s`` after the request's first byte get a 408 and are closed, and so
  is a body not complete ``body_timeout_s`` after its headers;
- a connection that sends nothing for ``idle_timeout_s``, before its first request or between two, is closed
  (between two that is uvicorn's own keep-alive timeout);
- beyond ``max_connections`` open connections, a new one gets a 503 and is closed at once.

A request that arrives whole in one read (nearly all of them) arms no timer, so the guard costs next to
nothing; the benchmark (``python -m benchmarks.wine_service --stacks ...``) measures it.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import httptools
import uvicorn
from pydantic import BaseModel, Field
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# After a refusal, what the client still sends is read and dropped this long before the socket closes: closing
# with unread data makes the kernel reset the connection, and the client would lose the 431/408/503 it was sent.
LINGER_S = 2.0


class ServerSettings(BaseModel):
    """The HTTP server's limits; each service's ``Settings`` inherits them under its own prefix (WINE_, LLM_)."""

    max_header_bytes: int = Field(
        default=32_768, ge=1024, le=1_048_576,
        description="Largest request line plus headers; larger ones get a 431 and the connection is closed.",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, le=600,
        description="Seconds from a request's first byte until its headers must be complete, else a 408 and close.",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="Seconds from the end of a request's headers until its body must be complete, else closed.",
    )
    idle_timeout_s: float = Field(
        default=5.0, gt=0, le=3600,
        description="Seconds a connection may send nothing (before its first request or between two) before it "
        "is closed.",
    )
    max_connections: int = Field(
        default=512, ge=1, le=100_000,
        description="Open connections at most; a new one beyond gets a 503 and is closed. Keep it below the "
        "open-file limit (ulimit -n).",
    )


class _Reading(enum.Enum):
    IDLE = "idle"  # no request started on this connection since the last one was read
    HEADERS = "headers"
    BODY = "body"
    REFUSED = "refused"  # answered with an error: what arrives now is dropped until the socket closes


_DEADLINE_OF = {_Reading.IDLE: "idle_timeout_s", _Reading.HEADERS: "header_timeout_s", _Reading.BODY: "body_timeout_s"}


class HeadersTooLargeError(Exception):
    """Raised inside httptools' callbacks to stop parsing a request whose headers passed the limit."""


def plain_response(status: int, reason: str, message: str, *extra_headers: bytes) -> bytes:
    """A complete HTTP/1.1 response that closes the connection: what the guard answers before any app runs."""
    body = message.encode("ascii")
    head = [f"HTTP/1.1 {status} {reason}".encode("ascii"), b"content-type: text/plain; charset=utf-8",
            b"content-length: " + str(len(body)).encode("ascii"), b"connection: close", *extra_headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header limit, read deadlines, an idle timeout and a connection bound.

    ``limits`` is set on the subclass :func:`guarded_protocol` makes; uvicorn builds one instance a connection.
    """

    limits: ClassVar[ServerSettings] = ServerSettings()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading = _Reading.IDLE
        self._header_bytes = 0  # received since the request's first byte, while its headers are incomplete
        self._parsed_header_bytes = 0  # of the header fields httptools has completed
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_for: _Reading | None = None

    # --- connection -----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.logger.warning("Refused a connection: %d are open (max_connections)", len(self.connections) - 1)
            self._refuse(503, "Service Unavailable", "too many open connections; retry later", b"retry-after: 1",
                         answer=True)
            return
        self._set_deadline(_Reading.IDLE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_deadline(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading is _Reading.REFUSED:
            return
        if self._reading is _Reading.IDLE:
            self._start_request()
        if self._reading is _Reading.HEADERS:
            self._header_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, HeadersTooLargeError):
                self._refuse_large_headers()
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._set_deadline(None)
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._reading is _Reading.HEADERS and self._header_bytes > self.limits.max_header_bytes:
            self._refuse_large_headers()  # headers still incomplete: stop buffering them
            return
        # One timer for the part being read; none once the request is whole (uvicorn's keep-alive takes over),
        # nor while uvicorn holds a pipelined request back: then the wait is the server's, not the client's.
        waiting = self._reading is _Reading.IDLE or (self._reading is _Reading.BODY and self.pipeline)
        self._set_deadline(None if waiting else self._reading)

    # --- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._reading is _Reading.IDLE:  # a pipelined request that began inside this read
            self._start_request()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading = _Reading.BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading = _Reading.IDLE
        super().on_message_complete()

    # --- the guard -------------------------------------------------------------------

    def _start_request(self) -> None:
        self._reading = _Reading.HEADERS
        self._header_bytes = 0
        self._parsed_header_bytes = 0

    def _count_header_bytes(self, count: int) -> None:
        # Header fields as httptools completes them, so headers that arrive whole in one read are measured too;
        # the raw count in data_received bounds what is buffered while they are incomplete.
        self._parsed_header_bytes += count
        if self._parsed_header_bytes > self.limits.max_header_bytes:
            raise HeadersTooLargeError

    def _set_deadline(self, reading: _Reading | None) -> None:
        """Arm the timer of ``reading`` (unless it already runs) or, with None, disarm it."""
        if reading is self._deadline_for:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._deadline_for = reading
        if reading is not None:
            seconds = getattr(self.limits, _DEADLINE_OF[reading])
            self._deadline = self.loop.call_later(seconds, self._deadline_passed, reading)

    def _deadline_passed(self, reading: _Reading) -> None:
        self._deadline, self._deadline_for = None, None
        if self.transport.is_closing():
            return
        if reading is _Reading.IDLE:
            self.transport.close()
            return
        setting = _DEADLINE_OF[reading]
        seconds = getattr(self.limits, setting)
        self.logger.warning("Closed a connection whose request %s took longer than %g s (%s)",
                            reading.value, seconds, setting)
        if reading is _Reading.BODY:  # the request's own cycle: answer unless its app has started a response
            self._refuse(408, "Request Timeout", f"request body not received within {seconds:g} s",
                         answer=not self.cycle.response_started)
        else:
            self._refuse_before_cycle(408, "Request Timeout", f"request headers not received within {seconds:g} s")

    def _refuse_large_headers(self) -> None:
        self.logger.warning("Refused a request whose headers exceed %d bytes (max_header_bytes)",
                            self.limits.max_header_bytes)
        self._refuse_before_cycle(431, "Request Header Fields Too Large",
                                  f"request headers exceed {self.limits.max_header_bytes} bytes")

    def _refuse_before_cycle(self, status: int, reason: str, message: str, *extra_headers: bytes) -> None:
        """Refuse a request whose headers are not all read: answer unless a previous response is under way."""
        previous_under_way = self.cycle is not None and not self.cycle.response_complete
        self._refuse(status, reason, message, *extra_headers, answer=not previous_under_way)

    def _refuse(self, status: int, reason: str, message: str, *extra_headers: bytes, answer: bool) -> None:
        """Close the connection, first answering ``status`` when ``answer`` (a second response would garble one)."""
        self._set_deadline(None)
        self._reading = _Reading.REFUSED
        if not answer or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write(plain_response(status, reason, message, *extra_headers))
        self.transport.write_eof()  # the client reads the answer, then the end of the stream
        self._deadline, self._deadline_for = self.loop.call_later(LINGER_S, self.transport.close), _Reading.REFUSED


def guarded_protocol(limits: ServerSettings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn builds for each connection, carrying ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def server_config(
    app: str, limits: ServerSettings, *, host: str, port: int, access_log: bool = False
) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` (an import string such as ``app.wine.api:app``) under ``limits``."""
    return uvicorn.Config(
        app, host=host, port=port, http=guarded_protocol(limits), access_log=access_log,
        # uvicorn's keep-alive timer closes a connection idle after a response; it takes whole seconds.
        timeout_keep_alive=max(1, round(limits.idle_timeout_s)),
    )


def main(app: str, settings: Callable[[], ServerSettings], argv: Sequence[str] | None = None, *,
         prog: str) -> int:
    """``python -m app.wine`` / ``python -m app.llm``: serve ``app`` with the limits of ``settings()``."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Serve {app} with uvicorn and the server limits "
                                     "of its settings (environment variables).")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to bind (default {DEFAULT_PORT})")
    parser.add_argument("--access-log", action="store_true", help="log every request (default: off)")
    args = parser.parse_args(argv)
    server = uvicorn.Server(server_config(app, settings(), host=args.host, port=args.port,
                                          access_log=args.access_log))
    server.run()
    return 0 if server.started else 1
