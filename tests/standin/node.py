"""The kubelet stand-in: each pod's container runs as a local process made from the pod's real image.

What it takes from the image (through the Docker engine, by the image ID that ``kind load`` recorded):
its environment, entrypoint, command and working directory (``docker image inspect``) and its files
under ``/srv`` (``docker cp``: the image's byte-compiled ``app/``, the baked-in model, the locustfile).
The interpreter and libraries are this environment's (``/opt/venv`` maps to it; both come from
``constraints.txt``). An image the stand-in ``kind`` never loaded cannot start (``ErrImagePull``), as
on a fresh kind node.

What it does like a kubelet: volumes (emptyDir, configMap, persistentVolumeClaim, a mount's ``subPath``)
as folders, the container's environment (values, ``envFrom``, ``resourceFieldRef``, ``fieldRef``, ConfigMap
and Secret keys), startup, readiness and liveness probes with their periods and thresholds, ``Unhealthy``
events with the kubelet's wording, restarts (``CrashLoopBackOff``), a Job pod's exit as its phase, logs.
``initContainers`` run first, in order, each to completion, with their own command, environment and
mounts: a failing one shows as ``Init:Error``, then is restarted with back-off (``Init:CrashLoopBackOff``
in ``status.initContainerStatuses``, the pod Pending and not ready, its log readable with ``container=``),
or fails the pod under ``restartPolicy: Never``; one that succeeded is not run again when the container
restarts. Sidecars (init containers with ``restartPolicy: Always``) are not stood in for.

What it cannot do, and does instead: there are no network namespaces, so every pod listens on
127.0.0.1 on a port of its own (``uvicorn --port``, Locust's bind port) and names of Services in URLs
and host settings are rewritten to the Service stand-in's local ports (:mod:`tests.standin.network`);
resource limits, the securityContext and read-only mounts are not enforced (``tests/test_image.py`` runs
the real image read-only and unprivileged). The processes reach the network as this machine does (its proxy,
CA bundle and package index settings are passed on, :attr:`Node.network_env`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from workshop.process import ManagedProcess, free_port

IMAGE_FILES = "/srv"  # what the workshop's images add: WORKDIR, app/, the model, the locustfile
VENV = "/opt/venv"
SERVED_AT = "standin.workshop/served-at"  # pods whose "container" is a stand-in server of this process


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Image:
    """A loaded image: its ID, its config, and its /srv extracted into a folder."""

    ref: str
    id: str
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    root: Path  # the folder holding the image's IMAGE_FILES at the same relative path


class ImageStore:
    """Images the stand-in ``kind`` loaded (``images.json`` in the state folder), unpacked once per ID."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self._unpacked: dict[str, Image] = {}
        self._lock = threading.Lock()

    def loaded(self) -> dict[str, str]:
        path = self.state / "images.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def get(self, ref: str) -> Image | None:
        image_id = self.loaded().get(ref) or self.loaded().get(f"docker.io/library/{ref}")
        if image_id is None:
            return None
        with self._lock:
            if image_id not in self._unpacked:
                self._unpacked[image_id] = self._unpack(ref, image_id)
            return self._unpacked[image_id]

    def _unpack(self, ref: str, image_id: str) -> Image:
        config = json.loads(subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config}}", image_id],
                                           capture_output=True, text=True, check=True, timeout=60).stdout)
        root = self.state / "node" / "images" / image_id.replace(":", "-")
        if not (root / IMAGE_FILES.strip("/")).exists():
            created = subprocess.run(["docker", "create", image_id], capture_output=True, text=True, check=True,
                                     timeout=60).stdout.strip()
            try:
                root.mkdir(parents=True, exist_ok=True)
                subprocess.run(["docker", "cp", f"{created}:{IMAGE_FILES}", str(root / IMAGE_FILES.strip("/"))],
                               capture_output=True, text=True, check=True, timeout=300)
            finally:
                subprocess.run(["docker", "rm", created], capture_output=True, check=False, timeout=60)
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        return Image(ref, image_id, env, config.get("Entrypoint") or [], config.get("Cmd") or [],
                     config.get("WorkingDir") or "/", root)


@dataclass
class ContainerState:
    """What the pod's status says about one of its containers."""

    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    running_since: str | None = None
    terminated: tuple[int, str] | None = None
    last_terminated: tuple[int, str] | None = None
    started: bool = False
    ready: bool = False
    restarts: int = 0

    def status(self, container: dict[str, Any]) -> dict[str, Any]:
        """The container's entry in ``containerStatuses`` or ``initContainerStatuses``."""
        entry = {"name": container["name"], "image": container["image"], "imageID": "", "ready": self.ready,
                 "started": self.started, "restartCount": self.restarts}
        if self.waiting is not None:
            entry["state"] = {"waiting": {"reason": self.waiting[0], "message": self.waiting[1]}}
        elif self.terminated is not None:
            entry["state"] = {"terminated": {"exitCode": self.terminated[0], "reason": self.terminated[1]}}
        else:
            entry["state"] = {"running": {"startedAt": self.running_since}}
        if self.last_terminated is not None:
            entry["lastState"] = {"terminated": {"exitCode": self.last_terminated[0],
                                                 "reason": self.last_terminated[1]}}
        return entry


@dataclass
class Pod:
    """One pod on the node: its spec, its processes, its probes, running in a thread of its own.

    Its ``initContainers`` run first, in order, each to completion (a failing one is restarted with
    back-off, or fails the pod where ``restartPolicy`` is Never); then its first container runs, with
    probes and restarts, and a restart of it never runs the init containers again.
    """

    node: Node
    namespace: str
    name: str
    spec: dict[str, Any]
    folder: Path
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port
    state: ContainerState = field(default_factory=ContainerState)
    init_states: list[ContainerState] = field(default_factory=list)
    initialized: bool = False
    process: ManagedProcess | None = None  # the one running now: an init container's, then the container's
    stopped: threading.Event = field(default_factory=threading.Event)
    _published: str = ""
    _events: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.init_states = [ContainerState(waiting=("PodInitializing", "")) for _ in self.init_containers]
        self.initialized = not self.init_containers
        if self.init_containers:
            self.state = ContainerState(waiting=("PodInitializing", ""))

    @property
    def container(self) -> dict[str, Any]:
        return self.spec["containers"][0]

    @property
    def init_containers(self) -> list[dict[str, Any]]:
        return self.spec.get("initContainers") or []

    @property
    def log_path(self) -> Path:
        return self.folder / "container.log"

    def log_path_of(self, container: str | None) -> Path | None:
        """The log file of a container by name (None: the pod's container); None for a name it does not have."""
        if container in (None, "", self.container["name"]):
            return self.log_path
        if container in [init["name"] for init in self.init_containers]:
            return self.folder / f"init-{container}.log"
        return None

    def run(self) -> None:
        try:
            self._lifecycle()
        except Exception as error:
            self.state = ContainerState(waiting=("StandinError", f"{type(error).__name__}: {error}"))
            self.publish()
            with self.log_path.open("a") as log:
                log.write(f"stand-in kubelet: {type(error).__name__}: {error}\n")

    def _pull(self, container: dict[str, Any], state: ContainerState) -> Image | None:
        """``container``'s image once ``kind load`` put it on the node (ErrImagePull until then); None if stopped."""
        while not self.stopped.is_set():
            image = self.node.images.get(container["image"])
            if image is not None:
                self.event("Normal", "Pulled", f'Container image "{container["image"]}" already present on machine')
                return image
            message = (f'Failed to pull image "{container["image"]}": pull access denied, repository does '
                       "not exist or may require authorization (the image was never loaded into this node)")
            if state.waiting is None or state.waiting[0] not in ("ErrImagePull", "ImagePullBackOff"):
                with (self.node.state / "node" / "pull-failures.jsonl").open("a") as failures:
                    failures.write(json.dumps({"namespace": self.namespace, "pod": self.name,
                                               "image": container["image"], "at": now()}) + "\n")
            state.waiting = ("ErrImagePull" if state.waiting is None or state.waiting[0] != "ErrImagePull"
                             else "ImagePullBackOff", message)
            self.event("Warning", "Failed", message)
            self.publish()
            self.stopped.wait(2.0)
        return None

    def _lifecycle(self) -> None:
        for init, state in zip(self.init_containers, self.init_states, strict=True):
            if init.get("restartPolicy") == "Always":
                raise NotImplementedError(f"init container {init['name']} is a sidecar (restartPolicy Always): "
                                          "the stand-in kubelet runs init containers to completion only")
            if not self._initialise(init, state):
                return  # stopped, or failed for good (restartPolicy Never: the pod failed)
        self.initialized = True
        if self.init_containers:
            self.state.waiting = ("ContainerCreating", "")
            self.publish()
        image = self._pull(self.container, self.state)
        if image is None:
            return
        backoff = 1.0
        while not self.stopped.is_set():
            argv, env, cwd = self._command(image, self.container)
            if argv is None:  # a Service it names does not exist yet: stay ContainerCreating
                self.stopped.wait(0.5)
                continue
            self.process = ManagedProcess(f"pod-{self.name}", argv, env=env, cwd=cwd, log_path=self.log_path)
            self.process.env = env  # the container's environment only, not the stand-in's
            self.process.start()
            self.event("Normal", "Started", f"Started container {self.container['name']}")
            self.state.waiting, self.state.terminated = None, None
            self.state.running_since, self.state.started, self.state.ready = now(), False, False
            self.publish()
            code = self._probe_until_exit()
            if self.stopped.is_set():
                break
            self.state.ready = self.state.started = False
            reason = "Completed" if code == 0 else "Error"
            if self.spec.get("restartPolicy", "Always") == "Never":
                self.state.terminated = (code, reason)
                self.state.running_since = None
                self.publish()
                return
            self.state.last_terminated = (code, reason)
            self.state.restarts += 1
            self.state.waiting = ("CrashLoopBackOff", f"back-off {backoff:.0f}s restarting failed container")
            self.state.running_since = None
            self.event("Warning", "BackOff", "Back-off restarting failed container")
            self.publish()
            self.stopped.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _initialise(self, container: dict[str, Any], state: ContainerState) -> bool:
        """Run one init container until it exits 0 (True), restarting it with back-off as the kubelet does;
        False when the pod stops or, with ``restartPolicy: Never``, when it fails (the pod fails with it)."""
        image = self._pull(container, state)
        if image is None:
            return False
        name, backoff = container["name"], 1.0
        while not self.stopped.is_set():
            argv, env, cwd = self._command(image, container)
            if argv is None:
                self.stopped.wait(0.5)
                continue
            self.process = ManagedProcess(f"pod-{self.name}-{name}", argv, env=env, cwd=cwd,
                                          log_path=self.log_path_of(name))
            self.process.env = env
            self.process.start()
            self.event("Normal", "Started", f"Started container {name}")
            state.waiting, state.terminated, state.running_since = None, None, now()
            self.publish()
            while self.process.running and not self.stopped.is_set():
                self.stopped.wait(0.2)
            if self.stopped.is_set():
                return False
            code = self.process._popen.returncode if self.process._popen else -1
            state.running_since = None
            if code == 0:
                state.terminated, state.ready = (0, "Completed"), True
                self.publish()
                return True
            state.terminated = (code, "Error")  # what `kubectl get pods` shows as Init:Error
            self.publish()
            if self.spec.get("restartPolicy", "Always") == "Never":
                return False
            self.stopped.wait(0.5)
            state.terminated, state.last_terminated = None, (code, "Error")
            state.restarts += 1
            state.waiting = ("CrashLoopBackOff",
                             f"back-off {backoff:.0f}s restarting failed container={name} pod={self.name}")
            self.event("Warning", "BackOff", f"Back-off restarting failed container {name} in pod {self.name}")
            self.publish()  # Init:CrashLoopBackOff
            self.stopped.wait(backoff)
            backoff = min(backoff * 2, 10.0)
        return False

    def _probe_until_exit(self) -> int:
        """Run the probes while the process lives; its exit code (or -1 when liveness killed it)."""
        startup, readiness, liveness = (self.container.get(k) for k in ("startupProbe", "readinessProbe",
                                                                          "livenessProbe"))
        failures = {"startup": 0, "readiness": 0, "liveness": 0}
        due = {"startup": 0.0, "readiness": 0.0, "liveness": 0.0}
        started_at = time.monotonic()
        self.state.started = startup is None
        if readiness is None:
            self.state.ready = startup is None
        while not self.stopped.is_set():
            assert self.process is not None
            if not self.process.running:
                return self.process._popen.returncode if self.process._popen else -1
            clock = time.monotonic() - started_at
            for kind, probe in (("startup", startup), ("readiness", readiness), ("liveness", liveness)):
                if probe is None or clock < due[kind] or (kind != "startup") != self.state.started:
                    continue
                if clock < probe.get("initialDelaySeconds", 0):
                    continue
                due[kind] = clock + probe.get("periodSeconds", 10)
                ok, detail = self._probe(probe)
                if ok:
                    failures[kind] = 0
                    if kind == "startup":
                        self.state.started = True
                        self.state.ready = readiness is None
                    elif kind == "readiness":
                        self.state.ready = True
                    continue
                failures[kind] += 1
                self.event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {detail}")
                if failures[kind] >= probe.get("failureThreshold", 3):
                    if kind == "readiness":
                        self.state.ready = False
                    else:
                        what = "startup" if kind == "startup" else "liveness"
                        self.event("Normal", "Killing",
                                   f"Container {self.container['name']} failed {what} probe, will be restarted")
                        self.process.stop()
                        return -1
            self.publish()
            self.stopped.wait(0.2)
        return 0

    def _probe(self, probe: dict[str, Any]) -> tuple[bool, str]:
        get = probe.get("httpGet")
        if get is None:
            return True, ""
        port = self.local_port(get["port"])
        url = f"http://127.0.0.1:{port}{get.get('path', '/')}"
        try:
            answer = httpx.get(url, timeout=probe.get("timeoutSeconds", 1))
        except httpx.HTTPError as error:
            return False, f'Get "{url}": {type(error).__name__}'
        if 200 <= answer.status_code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {answer.status_code}"

    def local_port(self, port: int | str) -> int:
        """The local port of a container port, by number or by name."""
        if isinstance(port, str) and not port.isdigit():
            number = next(p["containerPort"] for p in self.container.get("ports", []) if p.get("name") == port)
        else:
            number = int(port)
        if number not in self.ports:
            self.ports[number] = free_port()
        return self.ports[number]

    # --- the container's command and environment -----------------------------------------------------

    def _command(self, image: Image, container: dict[str, Any]) -> tuple[list[str] | None, dict[str, str], str]:
        mounts = self._volumes(container)
        mapping = {**{VENV: sys.prefix}, **{IMAGE_FILES: str(image.root / IMAGE_FILES.strip("/"))}, **mounts}
        prefixes = sorted(mapping, key=len, reverse=True)
        pattern = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(p) for p in prefixes) + r")(?=/|\b|$)")

        def local(text: str) -> str:
            return pattern.sub(lambda m: mapping[m.group(1)], text)

        env = {key: local(value) for key, value in image.env.items()}
        env.update({key: local(value) for key, value in self._container_env(container).items()})
        env.setdefault("HOME", mounts.get("/tmp", str(self.folder)))
        for passed in self.node.passed_env:
            if passed in os.environ:
                env[passed] = os.environ[passed]
        command, args = container.get("command"), container.get("args")
        argv = [*command, *(args or [])] if command else [*image.entrypoint, *(args if args is not None else image.cmd)]
        argv = [local(part) for part in argv]
        if not self._network(argv, env, container):
            return None, env, ""
        for passed in self.node.network_env:  # after the Service rewriting: a proxy's host is no Service
            if passed in os.environ and passed not in env:
                env[passed] = os.environ[passed]
        binary = shutil.which(argv[0], path=env.get("PATH"))
        argv[0] = binary or argv[0]
        cwd = local(container.get("workingDir") or image.workdir)
        return argv, env, cwd

    def _network(self, argv: list[str], env: dict[str, str], container: dict[str, Any]) -> bool:
        """Ports and Service names rewritten for 127.0.0.1; False while a Service it names does not exist."""
        program = Path(argv[0]).name
        # A service: uvicorn itself, or the services' entry point (python -m app.wine / app.llm), same flags.
        serves = program == "uvicorn" or argv[1:3] in (["-m", "app.wine"], ["-m", "app.llm"])
        for index, part in enumerate(argv[:-1]):
            if serves and part == "--port":
                argv[index + 1] = str(self.local_port(int(argv[index + 1])))
            if serves and part == "--host":
                argv[index + 1] = "127.0.0.1"
        if "locust" in argv[0] or "locust" in " ".join(argv):
            for port in container.get("ports", []):
                if port.get("name") == "communication":
                    env["LOCUST_MASTER_BIND_PORT"] = str(self.local_port(port["containerPort"]))
            env.setdefault("LOCUST_WEB_HOST", "127.0.0.1")
            if "LOCUST_MASTER_NODE_HOST" in env:
                address = self.node.services.address(self.namespace, env["LOCUST_MASTER_NODE_HOST"],
                                                     int(env.get("LOCUST_MASTER_NODE_PORT", 5557)))
                if address is None:
                    return False
                env["LOCUST_MASTER_NODE_HOST"], env["LOCUST_MASTER_NODE_PORT"] = "127.0.0.1", str(address[1])
        for key, value in list(env.items()):
            resolved = self.node.services.rewrite_url(self.namespace, value)
            if resolved is False:
                return False
            if resolved:
                env[key] = resolved
        return True

    def _volumes(self, container: dict[str, Any]) -> dict[str, str]:
        """Each mount path of ``container`` and the folder that stands in for it (a ``subPath`` inside its volume).

        ``readOnly`` is not enforced: the processes run as this machine's user."""
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        mounts = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            folder = self.folder / "volumes" / mount["name"]
            if "persistentVolumeClaim" in volume:
                folder = self.node.state / "node" / "volumes" / self.namespace / volume["persistentVolumeClaim"][
                    "claimName"]
            folder.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                data = self.node.read("configmap", self.namespace, volume["configMap"]["name"])
                for key, value in (data or {}).items():
                    (folder / key).write_text(value)
            if mount.get("subPath"):
                folder = folder / mount["subPath"]
                if "configMap" not in volume:
                    folder.mkdir(parents=True, exist_ok=True)  # as the kubelet does for a missing subPath
            mounts[mount["mountPath"]] = str(folder)
        return mounts

    def _container_env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.node.read("configmap", self.namespace, source["configMapRef"]["name"]) or {})
            if "secretRef" in source:
                env.update(self.node.read("secret", self.namespace, source["secretRef"]["name"]) or {})
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item.get("valueFrom", {})
            if "resourceFieldRef" in ref:
                env[item["name"]] = self._resource(ref["resourceFieldRef"], container)
            elif "fieldRef" in ref:
                env[item["name"]] = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                                     "status.podIP": "127.0.0.1"}.get(ref["fieldRef"]["fieldPath"], "")
            elif "configMapKeyRef" in ref or "secretKeyRef" in ref:
                kind, key_ref = ("configmap", ref["configMapKeyRef"]) if "configMapKeyRef" in ref \
                    else ("secret", ref["secretKeyRef"])
                value = (self.node.read(kind, self.namespace, key_ref["name"]) or {}).get(key_ref["key"])
                if value is not None:
                    env[item["name"]] = value
        return env

    def _resource(self, ref: dict[str, Any], container: dict[str, Any]) -> str:
        """A ``resourceFieldRef``: of the container it names (``containerName``), else of ``container``."""
        named = ref.get("containerName")
        if named:
            container = next(c for c in [*self.init_containers, *self.spec["containers"]] if c["name"] == named)
        kind, _, name = ref["resource"].partition(".")
        value = str(container.get("resources", {}).get(kind, {}).get(name, "0"))
        cores = float(value[:-1]) / 1000 if value.endswith("m") else float(value or 0)
        divisor = str(ref.get("divisor", "1"))
        divisor_cores = float(divisor[:-1]) / 1000 if divisor.endswith("m") else float(divisor)
        return str(max(1, math.ceil(cores / divisor_cores)))

    # --- status and events ---------------------------------------------------------------------------

    def publish(self) -> None:
        """Patch the pod's status when it changed (the kubelet's status manager)."""
        state = self.state
        failed_init = any(s.terminated and s.terminated[0] != 0 for s in self.init_states) \
            and self.spec.get("restartPolicy", "Always") == "Never"
        phase = "Running" if state.running_since else "Pending"
        if state.terminated is not None:
            phase = "Succeeded" if state.terminated[0] == 0 else "Failed"
        if failed_init:
            phase = "Failed"
        ready = "True" if state.ready else "False"
        initialized = {"type": "Initialized", "status": "True" if self.initialized else "False"}
        if not self.initialized:
            incomplete = [c["name"] for c, s in zip(self.init_containers, self.init_states, strict=True)
                          if s.terminated != (0, "Completed")]
            initialized |= {"reason": "ContainersNotInitialized",
                            "message": f"containers with incomplete status: [{' '.join(incomplete)}]"}
        status = {"phase": phase, "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
                  "containerStatuses": [state.status(self.container)],
                  "conditions": [{"type": "PodScheduled", "status": "True"}, initialized,
                                 {"type": "ContainersReady", "status": ready},
                                 {"type": "Ready", "status": ready}]}
        if self.init_containers:
            status["initContainerStatuses"] = [s.status(c) for c, s in zip(self.init_containers, self.init_states,
                                                                            strict=True)]
        text = json.dumps(status, sort_keys=True)
        if text == self._published or self.stopped.is_set():
            return
        with contextlib.suppress(ApiException):
            self.node.core.patch_namespaced_pod_status(self.name, self.namespace, {"status": status})
            self._published = text

    def event(self, kind: str, reason: str, message: str) -> None:
        """An Event about this pod; a repeated one counts up, as the kubelet's event recorder does."""
        key = (reason, message)
        count = self._events.get(key, 0) + 1
        self._events[key] = count
        name = f"{self.name}.{abs(hash(key)) % 10**8:08d}"
        body = {"metadata": {"name": name, "namespace": self.namespace},
                "involvedObject": {"kind": "Pod", "name": self.name, "namespace": self.namespace},
                "reason": reason, "message": message, "type": kind, "count": count,
                "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "kubelet"}}
        with contextlib.suppress(ApiException):
            if count == 1:
                self.node.core.create_namespaced_event(self.namespace, body)
            else:
                self.node.core.patch_namespaced_event(name, self.namespace,
                                                      {"count": count, "lastTimestamp": now()})

    def stop(self) -> None:
        self.stopped.set()
        if self.process is not None:
            self.process.stop(timeout=10)


class Node:
    """The node: starts a :class:`Pod` for every pod object, stops it when the object is gone."""

    passed_env = ("WINE_QUALITY_DATA_DIR", "LANG", "LC_ALL")  # the stand-in's "internet": the offline data
    # How this machine reaches the package index (a proxy, its CA bundle, a mirror): a node's pods reach the
    # network through the node, and the init container of k8s/llm downloads a wheel with pip.
    network_env = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
                   "PIP_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE")

    def __init__(self, api_client: client.ApiClient, state: Path, services: Any) -> None:
        self.core = client.CoreV1Api(api_client)
        self.state = state
        self.images = ImageStore(state)
        self.services = services
        self.pods: dict[tuple[str, str], Pod] = {}
        self.served: dict[tuple[str, str], tuple[str, int]] = {}  # stand-in servers: (ns, pod) -> address
        self._lock = threading.Lock()

    def read(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "configmap":
                return self.core.read_namespaced_config_map(name, namespace).data or {}

            data = self.core.read_namespaced_secret(name, namespace).data or {}
            return {key: base64.b64decode(value).decode() for key, value in data.items()}
        except ApiException:
            return None

    def sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces().items
        seen = set()
        for pod in pods:
            key = (pod.metadata.namespace, pod.metadata.name)
            seen.add(key)
            annotations = pod.metadata.annotations or {}
            if SERVED_AT in annotations:
                host, _, port = annotations[SERVED_AT].rpartition(":")
                self.served[key] = (host, int(port))
                continue
            with self._lock:
                if key in self.pods:
                    continue
                spec = self.core.api_client.sanitize_for_serialization(pod.spec)
                folder = self.state / "node" / "pods" / f"{key[0]}_{key[1]}"
                folder.mkdir(parents=True, exist_ok=True)
                running = Pod(self, key[0], key[1], spec, folder)
                self.pods[key] = running
            threading.Thread(target=running.run, name=f"pod {key[1]}", daemon=True).start()
        for key in [k for k in self.pods if k not in seen]:
            self.pods.pop(key).stop()
        for key in [k for k in self.served if k not in seen]:
            self.served.pop(key)

    def pod_address(self, namespace: str, pod: str, port: int) -> tuple[str, int]:
        if (namespace, pod) in self.served:
            return self.served[(namespace, pod)]
        return "127.0.0.1", self.pods[(namespace, pod)].local_port(port)

    def pod_log(self, namespace: str, pod: str, tail: int | None, container: str | None = None) -> str | None:
        """A container's log (the pod's container by default, an init container by name); None: no such container."""
        running = self.pods.get((namespace, pod))
        if running is None:
            return ""
        path = running.log_path_of(container)
        if path is None:
            return None
        if not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines(keepends=True)
        return "".join(lines[-tail:] if tail else lines)

    def ready(self, namespace: str, pod: str) -> bool:
        running = self.pods.get((namespace, pod))
        return (namespace, pod) in self.served or (running is not None and running.state.ready)

    def stop(self) -> None:
        for pod in list(self.pods.values()):
            pod.stop()


def forever(step: Callable[[], None], stop: threading.Event, interval: float, name: str) -> threading.Thread:
    """Run ``step`` every ``interval`` s until ``stop``; an error is printed and the loop goes on."""

    def loop() -> None:
        while not stop.is_set():
            try:
                step()
            except Exception as error:
                print(f"stand-in {name}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            stop.wait(interval)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread
