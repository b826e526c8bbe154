"""Stand-ins for what kube-prometheus-stack runs: the Prometheus operator's Prometheus, and Grafana.

The operator stand-in runs once the helm stand-in has installed the release (its Secret
``sh.helm.release.v1.kube-prometheus-stack.vN`` in ``monitoring``, as helm 3 stores releases). It runs
the real ``prometheus`` binary with the chart's global scrape and evaluation intervals from
``k8s/monitoring/values.yaml``, scrapes what the ServiceMonitors of every namespace select (job = the
Service's name, with the ``namespace``, ``service`` and ``pod`` labels the operator adds, at the
endpoint's own ``interval``), evaluates every PrometheusRule, and reloads when they change. Its pod
object stands behind the chart's Service, so the target's port-forward reaches it.

The Grafana stand-in is a small HTTP server, not Grafana: ``/api/health``, and ``/api/search`` with the
admin user and password of the ``grafana-admin`` Secret (basic auth, 401 otherwise), listing what the
dashboard sidecar would import: every ConfigMap with the sidecar's label (label and value read from
values.yaml), in every namespace (``searchNamespace: ALL``), one dashboard per JSON file in it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from workshop.k8s.diagnose import matches
from workshop.paths import project_root
from workshop.process import ManagedProcess, free_port
from workshop.prometheus import find_prometheus

from .node import SERVED_AT

NAMESPACE = "monitoring"
RELEASE = "kube-prometheus-stack"
PROMETHEUS_POD = f"prometheus-{RELEASE}-prometheus-0"
PROMETHEUS_LABELS = {"app.kubernetes.io/name": "prometheus", "prometheus": f"{RELEASE}-prometheus"}
GRAFANA_POD = f"{RELEASE}-grafana-standin"
GRAFANA_LABELS = {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": RELEASE}


def values() -> dict[str, Any]:
    return yaml.safe_load((project_root() / "k8s" / "monitoring" / "values.yaml").read_text())


def installed(core: client.CoreV1Api) -> bool:
    try:
        secrets = core.list_namespaced_secret(NAMESPACE).items
    except ApiException:
        return False
    return any((s.metadata.labels or {}).get("owner") == "helm" and (s.metadata.labels or {}).get("name") == RELEASE
               and (s.metadata.labels or {}).get("status") == "deployed" for s in secrets)


class Operator:
    def __init__(self, api_client: client.ApiClient, node: Any, state: Path) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.node = node
        self.folder = state / "prometheus"
        self.process: ManagedProcess | None = None
        self.port = 0
        self.config = ""
        self.grafana = GrafanaStandin(self.core)

    def sync(self) -> None:
        if not installed(self.core):
            self._stop()
            return
        if self.process is None or not self.process.running:
            self._start()
        self._pod(PROMETHEUS_POD, PROMETHEUS_LABELS, self.port, 9090, "prometheus")
        self._pod(GRAFANA_POD, GRAFANA_LABELS, self.grafana.port, 3000, "grafana")
        config = self._config()
        if config != self.config:
            (self.folder / "prometheus.yml").write_text(config)
            self.config = config
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"http://127.0.0.1:{self.port}/-/reload", timeout=10)

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = self._config()
        (self.folder / "prometheus.yml").write_text(self.config)
        self.port = free_port()
        argv = [find_prometheus(), f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle"]
        self.process = ManagedProcess("standin-prometheus", argv, cwd=self.folder,
                                      log_path=self.folder / "prometheus.log").start()
        self.process.wait_for_http(f"http://127.0.0.1:{self.port}/-/ready", timeout=60)
        self.grafana.start()

    def _stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
            self.grafana.stop()
        for pod in (PROMETHEUS_POD, GRAFANA_POD):
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(pod, NAMESPACE)

    def _pod(self, name: str, labels: dict[str, str], local_port: int, port: int, port_name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels,
                             "annotations": {SERVED_AT: f"127.0.0.1:{local_port}"}},
                "spec": {"containers": [{"name": port_name, "image": f"standin/{port_name}",
                                         "ports": [{"name": port_name, "containerPort": port}]}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": port_name, "image": f"standin/{port_name}", "imageID": "", "ready": True,
                     "restartCount": 0, "state": {"running": {}}}]}}
        try:
            current = self.core.read_namespaced_pod(name, NAMESPACE)
        except ApiException:
            self.core.create_namespaced_pod(NAMESPACE, body)
            return
        if (current.metadata.annotations or {}).get(SERVED_AT) != body["metadata"]["annotations"][SERVED_AT]:
            self.core.patch_namespaced_pod(name, NAMESPACE, {"metadata": body["metadata"]})

    # --- what the operator generates ----------------------------------------------------------------

    def _list(self, plural: str) -> list[dict[str, Any]]:
        try:
            return self.custom.list_cluster_custom_object("monitoring.coreos.com", "v1", plural)["items"]
        except ApiException:
            return []

    def _config(self) -> str:
        spec = values()["prometheus"]["prometheusSpec"]
        scrape_configs = []
        pods = self.core.list_pod_for_all_namespaces().items
        services = self.core.list_service_for_all_namespaces().items
        for monitor in self._list("servicemonitors"):
            namespace = monitor["metadata"]["namespace"]
            selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
            for index, endpoint in enumerate(monitor["spec"].get("endpoints", [])):
                targets = []
                for service in services:
                    if service.metadata.namespace != namespace or not matches(service.metadata.labels, selector):
                        continue
                    port = next((p for p in service.spec.ports or [] if p.name == endpoint.get("port")), None)
                    if port is None:
                        continue
                    for pod in pods:
                        if pod.metadata.namespace != namespace \
                                or not matches(pod.metadata.labels, service.spec.selector or {}) \
                                or not self.node.ready(namespace, pod.metadata.name):
                            continue
                        target = port.target_port
                        numbers = [p.container_port for c in pod.spec.containers for p in c.ports or []
                                   if p.name == target or p.container_port == target]
                        if not numbers:
                            continue
                        host, local = self.node.pod_address(namespace, pod.metadata.name, numbers[0])
                        targets.append({"targets": [f"{host}:{local}"], "labels": {
                            "job": service.metadata.name, "namespace": namespace, "service": service.metadata.name,
                            "pod": pod.metadata.name, "endpoint": endpoint.get("port", "")}})
                scrape_configs.append({
                    "job_name": f"serviceMonitor/{namespace}/{monitor['metadata']['name']}/{index}",
                    "honor_labels": False, "metrics_path": endpoint.get("path", "/metrics"),
                    "scrape_interval": endpoint.get("interval", spec.get("scrapeInterval", "30s")),
                    "scrape_timeout": endpoint.get("scrapeTimeout", "10s"),
                    "static_configs": sorted(targets, key=lambda t: t["targets"][0])})
        rule_files = []
        rules_folder = self.folder / "rules"
        rules_folder.mkdir(parents=True, exist_ok=True)
        for rule in self._list("prometheusrules"):
            path = rules_folder / f"{rule['metadata']['namespace']}-{rule['metadata']['name']}.yaml"
            text = yaml.safe_dump({"groups": rule["spec"].get("groups", [])}, sort_keys=False)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
            rule_files.append(str(path))
        return yaml.safe_dump({
            "global": {"scrape_interval": spec.get("scrapeInterval", "30s"),
                       "evaluation_interval": spec.get("evaluationInterval", "30s")},
            "rule_files": sorted(rule_files), "scrape_configs": scrape_configs}, sort_keys=False)


class GrafanaStandin:
    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    def start(self) -> None:
        if self.server is not None:
            return
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/api/health":
                    return self._json(200, {"database": "ok", "version": "stand-in"})
                if not standin.authorised(self.headers.get("Authorization", "")):
                    return self._json(401, {"message": "invalid username or password"})
                if url.path == "/api/search":
                    kind = parse_qs(url.query).get("type", ["dash-db"])[0]
                    return self._json(200, standin.dashboards() if kind == "dash-db" else [])
                return self._json(404, {"message": "Not found"})

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="grafana stand-in", daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def authorised(self, header: str) -> bool:
        admin = values()["grafana"]["admin"]
        try:
            data = self.core.read_namespaced_secret(admin["existingSecret"], NAMESPACE).data or {}
        except ApiException:
            return False
        expected = f"{base64.b64decode(data[admin['userKey']]).decode()}:" \
                   f"{base64.b64decode(data[admin['passwordKey']]).decode()}"
        return header == "Basic " + base64.b64encode(expected.encode()).decode()

    def dashboards(self) -> list[dict[str, Any]]:
        sidecar = values()["grafana"]["sidecar"]["dashboards"]
        found = []
        for config_map in self.core.list_config_map_for_all_namespaces().items:
            if (config_map.metadata.labels or {}).get(sidecar["label"]) != str(sidecar["labelValue"]):
                continue
            folder = (config_map.metadata.annotations or {}).get(sidecar.get("folderAnnotation", ""), "General")
            for key, text in (config_map.data or {}).items():
                with contextlib.suppress(ValueError):
                    dashboard = json.loads(text)
                    found.append({"uid": dashboard.get("uid", key), "title": dashboard.get("title", key),
                                  "type": "dash-db", "folderTitle": folder})
        return sorted(found, key=lambda d: d["title"])
