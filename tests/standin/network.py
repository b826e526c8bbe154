"""The Service stand-in (kube-proxy and cluster DNS): each Service port is a local TCP listener.

A connection to it goes to a ready pod behind the Service (round robin, like kube-proxy's iptables
mode spreads connections), at the local port the kubelet stand-in gave that pod's target port. In-cluster
names in a container's settings (``http://wine``, ``http://wine.NS.svc.cluster.local:80``, a bare
``locust-master`` host) are rewritten to these listeners, since there is no cluster DNS here.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
from typing import Any

from kubernetes import client

from workshop.k8s.diagnose import matches
from workshop.k8s.portforward import bridge

_IN_CLUSTER_URL = re.compile(r"^(?P<scheme>https?)://(?P<host>[a-z0-9-]+)(?P<domain>\.[a-z0-9-]+(?:\.svc(?:\.cluster"
                             r"\.local)?)?)?(?::(?P<port>\d+))?(?P<path>/.*)?$")


class Listener:
    def __init__(self, services: Services, namespace: str, name: str, port: int) -> None:
        self.services, self.namespace, self.name, self.port = services, namespace, name, port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.local_port = self.server.getsockname()[1]
        self.closed = threading.Event()
        self._turn = itertools.count()
        threading.Thread(target=self._accept, name=f"service {namespace}/{name}:{port}", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                local, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(local,), daemon=True).start()

    def _serve(self, local: socket.socket) -> None:
        backends = self.services.backends(self.namespace, self.name, self.port)
        if not backends:
            local.close()  # no ready endpoint: the connection is refused, as kube-proxy rejects it
            return
        address = backends[next(self._turn) % len(backends)]
        try:
            remote = socket.create_connection(address, timeout=10)
        except OSError:
            local.close()
            return
        remote.settimeout(None)
        bridge(local, remote, self.closed)

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self.server.close()


class Services:
    """Listeners for every Service port; the endpoints are the ready pods matching the selector."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.node: Any = None  # tests.standin.node.Node, set once both exist
        self.listeners: dict[tuple[str, str, int], Listener] = {}
        self._services: dict[tuple[str, str], client.V1Service] = {}
        self._pods: list[client.V1Pod] = []
        self._lock = threading.Lock()

    def sync(self) -> None:
        listed = self.core.list_service_for_all_namespaces().items
        services = {(s.metadata.namespace, s.metadata.name): s for s in listed}
        pods = self.core.list_pod_for_all_namespaces().items
        with self._lock:
            self._services, self._pods = services, pods
            wanted = {(ns, name, p.port) for (ns, name), s in services.items() for p in s.spec.ports or []}
            for key in wanted - set(self.listeners):
                self.listeners[key] = Listener(self, *key)
            for key in set(self.listeners) - wanted:
                self.listeners.pop(key).close()

    def address(self, namespace: str, name: str, port: int) -> tuple[str, int] | None:
        listener = self.listeners.get((namespace, name, port))
        return ("127.0.0.1", listener.local_port) if listener else None

    def rewrite_url(self, namespace: str, value: str) -> str | bool | None:
        """``value`` with an in-cluster Service URL replaced; None: it names none; False: that Service is missing."""
        found = _IN_CLUSTER_URL.match(value)
        if not found or (found["domain"] and not found["domain"].startswith(f".{namespace}")):
            return None
        port = int(found["port"] or (443 if found["scheme"] == "https" else 80))
        address = self.address(namespace, found["host"], port)
        if address is None:
            return False
        return f"{found['scheme']}://127.0.0.1:{address[1]}{found['path'] or ''}"

    def backends(self, namespace: str, name: str, port: int) -> list[tuple[str, int]]:
        with self._lock:
            service, pods = self._services.get((namespace, name)), list(self._pods)
        if service is None or self.node is None:
            return []
        service_port = next((p for p in service.spec.ports or [] if p.port == port), None)
        if service_port is None:
            return []
        target = service_port.target_port if service_port.target_port is not None else port
        backends = []
        for pod in pods:
            if pod.metadata.namespace != namespace or not matches(pod.metadata.labels, service.spec.selector or {}):
                continue
            if not self.node.ready(namespace, pod.metadata.name):
                continue
            number = target
            if isinstance(target, str) and not target.isdigit():
                numbers = [p.container_port for c in pod.spec.containers for p in c.ports or [] if p.name == target]
                if not numbers:
                    continue
                number = numbers[0]
            try:
                backends.append(self.node.pod_address(namespace, pod.metadata.name, int(number)))
            except KeyError:
                continue
        return backends

    def stop(self) -> None:
        for listener in self.listeners.values():
            listener.close()
