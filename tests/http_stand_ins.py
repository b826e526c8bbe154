"""Small real HTTP servers that stand in for pods, Grafana and Prometheus in the tests (a quiet handler and a
server on a free port of 127.0.0.1 in a daemon thread), and a relay that stands in for a port-forward."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
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


class LaggingForward:
    """A stand-in for a port-forward: 127.0.0.1 relayed to ``port``, with what the server sends (its answers and
    its close) arriving ``lag_s`` late, as through the API server's websocket; ``connections``: how many the
    clients opened."""

    def __init__(self, port: int, lag_s: float) -> None:
        self.port, self.lag_s, self.connections = port, lag_s, 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> LaggingForward:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                local, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            remote = socket.create_connection(("127.0.0.1", self.port))
            for source, target, lag_s in ((local, remote, 0.0), (remote, local, self.lag_s)):
                line: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(source, line, lag_s), daemon=True).start()
                threading.Thread(target=self._deliver, args=(line, source, target), daemon=True).start()

    @staticmethod
    def _read(source: socket.socket, line: queue.Queue[tuple[float, bytes]], lag_s: float) -> None:
        """Each chunk, and the end of the stream (b""), with the time it is due at the other end."""
        data = b"-"
        while data:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            line.put((time.monotonic() + lag_s, data))

    @staticmethod
    def _deliver(line: queue.Queue[tuple[float, bytes]], source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, data = line.get()
                time.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    break
                target.sendall(data)
        for end in (source, target):  # one side closed: so does the forward, both ways
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
