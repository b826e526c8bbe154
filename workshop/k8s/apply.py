"""Server-side apply: the API server merges our fields and records us as their field manager.

Server-side apply (``PATCH`` with ``application/apply-patch+yaml``) is what ``kubectl apply
--server-side`` does: it creates or updates in one request, needs no last-applied annotation, and a
re-run of a notebook cell is a no-op. ``force=true`` takes over fields another manager (an earlier
``kubectl apply``) set, which is what a learner re-running the workshop wants.

The typed client has no apply call for arbitrary kinds, so the request is built from the object's
apiVersion and kind and sent through the client's own ApiClient (same auth, TLS and proxies).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from workshop.k8s.cluster import FIELD_MANAGER
from workshop.k8s.errors import ManifestError
from workshop.k8s.manifests import Manifest, api_path

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# Objects whose CRDs come with kube-prometheus-stack: skipped (and reported) while it is not installed.
MONITORING_GROUP = "monitoring.coreos.com/"


def request(api_client: client.ApiClient, method: str, path: str, *, body: Any = None,
            query: list[tuple[str, str]] | None = None, content_type: str = "application/json",
            timeout: float = 30.0) -> dict[str, Any]:
    """One REST call through the client's ApiClient; the decoded JSON answer (ApiException on an error status)."""
    headers = {"Accept": "application/json", "Content-Type": content_type}
    method, url, headers, body, _ = api_client.param_serialize(
        method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response = api_client.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
    response.read()
    if not 200 <= response.status < 300:  # call_api hands back error statuses; the typed calls raise them
        raise ApiException(http_resp=response)
    return json.loads(response.data or b"{}")


def apply(api_client: client.ApiClient, manifest: Manifest, *, field_manager: str = FIELD_MANAGER,
          force: bool = True) -> dict[str, Any]:
    """Server-side apply one object; returns the object as the server stored it."""
    query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
    try:
        return request(api_client, "PATCH", api_path(manifest), body=manifest, query=query,
                       content_type=APPLY_CONTENT_TYPE)
    except ApiException as error:
        raise ManifestError(
            f"The API server refused {manifest['kind']} {manifest['metadata'].get('name')}: HTTP {error.status} "
            f"{_message(error)}"
        ) from error


def apply_all(api_client: client.ApiClient, manifests: Iterable[Manifest], *, field_manager: str = FIELD_MANAGER,
              skip_missing_monitoring: bool = True) -> tuple[list[dict[str, Any]], list[Manifest]]:
    """Apply in order (Namespaces first); returns (applied, skipped).

    With ``skip_missing_monitoring``, ServiceMonitor/PrometheusRule objects answered with 404 (their CRDs
    arrive with kube-prometheus-stack) are returned as skipped instead of failing the deployment, so the
    service can be deployed before monitoring is installed.
    """
    ordered = sorted(manifests, key=lambda m: m.get("kind") != "Namespace")
    applied, skipped = [], []
    for manifest in ordered:
        try:
            applied.append(apply(api_client, manifest, field_manager=field_manager))
        except ManifestError as error:
            cause = error.__cause__
            monitoring = manifest.get("apiVersion", "").startswith(MONITORING_GROUP)
            if skip_missing_monitoring and monitoring and isinstance(cause, ApiException) and cause.status == 404:
                skipped.append(manifest)
                continue
            raise
    return applied, skipped


def _message(error: ApiException) -> str:
    try:
        return json.loads(error.body).get("message", error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)
