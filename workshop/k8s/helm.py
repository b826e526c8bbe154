"""kube-prometheus-stack through ``helm``, and the Grafana admin Secret its values expect.

Helm has no maintained Python API, so it runs as a subprocess with an explicit argument list. The
chart is fetched with ``--repo`` rather than a named repository, so nothing depends on a prior
``helm repo add`` on the learner's machine. ``k8s/monitoring/values.yaml`` points Grafana at the Secret
``grafana-admin``: it is created here with a random password (``secrets``) and never overwritten, so
a re-run keeps the password a learner already uses.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from workshop.k8s.apply import apply
from workshop.k8s.errors import HelmError, ToolMissingError
from workshop.paths import project_root

RELEASE = "kube-prometheus-stack"  # the label the workshop's ServiceMonitor and PrometheusRule carry
CHART = "kube-prometheus-stack"
REPO = "https://prometheus-community.github.io/helm-charts"
NAMESPACE = "monitoring"
GRAFANA_SECRET = "grafana-admin"  # noqa: S105 - the Secret's name, not a password
PROMETHEUS_SERVICE = f"{RELEASE}-prometheus"
PROMETHEUS_PORT = 9090
GRAFANA_SERVICE = f"{RELEASE}-grafana"
GRAFANA_PORT = 80  # the chart's Service port (grafana.service.port), in front of the container's 3000
HELM_HINT = "Install helm 3 (https://helm.sh/docs/intro/install/, e.g. `brew install helm` or the get-helm-3 script)."


def values_file() -> Path:
    return project_root() / "k8s" / "monitoring" / "values.yaml"


def install_command(*, release: str = RELEASE, namespace: str = NAMESPACE, values: Path | None = None,
                    version: str | None = None, timeout_s: int = 600) -> list[str]:
    """``helm upgrade --install``: installs the first time, upgrades after; waits for the pods."""
    command = ["helm", "upgrade", "--install", release, CHART, "--repo", REPO, "--namespace", namespace,
               "--create-namespace", "-f", str(values or values_file()), "--wait", "--timeout", f"{timeout_s}s"]
    return [*command, "--version", version] if version else command


def uninstall_command(*, release: str = RELEASE, namespace: str = NAMESPACE) -> list[str]:
    return ["helm", "uninstall", release, "--namespace", namespace, "--ignore-not-found", "--wait"]


def run_helm(command: list[str], *, timeout: float = 900.0) -> str:
    """Run a helm command line; its output, or HelmError with the command and what helm said."""
    binary = shutil.which(command[0])
    if binary is None:
        raise ToolMissingError(f"`{command[0]}` is not on PATH. {HELM_HINT}")
    try:
        done = subprocess.run([binary, *command[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HelmError(f"`{' '.join(command)}` did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise HelmError(f"`{' '.join(command)}` failed (exit {done.returncode}):\n{output}")
    return done.stdout


def ensure_namespace(api_client: client.ApiClient, namespace: str) -> None:
    """The chart's namespace, applied (not created) so that an existing one is simply kept."""
    apply(api_client, {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": namespace, "labels": {"app.kubernetes.io/part-of": "ml-serving-workshop"}}})


def ensure_grafana_secret(core: client.CoreV1Api, namespace: str = NAMESPACE, *, user: str = "admin") -> bool:
    """Create the ``grafana-admin`` Secret with a random password unless it exists; True when created."""
    try:
        core.read_namespaced_secret(GRAFANA_SECRET, namespace)
        return False
    except ApiException as error:
        if error.status != 404:
            raise
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name=GRAFANA_SECRET, labels={"app.kubernetes.io/part-of": "ml-serving-workshop"}),
        type="Opaque",
        string_data={"admin-user": user, "admin-password": secrets.token_urlsafe(18)},
    )
    try:
        core.create_namespaced_secret(namespace, secret)
    except ApiException as error:
        if error.status == 409:  # created meanwhile by someone else: theirs stands
            return False
        raise
    return True


def grafana_credentials(core: client.CoreV1Api, namespace: str = NAMESPACE) -> tuple[str, str]:
    """(user, password) from the Secret, for logging in to Grafana."""
    data = core.read_namespaced_secret(GRAFANA_SECRET, namespace).data or {}
    decode = lambda key: base64.b64decode(data.get(key, "")).decode()  # noqa: E731
    return decode("admin-user"), decode("admin-password")
