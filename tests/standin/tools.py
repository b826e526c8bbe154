"""Stand-ins for the ``kind`` and ``helm`` command lines: ``python -m tests.standin.tools kind|helm ARGS``.

Both record their arguments (one JSON list per line in ``STATE/kind.calls`` and ``STATE/helm.calls``) and
do what the workshop needs from the real tool, against the stand-in cluster of ``$KUBECONFIG``:

- ``kind load docker-image IMAGE --name CLUSTER``: refuses an image the Docker engine does not have
  (``ERROR: image: "IMAGE" not present locally``, exit 1, as kind does) or a cluster other than the
  stand-in's, and otherwise records the image's ID as loaded into the node (``STATE/images.json``);
- ``helm upgrade --install RELEASE kube-prometheus-stack ... -f VALUES``: checks the values file and
  the chart, then creates what the workshop relies on from the chart (the monitoring CRDs, the
  Prometheus and Grafana Services with the chart's names and ports) and the release's Secret as helm 3
  stores it; the operator stand-in (:mod:`tests.standin.monitoring`) then runs Prometheus and Grafana.
  ``--wait`` waits until Grafana's pod is ready, as helm waits for the chart's Deployments.
- ``helm uninstall RELEASE --namespace NS``: deletes the release Secrets and the Services (CRDs stay,
  as helm leaves them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from workshop.k8s.apply import apply
from workshop.waiting import WaitTimeout, wait_for

CHART = "kube-prometheus-stack"
CRDS = ("servicemonitors", "podmonitors", "prometheusrules")


def state() -> Path:
    return Path(os.environ["STANDIN_STATE"])


def record(tool: str, argv: list[str]) -> None:
    with (state() / f"{tool}.calls").open("a") as calls:
        calls.write(json.dumps({"argv": argv, "at": time.time(), "notebook": os.environ.get("STANDIN_STEP", "")})
                    + "\n")


def option(argv: list[str], name: str, default: str | None = None) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else default


def kind(argv: list[str]) -> int:
    if argv[:2] != ["load", "docker-image"] or len(argv) < 3:
        print(f"stand-in kind: only `kind load docker-image IMAGE --name CLUSTER` is provided, not {argv}",
              file=sys.stderr)
        return 2
    image, cluster = argv[2], option(argv, "--name", "kind")
    expected = (state() / "cluster-name").read_text().strip()
    if cluster != expected:
        print(f'ERROR: no nodes found for cluster "{cluster}"', file=sys.stderr)
        return 1
    found = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True,
                           text=True, check=False, timeout=60)
    if found.returncode != 0:
        print(f'ERROR: image: "{image}" not present locally', file=sys.stderr)
        return 1
    path = state() / "images.json"
    loaded = json.loads(path.read_text()) if path.exists() else {}
    loaded[image] = found.stdout.strip()
    path.write_text(json.dumps(loaded, indent=1))
    print(f'Image: "{image}" with ID "{loaded[image]}" not yet present on node "{cluster}-control-plane", loading...')
    return 0


def _apis() -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def helm(argv: list[str]) -> int:
    api = _apis()
    core = client.CoreV1Api(api)
    if argv[:2] == ["upgrade", "--install"]:
        release, chart = argv[2], argv[3]
        namespace = option(argv, "--namespace", "default")
        if chart != CHART:
            print(f"Error: stand-in helm only provides the chart {CHART}, not {chart}", file=sys.stderr)
            return 1
        values_path = option(argv, "-f")
        values = yaml.safe_load(Path(values_path).read_text()) if values_path else {}
        if not isinstance(values, dict):
            print(f"Error: values file {values_path} is not a mapping", file=sys.stderr)
            return 1
        if "--create-namespace" in argv:
            apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for plural in CRDS:
            apply(api, {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
                        "spec": {"group": "monitoring.coreos.com", "names": {"plural": plural}, "scope": "Namespaced"}})
        for name, port, target, selector in (
                (f"{release}-prometheus", 9090, "prometheus",
                 {"app.kubernetes.io/name": "prometheus", "prometheus": f"{release}-prometheus"}),
                (f"{release}-grafana", 80, "grafana",
                 {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": release})):
            apply(api, {"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": name, "namespace": namespace, "labels": {"release": release}},
                        "spec": {"selector": selector, "ports": [{"name": "http-web", "port": port,
                                                                   "targetPort": target}]}})
        revisions = _releases(core, namespace, release)
        revision = max(revisions, default=0) + 1
        labels = {"owner": "helm", "name": release, "status": "deployed", "version": str(revision)}
        core.create_namespaced_secret(namespace, {
            "metadata": {"name": f"sh.helm.release.v1.{release}.v{revision}", "labels": labels},
            "type": "helm.sh/release.v1", "data": {}})
        for old in revisions:
            core.patch_namespaced_secret(f"sh.helm.release.v1.{release}.v{old}", namespace,
                                         {"metadata": {"labels": {"status": "superseded"}}})
        if "--wait" in argv and not _wait_for_grafana(core, namespace, release, _seconds(option(argv, "--timeout"))):
            print("Error: UPGRADE FAILED: context deadline exceeded", file=sys.stderr)
            return 1
        print(f'Release "{release}" has been {"upgraded" if revisions else "installed"}. Happy Helming!')
        return 0
    if argv[:1] == ["uninstall"]:
        release, namespace = argv[1], option(argv, "--namespace", "default")
        revisions = _releases(core, namespace, release)
        if not revisions and "--ignore-not-found" not in argv:
            print(f"Error: uninstall: Release not loaded: {release}: release: not found", file=sys.stderr)
            return 1
        for revision in revisions:
            core.delete_namespaced_secret(f"sh.helm.release.v1.{release}.v{revision}", namespace)
        for name in (f"{release}-prometheus", f"{release}-grafana"):
            try:
                core.delete_namespaced_service(name, namespace)
            except ApiException as error:
                if error.status != 404:
                    raise
        print(f'release "{release}" uninstalled' if revisions else f'release "{release}" not found, ignored')
        return 0
    print(f"stand-in helm: `helm {' '.join(argv)}` is not provided", file=sys.stderr)
    return 2


def _releases(core: client.CoreV1Api, namespace: str, release: str) -> list[int]:
    try:
        secrets = core.list_namespaced_secret(namespace).items
    except ApiException:
        return []
    return sorted(int(s.metadata.labels["version"]) for s in secrets
                  if (s.metadata.labels or {}).get("owner") == "helm" and s.metadata.labels.get("name") == release)


def _seconds(text: str | None) -> float:
    return float(text.rstrip("s")) if text else 300.0


def _wait_for_grafana(core: client.CoreV1Api, namespace: str, release: str, timeout: float) -> bool:
    def grafana_pod() -> bool:
        pods = core.list_namespaced_pod(namespace).items
        return any((p.metadata.labels or {}).get("app.kubernetes.io/name") == "grafana" for p in pods)

    try:
        return wait_for(grafana_pod, timeout, f"a Grafana pod in {namespace}", interval=0.5, retry_on=())
    except WaitTimeout:
        return False


def main(argv: list[str]) -> int:
    tool, rest = argv[0], argv[1:]
    record(tool, rest)
    return {"kind": kind, "helm": helm}[tool](rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
