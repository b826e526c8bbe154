"""A local URL for a Service: a 127.0.0.1 listener bridged to a ready pod through the API server.

This uses the client's own port-forwarding (``kubernetes.stream.portforward``, the websocket protocol
``kubectl port-forward`` speaks) rather than a ``kubectl`` subprocess: no extra binary, the same
credentials as every other call, and failures arrive as Python exceptions. The client forwards to a
pod, not to a Service (kubectl does the same: it picks one pod), so each new local connection resolves
the Service's selector and target port again and goes to a ready pod; a restarted pod is picked up
without re-forwarding. Each connection is bridged by a thread copying bytes both ways; one that reaches no
pod is answered with a 502 that says why.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

from workshop.k8s import diagnose
from workshop.k8s.errors import PortForwardError
from workshop.waiting import WaitTimeout, wait_for

CHUNK = 65536


def open_pod_port(core: client.CoreV1Api, namespace: str, pod: str, port: int) -> socket.socket:
    """A websocket port-forward to ``pod:port`` through the API server; the socket end to read and write.

    kubernetes.stream swaps the ApiClient's request function for its websocket one while it connects, so
    any other call on that ApiClient meanwhile, from another thread, fails ("Missing required parameter
    `ports`"): each port-forward gets an ApiClient of its own (same configuration and credentials).
    """
    own = client.CoreV1Api(client.ApiClient(core.api_client.configuration))
    forward = portforward(own.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    return forward.socket(port)


def http_get(core: client.CoreV1Api, namespace: str, pod: str, port: int, path: str, *, timeout: float = 30.0) -> str:
    """``GET path`` of one pod through a port-forward to it; the body (PortForwardError on a non-200 answer).

    A port-forward enters the pod's network namespace through the kubelet, as ``kubectl port-forward`` does,
    so a NetworkPolicy that admits only the pods of the namespace and the monitoring stack does not stop it
    (the API server's pod proxy would come from the node, which such a policy may refuse).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.sock = open_pod_port(core, namespace, pod, port)
    connection.sock.settimeout(timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read().decode()
    except (OSError, http.client.HTTPException) as error:
        raise PortForwardError(f"GET {path} of pod {pod} through a port-forward failed: {error}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise PortForwardError(f"GET {path} of pod {pod} answered HTTP {response.status}: {body[:200]}")
    return body


def resolve_target(core: client.CoreV1Api, namespace: str, service: str, port: int | str | None = None
                   ) -> tuple[str, int]:
    """(ready pod, container port) behind ``service``'s ``port`` (a number or a port name; the first by default)."""
    svc = core.read_namespaced_service(service, namespace)
    ports = svc.spec.ports or []
    chosen = next((p for p in ports if port is None or p.port == port or p.name == port), None)
    if chosen is None:
        raise PortForwardError(f"Service {service} has no port {port}; it has {[p.port for p in ports]}")
    pods = diagnose.pods_for(core, namespace, svc.spec.selector or {})
    ready = [p for p in pods if diagnose.is_ready(p)]
    if not ready:
        raise PortForwardError(
            f"No ready pod behind Service {service} in namespace {namespace} ({len(pods)} pods match its "
            "selector): wait for the rollout, or read the pods' events and logs.")
    pod = ready[0]
    target = chosen.target_port if chosen.target_port is not None else chosen.port
    if isinstance(target, str) and not target.isdigit():
        numbers = [p.container_port for c in pod.spec.containers for p in (c.ports or []) if p.name == target]
        if not numbers:
            raise PortForwardError(f"Pod {pod.metadata.name} declares no container port named {target!r}")
        target = numbers[0]
    return pod.metadata.name, int(target)


def wait_for_endpoint(core: client.CoreV1Api, namespace: str, service: str, port: int | str | None = None, *,
                      timeout: float = 300.0, interval: float = 2.0) -> tuple[str, int]:
    """Poll until a ready pod backs ``service`` (e.g. a Prometheus the operator creates after helm returns)."""
    try:
        return wait_for(lambda: resolve_target(core, namespace, service, port), timeout,
                        f"a ready pod behind Service {service}", interval, retry_on=(PortForwardError, ApiException))
    except WaitTimeout as waited:
        error = waited.last_error
        reason = f"HTTP {error.status} {error.reason}" if isinstance(error, ApiException) else error
        raise PortForwardError(f"Service {service} in {namespace} has no ready pod after {timeout:.0f} s: "
                               f"{reason}") from None


@dataclass
class PortForward:
    """Forward ``127.0.0.1:local_port`` to a Service until :meth:`close` (or the process ends)."""

    core: client.CoreV1Api
    namespace: str
    service: str
    port: int | str | None = None
    local_port: int = 0
    _server: socket.socket | None = field(default=None, init=False, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False, repr=False)
    _closed: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    errors: list[str] = field(default_factory=list, init=False, repr=False)

    @property
    def open(self) -> bool:
        return self._server is not None and not self._closed.is_set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def start(self) -> PortForward:
        """Check a ready pod exists now (fail early, with the reason), then listen."""
        resolve_target(self.core, self.namespace, self.service, self.port)
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.local_port))
        server.listen(16)
        self.local_port = server.getsockname()[1]
        self._server = server
        self._spawn(self._accept_loop, f"port-forward {self.service} accept")
        return self

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._closed.is_set():
            try:
                local, _ = self._server.accept()
            except OSError:
                return
            self._spawn(self._serve, f"port-forward {self.service} connection", local)

    def _serve(self, local: socket.socket) -> None:
        try:
            pod, port = resolve_target(self.core, self.namespace, self.service, self.port)
            remote = open_pod_port(self.core, self.namespace, pod, port)
        except Exception as error:  # noqa: BLE001 - reported through errors, and to the local client as a 502
            self.errors.append(f"{type(error).__name__}: {error}")
            refuse(local, f"port-forward to Service {self.service} in {self.namespace}: {error}")
            return
        bridge(local, remote, self._closed)

    def close(self) -> None:
        """Stop listening and end every bridged connection; safe to call twice."""
        self._closed.set()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
            self._server = None

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def refuse(local: socket.socket, reason: str, *, timeout: float = 5.0) -> None:
    """Answer a local connection that reached no pod with a 502 naming ``reason``, then close it.

    Every Service the workshop forwards speaks HTTP, so the client shows why ("no ready pod behind Service
    llm...") instead of a bare "Server disconnected", which a closed keep-alive connection also causes. The
    request's head is read first and what follows is drained before the close, so the client is not reset
    before it reads the answer.
    """
    body = reason.encode()
    answer = (b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
              + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
    with contextlib.suppress(OSError):
        local.settimeout(timeout)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < CHUNK and (chunk := local.recv(CHUNK)):
            head += chunk
        local.sendall(answer)
        local.shutdown(socket.SHUT_WR)
        while local.recv(CHUNK):  # the request's body, until the client closes (or the timeout)
            pass
    with contextlib.suppress(OSError):
        local.close()


def bridge(local: socket.socket, remote: socket.socket, closed: threading.Event) -> None:
    """Copy bytes both ways until either side closes (or ``closed`` is set); then close both."""
    try:
        while not closed.is_set():
            readable, _, _ = select.select([local, remote], [], [], 0.5)
            for source in readable:
                data = source.recv(CHUNK)
                if not data:
                    return
                (remote if source is local else local).sendall(data)
    except OSError:
        return
    finally:
        for end in (local, remote):
            with contextlib.suppress(OSError):
                end.close()
