"""Stand-ins for the controllers of kube-controller-manager the workshop relies on.

- Deployment: one ReplicaSet per pod template (``pod-template-hash``), a rolling update that follows
  ``maxSurge``/``maxUnavailable`` (old pods go only while enough pods are ready), revisions, and the
  status ``kubectl rollout status`` reads (observedGeneration, replicas, updated, ready, available);
- ReplicaSet: creates and deletes pods to match its replicas (not-ready pods go first);
- Job: one pod (``backoffLimit: 0``), its end as the Job's Complete or Failed condition;
- HorizontalPodAutoscaler: keeps the Deployment's replicas within minReplicas..maxReplicas, and leaves a
  Deployment scaled to zero alone (ScalingActive false, as kube-controller-manager does). There is no
  metrics-server here, so it never scales on CPU; a real one would also scale down to the minimum
  when idle;
- garbage collection: ReplicaSets and pods whose owner is gone are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

REVISION = "deployment.kubernetes.io/revision"


def _plain(api_client: client.ApiClient, obj: Any) -> dict[str, Any]:
    return api_client.sanitize_for_serialization(obj)


def _count(value: Any, replicas: int, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.endswith("%"):
        return int(replicas * int(value[:-1]) / 100)
    return int(value)


class Controllers:
    def __init__(self, api_client: client.ApiClient, node: Any) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.node = node  # tests.standin.node.Node: which pods are ready

    def sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces().items
        # An object is acted on once the API server has given it its uid (owners are matched by it).
        replicasets = [r for r in self.apps.list_replica_set_for_all_namespaces().items if r.metadata.uid]
        deployments = [d for d in self.apps.list_deployment_for_all_namespaces().items if d.metadata.uid]
        self._collect_garbage(pods, replicasets, deployments)
        for deployment in deployments:
            self._deployment(deployment, [rs for rs in replicasets if self._owned(rs, "Deployment", deployment)],
                             pods)
        for replicaset in [r for r in self.apps.list_replica_set_for_all_namespaces().items if r.metadata.uid]:
            self._replicaset(replicaset, [p for p in pods if self._owned(p, "ReplicaSet", replicaset)])
        for job in [j for j in self.batch.list_job_for_all_namespaces().items if j.metadata.uid]:
            self._job(job, [p for p in pods if self._owned(p, "Job", job)])

    def sync_autoscalers(self) -> None:
        for hpa in self.autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces().items:
            target = hpa.spec.scale_target_ref
            if target.kind != "Deployment":
                continue
            try:
                deployment = self.apps.read_namespaced_deployment(target.name, hpa.metadata.namespace)
            except ApiException:
                continue
            current = deployment.spec.replicas if deployment.spec.replicas is not None else 1
            if current == 0:
                continue  # as the real one: a target scaled to zero by hand disables the autoscaler
            wanted = min(max(current, hpa.spec.min_replicas or 1), hpa.spec.max_replicas)
            if wanted != current:
                self.apps.patch_namespaced_deployment_scale(target.name, hpa.metadata.namespace,
                                                            {"spec": {"replicas": wanted}})
            self.autoscaling.patch_namespaced_horizontal_pod_autoscaler_status(
                hpa.metadata.name, hpa.metadata.namespace,
                {"status": {"currentReplicas": current, "desiredReplicas": wanted}})

    @staticmethod
    def _owned(obj: Any, kind: str, owner: Any) -> bool:
        """Owned by this very object: a new Job of the same name does not own the last one's pod."""
        if obj.metadata.namespace != owner.metadata.namespace:
            return False
        return any(ref.kind == kind and ref.name == owner.metadata.name and ref.uid == owner.metadata.uid
                   for ref in obj.metadata.owner_references or [])

    def _ready(self, pod: Any) -> bool:
        return self.node.ready(pod.metadata.namespace, pod.metadata.name)

    # --- Deployments ---------------------------------------------------------------------------------

    def _deployment(self, deployment: Any, replicasets: list[Any], pods: list[Any]) -> None:
        namespace, name = deployment.metadata.namespace, deployment.metadata.name
        generation = deployment.metadata.generation or 1
        desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        template = _plain(self.api, deployment.spec.template)
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        revisions = [int((rs.metadata.annotations or {}).get(REVISION, "0")) for rs in replicasets]
        new = next((rs for rs in replicasets if (rs.metadata.labels or {}).get("pod-template-hash") == digest), None)
        if new is None:
            new = self._create_replicaset(deployment, template, digest, max(revisions, default=0) + 1)
            replicasets.append(new)
        elif int((new.metadata.annotations or {}).get(REVISION, "0")) < max(revisions, default=0):
            self.apps.patch_namespaced_replica_set(new.metadata.name, namespace, {"metadata": {"annotations": {
                REVISION: str(max(revisions) + 1)}}})  # rolling back to a template makes it the latest revision
        old = [rs for rs in replicasets if rs.metadata.name != new.metadata.name]

        def pods_of(rs: Any) -> list[Any]:
            return [p for p in pods if self._owned(p, "ReplicaSet", rs)]

        strategy = deployment.spec.strategy.rolling_update if deployment.spec.strategy else None
        surge = _count(strategy.max_surge if strategy else None, desired, 1)
        unavailable = _count(strategy.max_unavailable if strategy else None, desired, 0)
        new_pods, old_pods = pods_of(new), [p for rs in old for p in pods_of(rs)]
        ready_new = sum(map(self._ready, new_pods))
        ready_old = sum(map(self._ready, old_pods))
        old_scale = sum(rs.spec.replicas or 0 for rs in old)
        new_scale = desired if not old_scale else max(new.spec.replicas or 0, min(desired, desired + surge - old_scale))
        self._scale(new, new_scale)
        removable = ready_new + ready_old - (desired - unavailable)
        for rs in old:  # not-ready old pods may go at once; ready ones only while enough others are ready
            rs_pods = pods_of(rs)
            unready = sum(1 for p in rs_pods if not self._ready(p))
            target = max(0, (rs.spec.replicas or 0) - unready)
            cut = min(target, max(0, removable))
            removable -= cut
            self._scale(rs, target - cut)
        total = len(new_pods) + len(old_pods)
        status = {"observedGeneration": generation, "replicas": total, "updatedReplicas": len(new_pods),
                  "readyReplicas": ready_new + ready_old, "availableReplicas": ready_new + ready_old,
                  "unavailableReplicas": max(0, desired - ready_new - ready_old),
                  "conditions": [{"type": "Available",
                                  "status": "True" if ready_new + ready_old >= desired - unavailable else "False"},
                                 {"type": "Progressing", "status": "True",
                                  "reason": "NewReplicaSetAvailable" if ready_new >= desired and not old_pods
                                  else "ReplicaSetUpdated"}]}
        current = _plain(self.api, deployment.status) if deployment.status else {}
        if any(current.get(k) != v for k, v in status.items() if k != "conditions") \
                or [c.get("reason") for c in current.get("conditions") or []] != \
                [c.get("reason") for c in status["conditions"]]:
            self.apps.patch_namespaced_deployment_status(name, namespace, {"status": status})

    def _create_replicaset(self, deployment: Any, template: dict[str, Any], digest: str, revision: int) -> Any:
        labels = {**(template.get("metadata", {}).get("labels") or {}), "pod-template-hash": digest}
        template = {**template, "metadata": {**template.get("metadata", {}), "labels": labels}}
        body = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"{deployment.metadata.name}-{digest}", "namespace": deployment.metadata.namespace,
                             "labels": labels, "annotations": {REVISION: str(revision)},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                  "name": deployment.metadata.name, "uid": deployment.metadata.uid,
                                                  "controller": True}]},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": template}}
        return self.apps.create_namespaced_replica_set(deployment.metadata.namespace, body)

    def _scale(self, replicaset: Any, replicas: int) -> None:
        if (replicaset.spec.replicas or 0) != replicas:
            self.apps.patch_namespaced_replica_set(replicaset.metadata.name, replicaset.metadata.namespace,
                                                   {"spec": {"replicas": replicas}})
            replicaset.spec.replicas = replicas

    # --- ReplicaSets and Jobs ------------------------------------------------------------------------

    def _replicaset(self, replicaset: Any, pods: list[Any]) -> None:
        wanted = replicaset.spec.replicas or 0
        for _ in range(wanted - len(pods)):
            self._create_pod(replicaset, "ReplicaSet", _plain(self.api, replicaset.spec.template),
                             f"{replicaset.metadata.name}-{secrets.token_hex(3)[:5]}")
        if len(pods) > wanted:
            order = sorted(pods, key=lambda p: (self._ready(p), str(p.metadata.creation_timestamp or "")))
            for pod in order[:len(pods) - wanted]:
                with contextlib.suppress(ApiException):
                    self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
        ready = sum(map(self._ready, pods))
        status = {"replicas": min(len(pods), max(wanted, len(pods))), "readyReplicas": ready,
                  "availableReplicas": ready}
        current = _plain(self.api, replicaset.status) if replicaset.status else {}
        if any(current.get(k) != v for k, v in status.items()):
            self.apps.patch_namespaced_replica_set_status(replicaset.metadata.name, replicaset.metadata.namespace,
                                                          {"status": status})

    def _job(self, job: Any, pods: list[Any]) -> None:
        status = job.status or client.V1JobStatus()
        if status.succeeded or status.failed:
            return
        if not pods:
            template = _plain(self.api, job.spec.template)
            labels = {**(template.get("metadata", {}).get("labels") or {}), "job-name": job.metadata.name}
            template["metadata"] = {**template.get("metadata", {}), "labels": labels}
            self._create_pod(job, "Job", template, f"{job.metadata.name}-{secrets.token_hex(3)[:5]}")
            self.batch.patch_namespaced_job_status(job.metadata.name, job.metadata.namespace,
                                                   {"status": {"active": 1}})
            return
        phase = pods[0].status.phase if pods[0].status else None
        if phase in ("Succeeded", "Failed"):
            done = {"succeeded": 1} if phase == "Succeeded" else {"failed": 1}
            condition = "Complete" if phase == "Succeeded" else "Failed"
            self.batch.patch_namespaced_job_status(job.metadata.name, job.metadata.namespace, {"status": {
                **done, "active": 0, "conditions": [{"type": condition, "status": "True"}]}})

    def _create_pod(self, owner: Any, kind: str, template: dict[str, Any], name: str) -> None:
        api_version = "batch/v1" if kind == "Job" else "apps/v1"
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {**template.get("metadata", {}), "name": name, "namespace": owner.metadata.namespace,
                             "ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": owner.metadata.name,
                                                  "uid": owner.metadata.uid, "controller": True}]},
                "spec": template["spec"], "status": {"phase": "Pending"}}
        self.core.create_namespaced_pod(owner.metadata.namespace, body)

    # --- garbage collection --------------------------------------------------------------------------

    def _collect_garbage(self, pods: list[Any], replicasets: list[Any], deployments: list[Any]) -> None:
        jobs = [j for j in self.batch.list_job_for_all_namespaces().items if j.metadata.uid]
        owners = {d.metadata.uid for d in deployments} | {r.metadata.uid for r in replicasets}
        owners |= {j.metadata.uid for j in jobs}
        for obj, delete in [*((r, self.apps.delete_namespaced_replica_set) for r in replicasets),
                            *((p, self.core.delete_namespaced_pod) for p in pods)]:
            refs = obj.metadata.owner_references or []
            if refs and not any(ref.uid in owners for ref in refs):
                with contextlib.suppress(ApiException):
                    delete(obj.metadata.name, obj.metadata.namespace)
