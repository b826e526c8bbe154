"""Run the stand-in cluster: ``python -m tests.standin STATE_FOLDER`` (until SIGTERM or Ctrl-C).

It writes ``STATE_FOLDER/kubeconfig`` (context ``kind-workshop``) and ``STATE_FOLDER/bin/`` with the
``kind`` and ``helm`` stand-ins; put that folder first on PATH and point KUBECONFIG at the file, and the
kubernetes target (and ``kubectl kustomize``, which needs no cluster) works against it. ``ready`` appears
in the folder once everything runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

import kmock
from kubernetes import client

from tests.kube_emulator import Emulator, write_kubeconfig
from workshop.paths import project_root

from .controllers import Controllers
from .emulator import StandinEmulator, periodic
from .monitoring import Operator
from .network import Services
from .node import Node, forever

CLUSTER = "workshop"
LISTED = ("v1/events", "v1/pods", "v1/services", "v1/configmaps", "v1/secrets", "v1/namespaces",
          "v1/persistentvolumeclaims", "apps/v1/deployments", "apps/v1/replicasets", "batch/v1/jobs",
          "autoscaling/v2/horizontalpodautoscalers", "apiextensions.k8s.io/v1/customresourcedefinitions")


class StandinServer(Emulator):
    """The emulator with the stand-in API server's housekeeping running in its event loop."""

    def __init__(self) -> None:
        super().__init__(StandinEmulator)

    async def _serve(self) -> None:
        async with self.handler_class() as handler, kmock.Server(handler) as server:
            handler.forwarded = []
            self.handler, self.url = handler, str(server.url).rstrip("/")
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            for listed in LISTED:
                handler.resources[listed] = {}
            handler.fallback["get /version/"] << handler._serve_server_version
            housekeeping = asyncio.create_task(periodic(handler, self._stop))
            self._ready.set()
            await self._stop.wait()
            await housekeeping


def write_tools(folder: Path, state: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for tool in ("kind", "helm"):
        script = folder / tool
        script.write_text(f"#!/bin/sh\n# Stand-in {tool} of the stand-in cluster (tests/standin/tools.py).\n"
                          f'STANDIN_STATE="{state}" PYTHONPATH="{project_root()}" '
                          f'exec "{sys.executable}" -m tests.standin.tools {tool} "$@"\n')
        script.chmod(0o755)


def main(argv: list[str]) -> int:
    state = Path(argv[0]).resolve()
    state.mkdir(parents=True, exist_ok=True)
    (state / "ready").unlink(missing_ok=True)
    (state / "cluster-name").write_text(CLUSTER)
    server = StandinServer().__enter__()
    write_kubeconfig(state / "kubeconfig", server.url, f"kind-{CLUSTER}")
    write_tools(state / "bin", state)
    configuration = client.Configuration()
    configuration.host = server.url
    api_client = client.ApiClient(configuration)
    services = Services(client.ApiClient(configuration))
    node = Node(client.ApiClient(configuration), state, services)
    services.node = node
    server.handler.node = node
    controllers = Controllers(client.ApiClient(configuration), node)
    operator = Operator(api_client, node, state)
    stop = threading.Event()
    forever(node.sync, stop, 0.2, "kubelet")
    forever(services.sync, stop, 0.2, "kube-proxy")
    forever(controllers.sync, stop, 0.25, "controllers")
    forever(controllers.sync_autoscalers, stop, 5.0, "horizontal-pod-autoscaler")
    forever(operator.sync, stop, 1.0, "prometheus-operator")
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    (state / "ready").write_text(str(os.getpid()))
    print(f"stand-in cluster at {server.url}; KUBECONFIG={state / 'kubeconfig'}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        stop.set()
    node.stop()
    services.stop()
    operator._stop()
    server.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
