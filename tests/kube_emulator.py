"""A Kubernetes API server emulator for tests: kmock's stateful emulator over real HTTP, plus what kmock lacks.

Used by the kubernetes target's tests (tests/test_kubernetes_target.py) and by the stand-in cluster the
notebooks run against (tests/standin/). What is added here is therefore verified only on a real cluster
(tests/test_cluster.py): server-side apply's field merging (kmock merges dicts; the emulator only makes
apply create missing objects), paths of cluster-scoped Namespaces, CRD discovery (modelled by a flag),
and port-forwarding (kmock has no websocket: :class:`WorkshopEmulator` speaks the API server's
port-forward websocket protocol to a local TCP server).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
import aiohttp.web
import kmock
import yaml

NAMESPACES = kmock.resource(group="", version="v1", plural="namespaces")


class WorkshopEmulator(kmock.KubernetesEmulator):
    """kmock's stateful emulator plus three things a real API server does that kmock 0.8 does not.

    - server-side apply (PATCH ``application/apply-patch+yaml``) creates an object that does not exist;
    - ``/api/v1/namespaces/NAME`` is the cluster-scoped Namespace NAME (kmock reads it as a namespace prefix);
    - ``monitoring.coreos.com`` resources exist only once their CRDs do (``monitoring_crds``).

    (The client asks for ``/version/``, kmock serves ``/version``: :class:`Emulator` adds the alias.)
    """

    monitoring_crds = False
    forward_to: tuple[str, int] | None = None  # where pod port-forwards lead (a local TCP server)
    forwarded: list[tuple[str, str, int]]  # (namespace, pod, port) of each port-forward opened

    async def _handle(self, request: kmock.Request):
        parts = request.url.path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 4:
            return await self._namespace(request, parts[3])
        if len(parts) == 7 and parts[4] == "pods" and parts[6] == "portforward":
            return await self._portforward(request, parts[3], parts[5])
        if request.resource is not None and request.resource.group == "monitoring.coreos.com" \
                and not self.monitoring_crds:
            raise kmock.KubernetesResourceNotFoundError()
        if request.method == "PATCH" and request.headers.get("Content-Type", "").startswith("application/apply-patch"):
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key not in self.objects:
                    self.objects[key] = request.data
                elif self.objects[key].deleted:
                    self.objects[key].create(request.data)
        return await super()._handle(request)

    async def _namespace(self, request: kmock.Request, name: str) -> aiohttp.web.Response:
        """GET, apply (PATCH) and DELETE of the cluster-scoped Namespace ``name``, stored with the other objects."""
        key = (NAMESPACES, None, name)
        async with self._lock:
            exists = key in self.objects and not self.objects[key].deleted
            if request.method == "PATCH" and not exists:
                if key in self.objects:
                    self.objects[key].create(request.data)
                else:
                    self.objects[key] = request.data
            elif request.method == "PATCH":
                self.objects[key].patch(request.data)
            elif not exists:
                raise kmock.KubernetesObjectNotFoundError()
            raw = self.objects[key].raw
            if request.method == "DELETE":
                self.objects[key].delete()
        return aiohttp.web.json_response(raw)


    def forward_address(self, namespace: str, pod: str, port: int) -> tuple[str, int]:
        """Where a port-forward to ``pod:port`` leads: ``forward_to`` here; a stand-in kubelet knows each pod's."""
        assert self.forward_to is not None, "set forward_to before port-forwarding"
        return self.forward_to

    async def _portforward(self, request: kmock.Request, namespace: str, pod: str) -> aiohttp.web.StreamResponse:
        """The API server's port-forward protocol (websocket, ``v4.channel.k8s.io``) to ``forward_to``.

        Per port two channels: data (0) and error (1), each opened by a frame with the port number
        (little-endian); then every binary frame is a channel byte and the payload.
        """
        port = int(request.params["ports"])
        self.forwarded.append((namespace, pod, port))
        address = self.forward_address(namespace, pod, port)
        socket_ = aiohttp.web.WebSocketResponse(protocols=("v4.channel.k8s.io", "portforward.k8s.io"))
        await socket_.prepare(request._raw_request)  # kmock keeps the aiohttp request private
        opening = bytes([port & 0xFF, port >> 8])
        await socket_.send_bytes(b"\x00" + opening)
        await socket_.send_bytes(b"\x01" + opening)
        reader, writer = await asyncio.open_connection(*address)

        async def to_client() -> None:
            while data := await reader.read(65536):
                await socket_.send_bytes(b"\x00" + data)
            await socket_.close()

        pump = asyncio.create_task(to_client())
        async for message in socket_:
            if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x00" and len(message.data) > 1:
                writer.write(message.data[1:])
                await writer.drain()
        pump.cancel()
        writer.close()
        return socket_


class Emulator:
    """The emulator served on 127.0.0.1 from a thread of its own, for the synchronous official client."""

    def __init__(self, handler_class: type[WorkshopEmulator] = WorkshopEmulator) -> None:
        self.handler_class = handler_class
        self.handler: WorkshopEmulator | None = None
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        async with self.handler_class() as handler, kmock.Server(handler) as server:
            handler.forwarded = []
            self.handler, self.url = handler, str(server.url).rstrip("/")
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            for listed in ("v1/events", "v1/pods", "v1/services", "apps/v1/deployments", "batch/v1/jobs"):
                handler.resources[listed] = {}  # a real server lists an empty collection; kmock needs it declared
            handler.fallback["get /version/"] << handler._serve_server_version  # the client adds the slash
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Emulator:
        self._thread.start()
        assert self._ready.wait(10), "the emulator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def requests(self, method: str, path_part: str = "") -> list[kmock.Request]:
        assert self.handler is not None
        return [r for r in list(self.handler) if r.method == method and path_part in r.url.path]

    def stored(self, plural: str, namespace: str | None, name: str) -> dict | None:
        """The stored object, or None when absent or deleted."""
        assert self.handler is not None
        for (resource, ns, obj_name), obj in list(self.handler.objects.items()):
            if resource.plural == plural and ns == namespace and obj_name == name and not obj.deleted:
                return obj.raw
        return None

    def logs(self, text: str) -> None:
        """Every pod log request answers ``text`` (as text/plain, like the API server)."""
        assert self.handler is not None
        self.handler[kmock.resource("v1/pods"), kmock.subresource("log")] << text


def write_kubeconfig(path: Path, server: str, context: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "emulated", "cluster": {"server": server}}],
        "users": [{"name": "learner", "user": {"token": "learner-token"}}],
        "contexts": [{"name": context, "context": {"cluster": "emulated", "user": "learner"}}],
    }))
    return path
