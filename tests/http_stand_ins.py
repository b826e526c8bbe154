"""Small real HTTP servers that stand in for pods, Grafana and Prometheus in the tests: a quiet handler and a
server on a free port of 127.0.0.1 in a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for the small HTTP servers that stand in for pods and Grafana here: no access log."""

    def answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def background_server(handler: type[BaseHTTPRequestHandler],
                      server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer) -> ThreadingHTTPServer:
    """``handler`` served on a free port of 127.0.0.1 by a daemon thread; shut it down when done."""
    server = server_class(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
