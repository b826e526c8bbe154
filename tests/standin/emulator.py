"""The stand-in cluster's API server: the tests' emulator plus what the kubelet and the API server add.

On top of :class:`tests.kube_emulator.WorkshopEmulator`:

- every object gets a ``metadata.uid`` when it is created;
- a Deployment's ``metadata.generation`` moves when its spec changes (in the same request, as the API
  server does it), and ``spec.replicas`` defaults to 1 on creation;
- a deleted Namespace is *Terminating* until the objects in it are gone (pods are stopped by the kubelet
  stand-in once their objects disappear);
- pod logs (of the pod's container, or of an init container by ``container=``), port-forwards and the
  pod proxy (``pods/NAME:PORT/proxy/PATH``) reach the pod's processes, which the kubelet stand-in
  (:mod:`tests.standin.node`) knows;
- a Secret's ``stringData`` is stored base64-encoded in ``data``;
- ``monitoring.coreos.com`` resources exist once their CustomResourceDefinitions are stored (the helm
  stand-in creates them, as the chart does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import uuid
from typing import Protocol

import aiohttp
import aiohttp.web
import kmock

from tests.kube_emulator import NAMESPACES, WorkshopEmulator

MONITORING_CRD = "servicemonitors.monitoring.coreos.com"


class Node(Protocol):
    """What the API server asks the kubelet stand-in for."""

    def pod_address(self, namespace: str, pod: str, port: int) -> tuple[str, int]: ...

    def pod_log(self, namespace: str, pod: str, tail: int | None, container: str | None = None) -> str | None: ...


class StandinEmulator(WorkshopEmulator):
    node: Node | None = None

    @property
    def monitoring_crds(self) -> bool:  # type: ignore[override]
        return any(resource.plural == "customresourcedefinitions" and name == MONITORING_CRD and not obj.deleted
                   for (resource, _, name), obj in list(self.objects.items()))

    async def _handle(self, request: kmock.Request):
        parts = request.url.path.strip("/").split("/")
        if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" and parts[6] == "log":
            return await self._log(request, parts[3], parts[5])
        if len(parts) >= 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" \
                and parts[6] == "proxy":
            return await self._proxy(request, parts[3], parts[5], "/".join(parts[7:]))
        secret = (request.resource is not None and request.resource.plural == "secrets"
                  and request.method in ("PATCH", "PUT", "POST"))
        deployment = (request.resource is not None and request.resource.plural == "deployments"
                      and request.name is not None and request.subresource in (None, "scale")
                      and request.method in ("PATCH", "PUT", "POST"))
        before = self._spec(request) if deployment else None
        response = await super()._handle(request)
        if deployment:
            await self._after_deployment_write(request, before)
        if secret:
            await self._after_secret_write(request)
        if request.resource is not None and request.method in ("POST", "PATCH", "PUT"):
            await self._give_uid(request)
        return response

    async def _give_uid(self, request: kmock.Request) -> None:
        """Every object gets a ``metadata.uid`` when it is created: owners are told apart by it, not by name."""
        name = request.name or (request.data or {}).get("metadata", {}).get("name")
        namespace = request.namespace or (request.data or {}).get("metadata", {}).get("namespace")
        key = (request.resource, namespace, name)
        async with self._lock:
            if key in self.objects and not self.objects[key].deleted \
                    and not self.objects[key].raw.get("metadata", {}).get("uid"):
                self.objects[key].patch({"metadata": {"uid": str(uuid.uuid4())}})

    async def _after_secret_write(self, request: kmock.Request) -> None:
        """``stringData`` is write-only: the API server stores it base64-encoded in ``data``."""
        name = request.name or (request.data or {}).get("metadata", {}).get("name")
        namespace = request.namespace or (request.data or {}).get("metadata", {}).get("namespace")
        key = (request.resource, namespace, name)
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                return
            strings = self.objects[key].raw.get("stringData") or {}
            if strings:
                encoded = {k: base64.b64encode(str(v).encode()).decode() for k, v in strings.items()}
                self.objects[key].patch({"data": encoded})

    def _spec(self, request: kmock.Request) -> str | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects:  # kmock's ObjectsArray has no .get()
            return None
        obj = self.objects[key]
        if obj.deleted:
            return None
        return json.dumps(obj.raw.get("spec", {}), sort_keys=True)

    async def _after_deployment_write(self, request: kmock.Request, before: str | None) -> None:
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                return
            obj = self.objects[key]
            raw = obj.raw
            generation = raw.get("metadata", {}).get("generation")
            if before is None or generation is None:
                changes = {"metadata": {"generation": 1}}
                if raw.get("spec", {}).get("replicas") is None:
                    changes["spec"] = {"replicas": 1}  # the API server's default
                obj.patch(changes)
            elif json.dumps(raw.get("spec", {}), sort_keys=True) != before:
                obj.patch({"metadata": {"generation": generation + 1}})

    async def _namespace(self, request: kmock.Request, name: str) -> aiohttp.web.Response:
        """DELETE marks the Namespace Terminating; :meth:`collect_namespaces` removes it once it is empty."""
        if request.method != "DELETE":
            return await super()._namespace(request, name)
        key = (NAMESPACES, None, name)
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            now = datetime.datetime.now(tz=datetime.UTC).isoformat()
            self.objects[key].patch({"metadata": {"deletionTimestamp": now}, "status": {"phase": "Terminating"}})
            raw = self.objects[key].raw
        return aiohttp.web.json_response(raw)

    async def collect_namespaces(self) -> None:
        """The namespace controller: delete what a Terminating Namespace holds, then the Namespace."""
        async with self._lock:
            terminating = {name for (resource, _, name), obj in self.objects.items()
                           if resource == NAMESPACES and not obj.deleted
                           and obj.raw.get("metadata", {}).get("deletionTimestamp")}
            for (_resource, namespace, _), obj in list(self.objects.items()):
                if namespace in terminating and not obj.deleted:
                    obj.delete()
            for name in terminating:
                self.objects[(NAMESPACES, None, name)].delete()

    async def _log(self, request: kmock.Request, namespace: str, pod: str) -> aiohttp.web.Response:
        tail, container = request.params.get("tailLines"), request.params.get("container")
        assert self.node is not None
        text = self.node.pod_log(namespace, pod, int(tail) if tail else None, container)
        if text is None:  # the API server's answer for a container the pod does not have
            message = f"container {container} is not valid for pod {pod}"
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                              "message": message, "reason": "BadRequest", "code": 400}, status=400)
        return aiohttp.web.Response(text=text, content_type="text/plain")

    def forward_address(self, namespace: str, pod: str, port: int) -> tuple[str, int]:
        assert self.node is not None
        return self.node.pod_address(namespace, pod, port)

    async def _proxy(self, request: kmock.Request, namespace: str, target: str, path: str) -> aiohttp.web.Response:
        """``GET pods/NAME:PORT/proxy/PATH``: the API server relays one HTTP request to the pod."""
        pod, _, port = target.partition(":")
        assert self.node is not None
        try:
            host, local_port = self.node.pod_address(namespace, pod, int(port or 80))
        except KeyError:
            raise kmock.KubernetesObjectNotFoundError() from None
        url = f"http://{host}:{local_port}/{path}"
        with contextlib.suppress(Exception):
            async with aiohttp.ClientSession() as session, session.request(
                    request.method, url, params=dict(request.params), timeout=aiohttp.ClientTimeout(total=30)) as got:
                body = await got.read()
                return aiohttp.web.Response(body=body, status=got.status,
                                            content_type=got.content_type or "text/plain")
        return aiohttp.web.Response(status=503, text=f"error trying to reach service: dial {url} failed")


async def periodic(handler: StandinEmulator, stop: asyncio.Event, interval: float = 0.2) -> None:
    """The API server's own housekeeping: namespace deletion, and a bounded request history."""
    while not stop.is_set():
        await handler.collect_namespaces()
        requests = getattr(handler, "_requests", None)
        if isinstance(requests, list) and len(requests) > 2000:
            del requests[:-200]
        errors = getattr(handler, "_errors", None)
        if isinstance(errors, list) and errors and len(errors[-1]) > 200:
            del errors[-1][:]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
