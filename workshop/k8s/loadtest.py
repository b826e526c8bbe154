"""The load test on the cluster: the Locust master Job and its workers, results read from the Job's log.

The master writes its CSV files into an emptyDir that disappears with the pod, so its container prints
them to its log after Locust exits, between ``----- BEGIN name -----`` / ``----- END name -----``
markers (see ``k8s/load_tests/master-job.yaml``), followed by Locust's exit code. The log is the one
channel every cluster keeps after a Job ends and the API serves without exec or volumes. The files are
written back to a local results folder and read by :func:`workshop.loadtest.load_results`, so notebook
06 shows the same tables and plots on both targets. The worker Deployment is deleted when the Job ends,
whatever happened: idle workers would otherwise hold CPU in a shared cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from workshop.k8s import diagnose, manifests
from workshop.k8s.apply import apply_all
from workshop.k8s.errors import ClusterLoadTestError
from workshop.loadtest import (
    CSV_PREFIX,
    LoadTestError,
    LoadTestResult,
    describe_failure,
    load_results,
    step_load_env,
)
from workshop.paths import project_root
from workshop.waiting import WaitTimeout, wait_for

JOB = "locust-master"
WORKERS = "locust-worker"
SETTINGS = "locust-settings"
IMAGE = "ml-serving-workshop/wine-locust:latest"
FILES = (f"{CSV_PREFIX}_stats.csv", f"{CSV_PREFIX}_failures.csv", f"{CSV_PREFIX}_stats_history.csv")
_BLOCK = re.compile(r"^----- BEGIN (?P<name>[\w.]+) -----\n(?P<body>.*?)^----- END (?P=name) -----$", re.M | re.S)
_EXIT = re.compile(r"^----- LOCUST EXIT CODE (?P<code>\d+) -----$", re.M)


def manifests_folder() -> Path:
    return project_root() / "k8s" / "load_tests"


def settings(host: str, users: int, spawn_rate: float, run_time_s: float, workers: int, *, drift: bool = False,
             step_load: bool = False, think_time_s: float = 1.0, seed: int = 42, step_users: int = 5,
             step_seconds: float = 10.0, steps: int = 4, stop_when_broken: bool = True,
             stop_timeout_s: float = 10.0) -> dict[str, str]:
    """The ``locust-settings`` ConfigMap data: Locust reads ``LOCUST_*`` variables as its options."""
    return {
        "LOCUST_HOST": host, "LOCUST_USERS": str(users), "LOCUST_SPAWN_RATE": str(spawn_rate),
        "LOCUST_RUN_TIME": f"{max(1, round(run_time_s))}s", "LOCUST_STOP_TIMEOUT": f"{max(1, round(stop_timeout_s))}s",
        "LOCUST_EXPECT_WORKERS": str(workers), "LOCUST_THINK_TIME": str(think_time_s), "LOCUST_SEED": str(seed),
        "LOCUST_DRIFT": "true" if drift else "false",
        **step_load_env(step_load, step_users, step_seconds, steps, stop_when_broken),
    }


def prepare(rendered: list[manifests.Manifest], namespace: str, values: Mapping[str, str], *, workers: int,
            image: str = IMAGE) -> list[manifests.Manifest]:
    """The rendered load_tests manifests in ``namespace`` with these settings, worker count and image."""
    objects = manifests.in_namespace(rendered, namespace)
    config = manifests.find(objects, "ConfigMap", SETTINGS)
    config["data"] = {**config.get("data", {}), **values}
    manifests.find(objects, "Deployment", WORKERS)["spec"]["replicas"] = workers
    for kind, name in (("Job", JOB), ("Deployment", WORKERS)):
        for container in manifests.containers(manifests.find(objects, kind, name)):
            container["image"] = image
    return objects


def parse_log(log: str, folder: Path) -> int:
    """Write the CSV blocks of a master log into ``folder``; return Locust's exit code."""
    blocks = {m["name"]: m["body"] for m in _BLOCK.finditer(log) if m["body"].strip()}
    missing = [name for name in FILES if name not in blocks]
    exit_code = _EXIT.search(log)
    if missing or exit_code is None:
        tail = "\n".join(log.splitlines()[-30:])
        raise ClusterLoadTestError(
            f"The Locust master's log has no {', '.join(missing) or 'exit code'}: Locust did not run to the end. "
            f"Log tail:\n{tail}")
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in blocks.items():
        (folder / name).write_text(body)
    return int(exit_code["code"])


def delete_previous_job(batch: client.BatchV1Api, namespace: str, *, timeout: float = 60.0) -> None:
    """A Job's pod template cannot change: remove the last run's Job (and its pods) before the next one."""
    try:
        batch.delete_namespaced_job(JOB, namespace, propagation_policy="Foreground")
    except ApiException as error:
        if error.status == 404:
            return
        raise

    def gone() -> bool:
        try:
            batch.read_namespaced_job(JOB, namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    try:
        wait_for(gone, timeout, f"the previous Job {JOB} to be deleted", interval=0.5, retry_on=())
    except WaitTimeout:
        raise ClusterLoadTestError(
            f"The previous Job {JOB} in {namespace} was not deleted within {timeout:.0f} s") from None


def wait_for_job(cluster, namespace: str, *, timeout: float, interval: float = 2.0) -> client.V1Job:
    """Until the Job has succeeded or failed (a failed load test still has results to read); a pod that cannot
    start (a missing image, a crash loop) ends the wait at once, with its story."""

    def finished() -> client.V1Job | None:
        job = cluster.batch.read_namespaced_job(JOB, namespace)
        status = job.status or client.V1JobStatus()
        ended = {c.type for c in status.conditions or [] if c.status == "True"} & {"Complete", "Failed"}
        if ended or status.succeeded or status.failed:
            return job
        pods = diagnose.pods_for(cluster.core, namespace, {"job-name": JOB})
        stuck = [pod for pod in pods if diagnose.FATAL.intersection(diagnose.pod_reasons(pod)[0])]
        if stuck:
            raise _job_error(cluster, namespace, "cannot start", stuck)
        return None

    try:
        return wait_for(finished, timeout, f"the Locust Job {JOB}", interval, retry_on=())
    except WaitTimeout:
        pods = diagnose.pods_for(cluster.core, namespace, {"job-name": JOB})
        raise _job_error(cluster, namespace, f"did not finish within {timeout:.0f} s", pods) from None


def _job_error(cluster, namespace: str, what: str, pods: list[client.V1Pod]) -> ClusterLoadTestError:
    """The Job's failure as kubectl would tell it: each pod's reasons, events and log, then what to do."""
    reports = [diagnose.report(cluster.core, namespace, pod) for pod in pods]
    reasons = [reason for report in reports for reason in report.reasons]
    return ClusterLoadTestError("\n".join([
        f"The Locust Job {JOB} in {namespace} {what}.", *(r.text() for r in reports),
        *(f"What to do: {hint}" for hint in diagnose.hints(reasons))]))


def master_log(cluster, namespace: str) -> str:
    pods = diagnose.pods_for(cluster.core, namespace, {"job-name": JOB})
    if not pods:
        raise ClusterLoadTestError(f"The Job {JOB} in {namespace} has no pod left to read the results from.")
    pods.sort(key=lambda p: str(p.metadata.creation_timestamp or ""))
    return cluster.core.read_namespaced_pod_log(pods[-1].metadata.name, namespace) or ""


def delete_workers(cluster, namespace: str) -> None:
    """Remove the workers and the master's Service; absent ones are fine."""
    for delete, name in ((cluster.apps.delete_namespaced_deployment, WORKERS),
                         (cluster.core.delete_namespaced_service, JOB)):
        try:
            delete(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise


def run_cluster_load_test(
    cluster, namespace: str, host: str, results_dir: Path | str, values: Mapping[str, str], *, workers: int = 2,
    image: str = IMAGE, run_time_s: float = 20.0, rendered: list[manifests.Manifest] | None = None,
    startup_s: float = 300.0, check: bool = True, interval: float = 2.0,
) -> LoadTestResult:
    """Apply the load test, wait for the master Job, read its results, delete the workers."""
    objects = prepare(rendered if rendered is not None else manifests.render(manifests_folder()), namespace, values,
                      workers=workers, image=image)
    folder = Path(results_dir).resolve()
    for stale in folder.glob(f"{CSV_PREFIX}_*.csv"):
        stale.unlink()
    delete_previous_job(cluster.batch, namespace)
    try:
        apply_all(cluster.api_client, objects, skip_missing_monitoring=False)
        wait_for_job(cluster, namespace, timeout=run_time_s + startup_s, interval=interval)
        log = master_log(cluster, namespace)
    finally:
        delete_workers(cluster, namespace)
    returncode = parse_log(log, folder)
    (folder / "locust.log").write_text(log)
    try:
        result = load_results(folder, returncode, "\n".join(log.splitlines()[-40:]))
    except LoadTestError as error:
        raise ClusterLoadTestError(str(error)) from None
    if check and (returncode != 0 or result.total_failures):
        raise LoadTestError(describe_failure(host, result), result)
    return result
