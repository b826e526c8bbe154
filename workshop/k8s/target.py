"""The ``kubernetes`` target: the workshop's services on the cluster of the current kubeconfig.

Same interface as the local target (:class:`workshop.target_api.Target`: deploy a service and get a URL,
start monitoring and get Prometheus' URL, read every replica's metrics, describe the service as tables, run a
load test, tear down, and the :class:`~workshop.target_api.Timings` to wait by), built from the modules beside
this one: images built with Docker and loaded into the cluster, manifests rendered by kustomize and moved to
the learner's namespace, server-side apply, rollout waiting with diagnostics, port-forwarding, helm. Every
learner works in a namespace of their own, guarded by the ResourceQuota and LimitRange of ``k8s/quota``;
the monitoring chart is shared by all of them.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx
import pandas as pd
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from workshop import container as docker
from workshop.k8s import diagnose, helm, images, manifests, tables
from workshop.k8s import loadtest as cluster_loadtest
from workshop.k8s.apply import MONITORING_GROUP, apply, apply_all
from workshop.k8s.cluster import FIELD_MANAGER, Cluster, connect
from workshop.k8s.errors import KubernetesTargetError, ManifestError, PortForwardError, RolloutError
from workshop.k8s.portforward import PortForward, http_get, wait_for_endpoint
from workshop.k8s.rollout import wait_for_rollout
from workshop.loadtest import LoadTestResult
from workshop.observability.alerts import prometheus_rule_manifest, prometheus_rules
from workshop.observability.k8s_dashboards import dashboard_files
from workshop.paths import project_root
from workshop.prometheus import query
from workshop.service_client import combined_metrics_frame
from workshop.target_api import Deployment, GrafanaAccess, Timings, duration_s, settings_env
from workshop.waiting import wait_for

DEFAULT_NAMESPACE = "wine-workshop"
WINE_IMAGE = "wine-service:latest"
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # an RFC 1123 label, as the API demands
SERVICES = (("base", "wine"), ("llm", "llm"))  # manifests folder, Deployment
UNDO_TIMEOUT_S = 120.0  # the longest undoing a failed rollout may take (the old pods only scale back up)
IN_CLUSTER_WINE = "http://wine"  # the wine Service's port 80, by name, from a pod in the same namespace
OPERATOR_SCRAPE_INTERVAL = "30s"  # what the Prometheus operator scrapes at when neither values nor monitor say
ROLLOUT_TIMEOUT_S = 300.0  # scheduling, pulling a loaded image, starting and probing two pods on a laptop
POD_START_S = 60.0  # a new pod scheduled and its container started, before its readiness probe counts
RETIRE_TIMEOUT_S = 90.0  # pods stopping (preStop, grace) and two 15 s scrape intervals until staleness markers
ALERT_TIMEOUT_S = 300.0  # the demo's shortened holds plus a few 15 s rule evaluations and the chart's delays


def cluster_timings(manifests_root: Path) -> Timings:
    """The kubernetes target's :class:`Timings`, read from the manifests under ``manifests_root``.

    The scrape interval is the wine ServiceMonitor's (``base/wine-servicemonitor.yaml``) when it sets one, else
    the chart's ``prometheus.prometheusSpec.scrapeInterval`` (``monitoring/values.yaml``). A failed rollout is
    certain once a new pod has started (:data:`POD_START_S`) and its readiness probe failed ``failureThreshold``
    times, with room to spare: twice ``periodSeconds x failureThreshold``.
    """
    base = [doc for path in sorted((manifests_root / "base").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]
    monitor = next((d for d in base if d.get("kind") == "ServiceMonitor" and d["metadata"]["name"] == "wine"), {})
    monitor_interval = next((e["interval"] for e in monitor.get("spec", {}).get("endpoints", []) if "interval" in e),
                            None)
    values_path = manifests_root / "monitoring" / "values.yaml"
    values = yaml.safe_load(values_path.read_text()) if values_path.is_file() else {}
    chart_interval = ((values or {}).get("prometheus") or {}).get("prometheusSpec", {}).get("scrapeInterval")
    deployment = next((d for d in base if d.get("kind") == "Deployment" and d["metadata"]["name"] == "wine"), None)
    if deployment is None:
        raise ManifestError(f"No Deployment wine in {manifests_root / 'base'}: the workshop's manifests are missing.")
    probe = manifests.containers(deployment)[0].get("readinessProbe", {})
    probing_s = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)  # the API server's defaults
    return Timings(scrape_interval_s=duration_s(monitor_interval or chart_interval or OPERATOR_SCRAPE_INTERVAL),
                   rollout_timeout_s=ROLLOUT_TIMEOUT_S, failed_rollout_timeout_s=POD_START_S + 2 * probing_s,
                   alert_timeout_s=ALERT_TIMEOUT_S)


def _http_port(pod: client.V1Pod) -> int:
    """The container port named ``http`` (the one the Service and the ServiceMonitor use)."""
    for container in pod.spec.containers:
        for port in container.ports or []:
            if port.name == "http":
                return port.container_port
    raise KubernetesTargetError(f"Pod {pod.metadata.name} declares no container port named 'http'.")


def _grafana_dashboards(url: str, user: str, password: str) -> tuple[list[str], str]:
    """(titles of the dashboards Grafana lists, how it answered) from its search API, with basic auth."""
    try:
        response = httpx.get(f"{url}/api/search", params={"type": "dash-db"}, auth=(user, password), timeout=10)
    except httpx.HTTPError as error:
        return [], f"no answer: {type(error).__name__}"
    if response.status_code == 401:
        return [], f"HTTP 401: the login of Secret {helm.NAMESPACE}/{helm.GRAFANA_SECRET} was refused"
    if response.is_error:
        return [], f"HTTP {response.status_code}"
    return [item.get("title", "") for item in response.json()], f"HTTP {response.status_code}"


def _owned_by(replicaset: client.V1ReplicaSet, deployment: client.V1Deployment) -> bool:
    """Whether the Deployment owns the ReplicaSet (its ownerReference, else its selector's labels)."""
    owners = replicaset.metadata.owner_references or []
    if owners:
        return any(o.kind == "Deployment" and o.name == deployment.metadata.name for o in owners)
    selector = deployment.spec.selector.match_labels or {}
    return bool(selector) and diagnose.matches(replicaset.metadata.labels, selector)


@dataclass
class KubernetesDeployment(Deployment):
    """A service on the cluster: its local URL goes through a port-forward; logs come from its pods."""

    target: KubernetesTarget | None = None
    forward: PortForward | None = None

    @property
    def running(self) -> bool:
        return self.forward is not None and self.forward.open

    def stop(self) -> None:
        if self.forward is not None:
            self.forward.close()

    def logs(self, lines: int = 30) -> str:
        return self.target.logs(self.name, lines) if self.target else ""


@dataclass
class KubernetesTarget:
    """Deploys into ``namespace`` of the current kubeconfig context (or ``context``)."""

    namespace: str = DEFAULT_NAMESPACE
    kubeconfig: str | Path | None = None
    context: str | None = None
    manifests_root: Path = field(default_factory=lambda: project_root() / "k8s")
    wine_image: str = WINE_IMAGE
    load_image: bool = True
    build_images: bool = True  # build each image with Docker before deploying it (see deploy_wine)
    # torch's CPU wheel for the llm image, downloaded there once (docker.fill_wheelhouse); None: the Dockerfile's index
    wheelhouse: Path | None = field(default_factory=lambda: docker.WHEELHOUSE_DIR)
    progress: bool = True
    poll_interval: float = 1.0  # seconds between reads of a rollout's state
    cluster: Cluster | None = None
    name: str = "kubernetes"
    deployments: list[KubernetesDeployment] = field(default_factory=list)
    _specs: dict[str, tuple[str, str | None, dict[str, str]]] = field(default_factory=dict, repr=False)
    skipped: list[manifests.Manifest] = field(default_factory=list)
    prometheus_forward: PortForward | None = None
    grafana_forward: PortForward | None = None

    def __post_init__(self) -> None:
        if not NAMESPACE_NAME.fullmatch(self.namespace):
            raise ValueError(
                f"{self.namespace!r} cannot name a namespace: use at most 63 lower-case letters, digits and '-', "
                "starting and ending with a letter or digit (e.g. 'wine-alice')."
            )
        if self.cluster is None:
            self.cluster = connect(self.kubeconfig, self.context)

    @cached_property
    def timings(self) -> Timings:
        """How long scrapes, rollouts and alerts take here, from the manifests (see :func:`cluster_timings`)."""
        return cluster_timings(self.manifests_root)

    @property
    def _cluster(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    # --- namespace and manifests ---------------------------------------------------------------------

    def _render(self, folder: str) -> list[manifests.Manifest]:
        """``folder``'s objects in the target's namespace, without a replica count an HPA of theirs owns.

        Every apply (the deploy, each rolling update and its undo) goes through here, so none of them resets
        the count ``scale()`` or the HPA set.
        """
        objects = manifests.in_namespace(manifests.render(self.manifests_root / folder), self.namespace)
        return manifests.without_autoscaled_replicas(objects)

    def _apply(self, objects: Sequence[manifests.Manifest]) -> None:
        _, skipped = apply_all(self._cluster.api_client, objects, field_manager=FIELD_MANAGER)
        known = {(m["kind"], m["metadata"]["name"]) for m in self.skipped}
        self.skipped += [m for m in skipped if (m["kind"], m["metadata"]["name"]) not in known]

    def prepare_namespace(self) -> None:
        """The learner's Namespace (labels from k8s/base) with its ResourceQuota and LimitRange (k8s/quota)."""
        namespace = manifests.find(self._render("base"), "Namespace")
        self._apply([namespace, *self._render("quota")])

    # --- services ------------------------------------------------------------------------------------

    def _deploy(self, folder: str, name: str, *, image: str | None, env: Mapping[str, str], wait_ready: bool,
                timeout: float, local_port: int = 0, stage: str | None = None) -> KubernetesDeployment:
        """Apply ``folder`` with ``name``'s image and settings; ``stage``: the Dockerfile target to build if missing."""
        objects = self._render(folder)
        deployment = self._with_settings(objects, name, image, env)
        if stage is not None:
            self._ensure_image(stage, manifests.containers(deployment)[0]["image"])
        self._specs[name] = (folder, image, dict(env))
        self.prepare_namespace()
        if self.load_image:
            images.load_image(manifests.containers(deployment)[0]["image"], self._cluster.context)
        self._apply([m for m in objects if m["kind"] != "Namespace"])
        if wait_ready:
            deadline = time.monotonic() + timeout
            wait_for_rollout(self._cluster, self.namespace, name, timeout=timeout, interval=self.poll_interval,
                             progress=self.progress)
            # Without spec.replicas a new Deployment starts with one pod; its autoscaler raises it to the minimum.
            autoscaled = [m for m in objects if m["kind"] == "HorizontalPodAutoscaler"
                          and m["spec"]["scaleTargetRef"]["name"] == name]
            if autoscaled:
                self._wait_for_replicas(name, autoscaled[0]["spec"].get("minReplicas", 1), deadline, timeout)
                wait_for_rollout(self._cluster, self.namespace, name, timeout=max(1.0, deadline - time.monotonic()),
                                 interval=self.poll_interval, progress=self.progress)
            forward = PortForward(self._cluster.core, self.namespace, name, local_port=local_port).start()
            url = forward.url
        else:
            forward, url = None, ""
        result = KubernetesDeployment(name, url, None, dict(env), target=self, forward=forward)
        self.deployments.append(result)
        return result

    @staticmethod
    def _with_settings(objects: list[manifests.Manifest], name: str, image: str | None,
                       env: Mapping[str, str]) -> manifests.Manifest:
        """The Deployment ``name`` of ``objects``, changed in place: its first container's image and variables."""
        deployment = manifests.find(objects, "Deployment", name)
        for container in manifests.containers(deployment)[:1]:
            if image:
                container["image"] = image
            manifests.set_env(container, env)
        return deployment

    def _spec(self, name: str) -> tuple[str, str | None, dict[str, str]]:
        if name not in self._specs:
            raise KubernetesTargetError(f"{name} was not deployed by this target: call deploy_{name}() first.")
        return self._specs[name]

    def scale(self, name: str, replicas: int, *, timeout: float = 300.0) -> int:
        """Run at least ``replicas`` pods of Deployment ``name``; return how many are available.

        When a HorizontalPodAutoscaler owns the Deployment's replica count (the wine service has one), scaling the
        Deployment by hand would be undone within seconds, so the HPA's minimum is raised (and its maximum if
        needed) instead; without one the Deployment's scale is set.
        """
        if replicas < 1:
            raise ValueError("replicas must be at least 1 (teardown() deletes everything)")
        self._spec(name)
        autoscaling = client.AutoscalingV2Api(self._cluster.api_client)
        try:
            hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            self._cluster.apps.patch_namespaced_deployment_scale(
                name, self.namespace, {"spec": {"replicas": replicas}})
        else:
            spec = {"minReplicas": replicas, "maxReplicas": max(hpa.spec.max_replicas, replicas)}
            autoscaling.patch_namespaced_horizontal_pod_autoscaler(name, self.namespace, {"spec": spec})
        deadline = time.monotonic() + timeout
        self._wait_for_replicas(name, replicas, deadline, timeout)
        rolled = wait_for_rollout(self._cluster, self.namespace, name, timeout=max(1.0, deadline - time.monotonic()),
                                  interval=self.poll_interval, progress=self.progress)
        return rolled.status.available_replicas or 0

    def _wait_for_replicas(self, name: str, replicas: int, deadline: float, timeout: float) -> None:
        """Until Deployment ``name`` asks for ``replicas``: the HPA controller raises it within its sync (15 s)."""
        asked: int | None = None

        def asks_enough() -> bool:
            nonlocal asked
            asked = self._cluster.apps.read_namespaced_deployment(name, self.namespace).spec.replicas
            return (asked or 0) >= replicas

        try:
            wait_for(asks_enough, max(0.0, deadline - time.monotonic()), f"deployment/{name} to ask for {replicas}",
                     interval=self.poll_interval, retry_on=())
        except TimeoutError as error:
            raise KubernetesTargetError(f"deployment/{name} still asks for {asked} replicas after {timeout:.0f} s: "
                                        "is the HPA controller running?") from error

    def ready_replicas(self, name: str = "wine") -> int:
        """How many pods of Deployment ``name`` are ready (serve traffic) now."""
        return sum(diagnose.is_ready(pod) for pod in self._pods(self._deployment(name)))

    def roll_out(self, name: str = "wine", *, timeout: float = 120.0, image: str | None = None,
                 **settings: str) -> KubernetesDeployment | None:
        """Change settings (or the ``image``) of Deployment ``name`` with a rolling update; undo it if the new pods
        never get ready.

        The Deployment's strategy (maxUnavailable 0) keeps the old pods serving while new ones start. If the new
        ones fail (readiness, crash, image), the previous settings and image are applied again, which scales the
        old ReplicaSet back, and :class:`RolloutError` carries what the new pods reported.
        """
        folder, previous_image, env = self._spec(name)
        changed = {**env, **settings_env(name, settings)}
        new_image = image or previous_image
        if image and self.load_image:
            images.load_image(image, self._cluster.context)
        self._apply([self._with_settings(self._render(folder), name, new_image, changed)])
        try:
            wait_for_rollout(self._cluster, self.namespace, name, timeout=timeout, interval=self.poll_interval,
                             progress=self.progress)
        except RolloutError as failed:
            self._apply([self._with_settings(self._render(folder), name, previous_image, env)])
            # Undoing scales the old ReplicaSet back: its own deadline, however short the failed wait was.
            wait_for_rollout(self._cluster, self.namespace, name, timeout=max(timeout, UNDO_TIMEOUT_S),
                             interval=self.poll_interval, progress=self.progress, fail_fast=False)
            raise RolloutError(f"{failed}\nRolled back to the previous settings: the old pods kept serving.",
                               deployment=failed.deployment, reasons=failed.reasons, pods=failed.pods) from None
        self._specs[name] = (folder, new_image, changed)
        for deployment in self.deployments:
            if deployment.name == name:
                deployment.env = dict(changed)
        return next((d for d in self.deployments if d.name == name), None)

    def roll_out_model(self, model_dir: Path, *, timeout: float = 120.0) -> KubernetesDeployment | None:
        """Serve a new model version with a rolling update: the image ``wine-service:<version>`` of ``model_dir``
        is built (and loaded into minikube or kind), and Deployment wine rolls to it; undone if it never gets ready."""
        if not self.build_images:
            raise KubernetesTargetError("roll_out_model builds the new model's image, and this target was created "
                                        "with build_images=False: build and load it yourself, then "
                                        "roll_out('wine', image=TAG).")
        return self.roll_out("wine", timeout=timeout, image=self._build_wine(Path(model_dir)))

    def deploy_wine(self, model_dir: Path | None = None, *, port: int = 0, wait_ready: bool = True,
                    timeout: float = 300.0, image: str | None = None, **settings: str) -> KubernetesDeployment:
        """Build the image of ``model_dir``, apply k8s/base with it, wait for the rollout, port-forward Service wine.

        With ``model_dir`` (and ``build_images``) the wine image is built from that model, tagged
        ``wine-service:<model version>`` and deployed: the model the learner trained is the one served, and
        Docker's layer cache makes a rebuild take seconds. Without one (or with ``build_images=False``) the
        ``wine_image`` field is deployed as it is; ``image`` deploys that image instead, unbuilt. ``port`` is
        the local end of the port-forward (0: a free one). ``settings`` become ``WINE_*`` variables of the
        container. Without ``wait_ready`` the objects are applied and no URL is given (watch the rollout yourself).
        """
        if image is None and model_dir is not None and self.build_images:
            image = self._build_wine(Path(model_dir))
        env = settings_env("wine", settings)
        return self._deploy("base", "wine", image=image or self.wine_image, env=env, wait_ready=wait_ready,
                            timeout=timeout, local_port=port)

    # --- images --------------------------------------------------------------------------------------

    def _require_docker(self) -> None:
        engine = docker.engine_available()
        if not engine:
            raise KubernetesTargetError(
                f"The images are built with Docker before they are deployed, and {engine.reason}. Start Docker "
                "(minikube and kind need it anyway), or pass build_images=False with the images already in the "
                "cluster.")

    def _build_wine(self, model_dir: Path) -> str:
        """``wine-service:<version>`` built from the model in ``model_dir`` (its model_card.json names the version)."""
        card = model_dir / "model_card.json"
        if not card.is_file():
            raise KubernetesTargetError(f"{model_dir} holds no model_card.json: train a model first "
                                        "(python -m training --output DIR), or deploy_wine() without model_dir.")
        tag = f"{images.repository(self.wine_image)}:{images.version_tag(json.loads(card.read_text())['version'])}"
        self._require_docker()
        with docker.temporary_context(model_dir) as context:
            self._build("wine", tag, Path(context))
        return tag

    def _build(self, stage: str, tag: str, context: Path) -> None:
        wheelhouse = self._llm_wheelhouse() if stage == "llm" else None
        if self.progress:
            print(f"building {tag} (the Dockerfile's stage {stage}; a first build takes minutes)", flush=True)
        build = docker.build_image(stage, tag, context, ca_bundle=docker.default_ca_bundle(), wheelhouse=wheelhouse)
        if self.progress:
            print(f"built {tag} in {build.seconds:.0f} s", flush=True)

    def _llm_wheelhouse(self) -> Path | None:
        """The wheelhouse with torch's CPU wheel (~200 MB), so that pip takes no multi-GB CUDA build from PyPI.

        Where no wheel can be had, the build takes torch from the Dockerfile's TORCH_INDEX_URL, as it says.
        """
        if self.wheelhouse is None:
            return None
        say = (lambda line: print(line, flush=True)) if self.progress else (lambda line: None)
        try:
            docker.fill_wheelhouse(self.wheelhouse, say=say)
        except docker.ContainerError as error:
            say(f"building without a wheelhouse (torch from the Dockerfile's TORCH_INDEX_URL): {error}")
            return None
        return self.wheelhouse

    def _ensure_image(self, stage: str, tag: str) -> None:
        """Build the Dockerfile's ``stage`` from the project as ``tag`` when Docker has no such image yet."""
        if not self.build_images:
            return
        self._require_docker()
        if not docker.image_exists(tag):
            self._build(stage, tag, project_root())

    def deploy_llm(self, models_dir: Path | None = None, *, default_model: str | None = None, port: int = 0,
                   wait_ready: bool = True, timeout: float = 600.0, image: str | None = None,
                   **settings: str) -> KubernetesDeployment:
        """Apply k8s/llm (Deployment and Service ``llm``), wait for the rollout, port-forward its Service.

        ``settings`` become ``LLM_*`` variables (``default_model`` is ``LLM_DEFAULT_MODEL``); ``models_dir`` is
        the folder inside the pod (``LLM_MODELS_DIR``), since a local folder does not reach the cluster. With
        ``build_images`` the image (``image``, else the manifest's) is built from the project first if Docker
        does not have it.
        """
        env = settings_env("llm", settings)
        if default_model:
            env["LLM_DEFAULT_MODEL"] = default_model
        if models_dir is not None:
            env["LLM_MODELS_DIR"] = str(models_dir)
        return self._deploy("llm", "llm", image=image, env=env, wait_ready=wait_ready, timeout=timeout,
                            local_port=port, stage="llm")

    def _deployment(self, name: str) -> client.V1Deployment:
        try:
            return self._cluster.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                raise KubernetesTargetError(f"There is no Deployment {name} in namespace {self.namespace}: "
                                            f"deploy_{name}() first.") from None
            raise

    def _pods(self, deployment: client.V1Deployment) -> list[client.V1Pod]:
        return diagnose.pods_for(self._cluster.core, self.namespace, deployment.spec.selector.match_labels or {})

    def logs(self, name: str = "wine", lines: int = 30) -> str:
        """The last ``lines`` of each pod of Deployment ``name``, headed by the pod's name."""
        return "\n".join(f"--- pod {pod.metadata.name}\n"
                         + diagnose.pod_log(self._cluster.core, self.namespace, pod.metadata.name, lines=lines)
                         for pod in self._pods(self._deployment(name)))

    def metrics(self, name: str = "wine", prefix: str = "") -> pd.DataFrame:
        """The /metrics of every ready pod of Deployment ``name``, summed (see :func:`combined_metrics_frame`).

        Each pod is read through a port-forward of its own, not through the Service's, which reaches one pod
        only: with two replicas that would show half the traffic. Counters and histograms are
        the sums over the pods; gauges (model info, training statistics) the first pod's value.
        """
        ready = [pod for pod in self._pods(self._deployment(name)) if diagnose.is_ready(pod)]
        if not ready:
            raise KubernetesTargetError(f"Deployment {name} in namespace {self.namespace} has no ready pod to read "
                                        f"/metrics from: wait for its rollout (target.describe({name!r}) shows why).")
        texts = [http_get(self._cluster.core, self.namespace, pod.metadata.name, _http_port(pod), "/metrics")
                 for pod in ready]
        return combined_metrics_frame(texts, prefix)

    def describe(self, name: str = "wine") -> dict[str, pd.DataFrame]:
        """Deployment ``name`` as tables: ``pods``, ``replicasets`` (with the settings that differ) and ``events``.

        ``events`` are the namespace's last 10, oldest first. See :mod:`workshop.k8s.tables` for the columns.
        """
        deployment = self._deployment(name)
        replicasets = [rs for rs in self._cluster.apps.list_namespaced_replica_set(self.namespace).items
                       if _owned_by(rs, deployment)]
        events = self._cluster.core.list_namespaced_event(self.namespace).items
        return {"pods": tables.pods_table(self._pods(deployment), name),
                "replicasets": tables.replicasets_table(replicasets),
                "events": tables.events_table(events)}

    # --- monitoring ----------------------------------------------------------------------------------

    def start_monitoring(self, *, rule_files: Sequence[Path] | None = None,
                         hold_overrides: Mapping[str, str] | None = None, timeout: float = 900.0) -> str:
        """Install or upgrade kube-prometheus-stack, apply what waited for its CRDs; return Prometheus' URL.

        ``hold_overrides`` ({alert name: duration}) re-applies the PrometheusRule with shorter holds, as on the
        local target. ``rule_files`` has no meaning here (rules are PrometheusRule objects) and is refused.
        """
        if rule_files is not None:
            raise ValueError("rule_files applies to the local target; on kubernetes pass hold_overrides")
        core = self._cluster.core
        helm.ensure_namespace(self._cluster.api_client, helm.NAMESPACE)
        helm.ensure_grafana_secret(core, helm.NAMESPACE)
        values = self.manifests_root / "monitoring" / "values.yaml"  # the file timings reads the scrape interval from
        helm.run_helm(helm.install_command(values=values, timeout_s=int(timeout)), timeout=timeout + 60)
        self.skipped = []
        self._apply(self._monitoring_objects())
        # The dashboards' ConfigMap (k8s/monitoring) in this namespace, for Grafana's sidecar: k8s/base brings
        # it with the wine service, but a learner may run only the chat service (notebook 07).
        self._apply(self._render("monitoring"))
        if hold_overrides:
            rule = prometheus_rule_manifest(self.namespace)
            rule["spec"] = prometheus_rules(dict(hold_overrides))
            apply(self._cluster.api_client, rule)
        if self.prometheus_forward is not None:
            self.prometheus_forward.close()
        # helm --wait covers the chart's Deployments, not the Prometheus StatefulSet its operator creates after.
        wait_for_endpoint(core, helm.NAMESPACE, helm.PROMETHEUS_SERVICE, helm.PROMETHEUS_PORT, timeout=timeout,
                          interval=self.poll_interval)
        self.prometheus_forward = PortForward(core, helm.NAMESPACE, helm.PROMETHEUS_SERVICE,
                                              helm.PROMETHEUS_PORT).start()
        return self.prometheus_forward.url

    def grafana(self, *, timeout: float = 120.0) -> GrafanaAccess:
        """Grafana of kube-prometheus-stack on a local URL, its login, and the dashboards it lists.

        The port-forward stays open until :meth:`teardown`. The workshop's dashboards (the titles of
        ``dashboards/*.json``) arrive through the chart's sidecar, which imports the ConfigMap deployed with the
        wine service within seconds, not at once: Grafana is asked until it lists them all, and after
        ``timeout`` :class:`KubernetesTargetError` names the ones still missing.
        """
        core = self._cluster.core
        deadline = time.monotonic() + timeout  # one deadline for the pod to be ready and the dashboards listed
        if self.grafana_forward is None or not self.grafana_forward.open:
            wait_for_endpoint(core, helm.NAMESPACE, helm.GRAFANA_SERVICE, helm.GRAFANA_PORT, timeout=timeout,
                              interval=self.poll_interval)
            self.grafana_forward = PortForward(core, helm.NAMESPACE, helm.GRAFANA_SERVICE, helm.GRAFANA_PORT).start()
        url = self.grafana_forward.url
        user, password = helm.grafana_credentials(core)
        wanted = [json.loads(text)["title"] for text in dashboard_files(project_root()).values()]
        listed: list[str] = []
        answer, missing = "not asked", wanted

        def lists_them_all() -> bool:
            nonlocal listed, answer, missing
            listed, answer = _grafana_dashboards(url, user, password)
            missing = [title for title in wanted if title not in listed]
            return not missing

        try:
            wait_for(lists_them_all, max(0.0, deadline - time.monotonic()), "Grafana to list the dashboards",
                     interval=self.poll_interval, retry_on=())
        except TimeoutError as error:
            raise KubernetesTargetError(
                f"Grafana ({url}, {answer}) does not list the dashboard(s) {', '.join(map(repr, missing))} "
                f"after {timeout:.0f} s; it lists {listed}. Its sidecar imports ConfigMaps labelled "
                f"grafana_dashboard=1 (deployed with the wine service, k8s/monitoring/grafana-dashboards.yaml): "
                f"is the wine service deployed? `kubectl -n {helm.NAMESPACE} logs deploy/{helm.GRAFANA_SERVICE} "
                "-c grafana-sc-dashboard` shows what it imported.") from error
        return GrafanaAccess(url, user, password, listed)

    def _monitoring_objects(self) -> list[manifests.Manifest]:
        """The ServiceMonitors and PrometheusRules of every service deployed in the namespace.

        Read from the manifests, not only from what this object skipped: the deploy may have run in another
        kernel (notebook 04) before monitoring is installed from this one (notebook 05).
        """
        objects = []
        for folder, deployment in SERVICES:
            try:
                self._cluster.apps.read_namespaced_deployment(deployment, self.namespace)
            except ApiException as error:
                if error.status == 404:
                    continue
                raise
            objects += [m for m in self._render(folder) if m["apiVersion"].startswith(MONITORING_GROUP)]
        return objects

    # --- load tests ----------------------------------------------------------------------------------

    def run_load_test(self, host: str | None = None, users: int = 10, spawn_rate: float = 5.0,
                      run_time_s: float = 20.0, results_dir: Path | str = "build/load_test", drift: bool = False,
                      step_load: bool = False, *, workers: int = 2, image: str = cluster_loadtest.IMAGE,
                      check: bool = True, **options: float) -> LoadTestResult:
        """Run the Locust Job against ``host`` as seen inside the namespace (Service ``wine`` by default).

        Same arguments and result as on the local target; ``options`` are ``think_time_s``, ``seed``,
        ``step_users``, ``step_seconds``, ``steps``, ``stop_timeout_s``. The HTML report stays in the pod. With
        ``build_images`` the Locust image is built from the project first if Docker does not have it.
        """
        host = host or IN_CLUSTER_WINE
        values = cluster_loadtest.settings(host, users, spawn_rate, run_time_s, workers, drift=drift,
                                           step_load=step_load, **options)
        self._ensure_image("locust", image)
        if self.load_image:
            images.load_image(image, self._cluster.context)
        return cluster_loadtest.run_cluster_load_test(
            self._cluster, self.namespace, host, results_dir, values, workers=workers, image=image,
            run_time_s=run_time_s, rendered=manifests.render(self.manifests_root / "load_tests"), check=check,
            interval=self.poll_interval)

    # --- teardown ------------------------------------------------------------------------------------

    def teardown(self, *, remove_monitoring: bool = False, wait: bool = True, timeout: float = 180.0) -> list[str]:
        """Close port-forwards and delete the target's namespace; returns the namespaces deleted.

        kube-prometheus-stack and its ``monitoring`` namespace serve every learner of the cluster, so they stay
        unless ``remove_monitoring`` (the last one out, or a laptop cluster of one's own) uninstalls the chart and
        deletes that namespace too. Idempotent: what is already gone is skipped, so a second call (or one in a
        fresh kernel) is harmless.
        """
        while self.deployments:
            self.deployments.pop().stop()
        self._retire_scrape_targets()
        for forward in (self.prometheus_forward, self.grafana_forward):
            if forward is not None:
                forward.close()
        self.prometheus_forward = self.grafana_forward = None
        deleted = []
        if remove_monitoring:
            if shutil.which("helm") is not None:  # without helm, nothing was installed with it from here
                helm.run_helm(helm.uninstall_command())
            if self._delete_namespace(helm.NAMESPACE):
                deleted.append(helm.NAMESPACE)
        if self._delete_namespace(self.namespace):
            deleted.append(self.namespace)
        if wait:
            self._wait_gone(deleted, timeout)
        return deleted

    def _retire_scrape_targets(self) -> None:
        """Scale the namespace's Deployments to zero, and wait until Prometheus has marked their series stale.

        Deleting the namespace deletes its ServiceMonitors, and Prometheus drops a removed scrape job without
        staleness markers: for five minutes every instant query (``up``, ``count by (version)``) would still
        find the deleted pods, and so would the next notebook's dashboards. Targets that leave a job that stays
        (their pods gone) are marked stale within two scrape intervals. Skipped where nothing scrapes the
        namespace (no ServiceMonitor, no Prometheus); after the wait, the teardown goes on regardless.
        """
        try:
            monitors = client.CustomObjectsApi(self._cluster.api_client).list_namespaced_custom_object(
                MONITORING_GROUP.rstrip("/"), "v1", self.namespace, "servicemonitors")["items"]
            deployments = self._cluster.apps.list_namespaced_deployment(self.namespace).items
        except ApiException:
            return  # no namespace, or no monitoring CRDs: nothing scraped it
        if not monitors or not deployments:
            return
        forward = self.prometheus_forward
        if forward is None:
            try:
                forward = PortForward(self._cluster.core, helm.NAMESPACE, helm.PROMETHEUS_SERVICE,
                                      helm.PROMETHEUS_PORT).start()
            except (PortForwardError, ApiException):
                return  # no Prometheus to scrape it
        try:
            for deployment in deployments:  # an HPA leaves a Deployment scaled to zero alone
                self._cluster.apps.patch_namespaced_deployment(
                    deployment.metadata.name, self.namespace, {"spec": {"replicas": 0}})
            series = f'up{{namespace="{self.namespace}"}}'

            def stale() -> bool:
                try:
                    return query(forward.url, series).empty
                except Exception:  # noqa: BLE001 - no answer to read (not reachable, not a Prometheus): do not wait
                    return True

            try:
                wait_for(stale, RETIRE_TIMEOUT_S, f"Prometheus to mark {series} stale", interval=self.poll_interval,
                         retry_on=())
            except TimeoutError:
                if self.progress:
                    print(f"Prometheus still lists {series} after {RETIRE_TIMEOUT_S:.0f} s; deleting the namespace "
                          "anyway (its series fade within five minutes)")
        finally:
            if forward is not self.prometheus_forward:
                forward.close()

    def _delete_namespace(self, namespace: str) -> bool:
        try:
            self._cluster.core.delete_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def _wait_gone(self, namespaces: list[str], timeout: float) -> None:
        """Namespaces stay Terminating while their objects go; a re-deploy into one would be refused."""
        deadline = time.monotonic() + timeout
        for namespace in namespaces:
            try:
                wait_for(lambda namespace=namespace: self._gone(namespace), max(0.0, deadline - time.monotonic()),
                         f"namespace {namespace} to be deleted", interval=1.0, retry_on=())
            except TimeoutError as error:
                raise KubernetesTargetError(f"Namespace {namespace} is still terminating after {timeout:.0f} s: "
                                            f"`kubectl get all -n {namespace}` shows what holds it.") from error

    def _gone(self, namespace: str) -> bool:
        """Whether the API server no longer has Namespace ``namespace`` (its 404); any other error is raised."""
        try:
            self._cluster.core.read_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False
