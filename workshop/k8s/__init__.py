"""The workshop on a Kubernetes cluster: the ``kubernetes`` target and the pieces it is built from."""

from workshop.k8s.errors import (
    ClusterLoadTestError,
    ClusterUnavailableError,
    HelmError,
    ImageLoadError,
    KubernetesTargetError,
    ManifestError,
    PortForwardError,
    RolloutError,
    ToolMissingError,
)

__all__ = [
    "ClusterLoadTestError", "ClusterUnavailableError", "HelmError", "ImageLoadError", "KubernetesTargetError",
    "ManifestError", "PortForwardError", "RolloutError", "ToolMissingError",
]
