"""Typed errors of the kubernetes target: each message says what went wrong and what to do about it.

They all derive from :class:`KubernetesTargetError`, so a notebook cell can catch one type and show the
message; the attributes carry the details a test or a caller needs without parsing text. Where a notebook
catches an error on either target, the kubernetes one derives from its type in :mod:`workshop.exceptions`
(:class:`RolloutError` is a :class:`~workshop.exceptions.RolloutFailedError`).
"""

from __future__ import annotations

from workshop.exceptions import RolloutFailedError  # the type notebooks catch on either target


class KubernetesTargetError(RuntimeError):
    """Something on the kubernetes target failed; the message says what to do."""


class ClusterUnavailableError(KubernetesTargetError):
    """No kubeconfig, no current context, or the API server does not answer."""


class ToolMissingError(KubernetesTargetError):
    """A command-line tool the step needs (kubectl, helm, minikube, kind) is not on PATH."""


class ManifestError(KubernetesTargetError):
    """Manifests could not be rendered or applied (missing folder, kustomize error, API refusal)."""


class ImageLoadError(KubernetesTargetError):
    """The image could not be put into the cluster (no minikube/kind, or their load command failed)."""


class RolloutError(KubernetesTargetError, RolloutFailedError):
    """A Deployment did not become available; ``pods`` holds what each pod reported."""

    def __init__(self, message: str, *, deployment: str, reasons: list[str] | None = None,
                 pods: list[str] | None = None) -> None:
        super().__init__(message)
        self.deployment = deployment
        self.reasons = reasons or []
        self.pods = pods or []


class HelmError(KubernetesTargetError):
    """``helm`` failed; the message carries its command line and output."""


class PortForwardError(KubernetesTargetError):
    """No ready pod behind a Service, or its port cannot be resolved."""


class ClusterLoadTestError(KubernetesTargetError):
    """The Locust Job failed to run or its results could not be read from its log."""
