"""A Deployment's pods, ReplicaSets and the namespace's events as tables, the way ``kubectl get`` shows them.

Notebook 04 shows these before and after each step (a deploy, a scale, a rolling update, one that fails), so
a learner sees the ReplicaSets trade pods and the events explain why. Each function takes the objects the
typed client returns and gives a pandas frame with fixed columns, empty or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import pandas as pd
from kubernetes import client

POD_COLUMNS = ["pod", "ready", "status", "restarts", "replicaset"]
REPLICASET_COLUMNS = ["replicaset", "desired", "ready", "revision", "image"]
EVENT_COLUMNS = ["time", "object", "type", "reason", "message", "count"]
REVISION = "deployment.kubernetes.io/revision"
SETTING_PREFIXES = ("WINE_", "LLM_")  # the services' own settings, the ones a rollout changes


def pod_status(pod: client.V1Pod) -> str:
    """kubectl's STATUS column: Terminating, a container's waiting or terminated reason, else the phase."""
    if pod.metadata.deletion_timestamp is not None:
        return "Terminating"
    status = pod.status or client.V1PodStatus()
    for container in status.container_statuses or []:
        state = container.state or client.V1ContainerState()
        if state.waiting and state.waiting.reason:
            return state.waiting.reason
        if state.terminated and state.terminated.reason:
            return state.terminated.reason
    return status.phase or "Pending"


def pod_replicaset(pod: client.V1Pod, deployment: str) -> str:
    """The ReplicaSet that owns the pod (ownerReferences), else ``<deployment>-<pod-template-hash>``."""
    for owner in pod.metadata.owner_references or []:
        if owner.kind == "ReplicaSet":
            return owner.name
    template_hash = (pod.metadata.labels or {}).get("pod-template-hash")
    return f"{deployment}-{template_hash}" if template_hash else ""


def pods_table(pods: Iterable[client.V1Pod], deployment: str) -> pd.DataFrame:
    rows = []
    for pod in pods:
        statuses = (pod.status.container_statuses if pod.status else None) or []
        containers = len(pod.spec.containers) if pod.spec and pod.spec.containers else len(statuses)
        rows.append({"pod": pod.metadata.name, "ready": f"{sum(bool(c.ready) for c in statuses)}/{containers}",
                     "status": pod_status(pod), "restarts": sum(c.restart_count or 0 for c in statuses),
                     "replicaset": pod_replicaset(pod, deployment)})
    return pd.DataFrame(sorted(rows, key=lambda row: row["pod"]), columns=POD_COLUMNS)


def _settings(replicaset: client.V1ReplicaSet) -> dict[str, str]:
    """The first container's literal ``WINE_``/``LLM_`` variables."""
    containers = replicaset.spec.template.spec.containers if replicaset.spec and replicaset.spec.template else []
    env = (containers[0].env if containers else None) or []
    return {e.name: e.value for e in env if e.name.startswith(SETTING_PREFIXES) and e.value is not None}


def _revision(replicaset: client.V1ReplicaSet) -> int | None:
    value = (replicaset.metadata.annotations or {}).get(REVISION)
    return int(value) if value and value.isdigit() else None


def replicasets_table(replicasets: Sequence[client.V1ReplicaSet]) -> pd.DataFrame:
    """One row per ReplicaSet, oldest revision first, with the settings that differ between them as columns."""
    ordered = sorted(replicasets, key=lambda rs: (_revision(rs) or 0, rs.metadata.name))
    settings = [_settings(rs) for rs in ordered]
    names = list(dict.fromkeys(name for values in settings for name in values))
    differing = [name for name in names if len({values.get(name) for values in settings}) > 1]
    rows = []
    for replicaset, values in zip(ordered, settings, strict=True):
        containers = replicaset.spec.template.spec.containers if replicaset.spec.template else []
        rows.append({"replicaset": replicaset.metadata.name, "desired": replicaset.spec.replicas or 0,
                     "ready": (replicaset.status.ready_replicas if replicaset.status else None) or 0,
                     "revision": _revision(replicaset), "image": containers[0].image if containers else "",
                     **{name: values.get(name) for name in differing}})
    return pd.DataFrame(rows, columns=REPLICASET_COLUMNS + differing)


def event_time(event: client.CoreV1Event) -> datetime | None:
    return event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp


def events_table(events: Iterable[client.CoreV1Event], limit: int = 10) -> pd.DataFrame:
    """The ``limit`` latest events, oldest first: which object, Normal or Warning, why, how often."""
    latest = sorted(events, key=lambda e: str(event_time(e) or ""))[-limit:]
    rows = [{"time": event_time(e), "object": f"{e.involved_object.kind}/{e.involved_object.name}",
             "type": e.type, "reason": e.reason, "message": e.message, "count": e.count or 1} for e in latest]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)
