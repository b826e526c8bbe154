"""Waiting for a Deployment like ``kubectl rollout status``, with progress lines and a useful failure.

The rules are kubectl's (``DeploymentStatusViewer``): the controller must have seen the latest spec
(observedGeneration), every replica must run the new template (updatedReplicas), old ones must be gone
(status.replicas), and the new ones available. A pod stuck in a state that will not cure itself
(ImagePullBackOff, CrashLoopBackOff...) ends the wait at once instead of at the timeout, with the
pods' reasons, events, log tails and a hint.

Progress is one plain line on stdout each time the rollout's state text changes, and one when it is done,
as ``kubectl rollout status`` prints it: no carriage returns redrawing a bar, so an executed notebook keeps a
readable record of what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client

from workshop.k8s import diagnose
from workshop.k8s.errors import RolloutError
from workshop.waiting import WaitTimeout, wait_for


def rollout_state(deployment: client.V1Deployment) -> tuple[bool, str]:
    """(done, what is still missing) for one read of the Deployment."""
    spec_replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status or client.V1DeploymentStatus()
    if (deployment.metadata.generation or 0) > (status.observed_generation or 0):
        return False, "waiting for the deployment spec update to be observed"
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return False, f"progress deadline exceeded: {condition.message}"
    updated = status.updated_replicas or 0
    available = status.available_replicas or 0
    if updated < spec_replicas:
        return False, f"{updated} of {spec_replicas} new replicas have been updated"
    if (status.replicas or 0) > updated:
        return False, f"{(status.replicas or 0) - updated} old replicas are pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replicas are available"
    return True, f"{available} of {spec_replicas} replicas available"


def wait_for_rollout(
    cluster, namespace: str, name: str, *, timeout: float = 300.0, interval: float = 1.0, progress: bool = True,
    fail_fast: bool = True, clock: Callable[[], float] = time.monotonic,
) -> client.V1Deployment:
    """Wait until Deployment ``name`` is rolled out; raise :class:`RolloutError` with the pods' story otherwise.

    Each poll reads the Deployment and (with ``fail_fast``) its pods; events and logs are read only to
    explain a failure, so waiting costs two requests a poll.
    """
    shown = last = ""
    latest: client.V1Deployment | None = None

    def say(line: str) -> None:
        if progress:
            print(f"deployment/{name}: {line}", flush=True)

    def rolled_out() -> client.V1Deployment | None:
        nonlocal shown, last, latest
        latest = cluster.apps.read_namespaced_deployment(name, namespace)
        done, last = rollout_state(latest)
        if last != shown:
            say(last)
            shown = last
        if done:
            say("successfully rolled out")
            return latest
        if fail_fast:
            unready = _unready(cluster, namespace, latest)
            if any(diagnose.FATAL.intersection(diagnose.pod_reasons(pod)[0]) for pod in unready):
                raise _error(cluster, namespace, name, f"failed: {last}", unready)
        return None

    try:
        return wait_for(rolled_out, timeout, f"deployment/{name}", interval, retry_on=(), clock=clock)
    except WaitTimeout:
        raise _error(cluster, namespace, name, f"did not roll out within {timeout:.0f} s ({last})",
                     _unready(cluster, namespace, latest)) from None


def _unready(cluster, namespace: str, deployment: client.V1Deployment) -> list[client.V1Pod]:
    pods = diagnose.pods_for(cluster.core, namespace, deployment.spec.selector.match_labels or {})
    return [p for p in pods if not (p.status and p.status.container_statuses)
            or not all(c.ready for c in p.status.container_statuses)]


def _error(cluster, namespace: str, name: str, what: str, pods: list[client.V1Pod]) -> RolloutError:
    reports = [diagnose.report(cluster.core, namespace, pod) for pod in pods]
    reasons = [reason for r in reports for reason in r.reasons]
    lines = [f"Deployment {name} in namespace {namespace} {what}."]
    lines += [r.text() for r in reports]
    refusals = diagnose.replicaset_events(cluster.core, namespace, name)
    if refusals:
        lines.append(f"ReplicaSet events of {name}:")
        lines += [f"  {event}" for event in refusals]
        reasons += ["FailedCreate"] if any("FailedCreate" in event for event in refusals) else []
    if not reports and not refusals:
        lines.append(f"No pods were created: `kubectl -n {namespace} describe deployment {name}` shows why.")
    found = diagnose.hints(reasons)
    if found:
        lines.append("What to do:")
        lines += [f"  - {hint}" for hint in found]
    return RolloutError("\n".join(lines), deployment=name, reasons=list(dict.fromkeys(reasons)),
                        pods=[r.name for r in reports])
