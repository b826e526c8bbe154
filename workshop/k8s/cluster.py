"""The connection to a cluster: the official client configured from a kubeconfig, checked to answer.

A learner without a cluster should hear so in one sentence when the notebook starts, not read a
urllib3 traceback three cells later: :func:`connect` loads the kubeconfig and asks the API server for
its version with a short timeout, and turns every failure into :class:`ClusterUnavailableError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from workshop.k8s.errors import ClusterUnavailableError

FIELD_MANAGER = "ml-serving-workshop"
SETUP_HINT = (
    "Start a local cluster (`minikube start` or `kind create cluster`) or point KUBECONFIG at one, "
    "or run the workshop with target='local'."
)


@dataclass
class Cluster:
    """An API client and the typed APIs the target uses, plus which kubeconfig context they came from."""

    api_client: client.ApiClient
    context: str = ""
    server: str = ""
    core: client.CoreV1Api = field(init=False, repr=False)
    apps: client.AppsV1Api = field(init=False, repr=False)
    batch: client.BatchV1Api = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    def version(self, timeout: float = 5.0) -> str:
        """The API server's version (``v1.30.0``); raises ClusterUnavailableError when it does not answer."""
        try:
            info = client.VersionApi(self.api_client).get_code(_request_timeout=timeout)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ClusterUnavailableError(
                f"The Kubernetes API server at {self.server} (context {self.context!r}) does not answer "
                f"({type(error).__name__}). {SETUP_HINT}"
            ) from None
        except ApiException as error:
            raise ClusterUnavailableError(
                f"The Kubernetes API server at {self.server} refused the version request: HTTP {error.status} "
                f"{error.reason}. Check your credentials (`kubectl get ns` should work). {SETUP_HINT}"
            ) from None
        return info.git_version


def kubeconfig_path(kubeconfig: str | Path | None = None) -> Path:
    """The kubeconfig the client would read: the argument, else the first of $KUBECONFIG, else ~/.kube/config."""
    if kubeconfig is not None:
        return Path(kubeconfig).expanduser()
    from_env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(from_env or "~/.kube/config").expanduser()


def connect(kubeconfig: str | Path | None = None, context: str | None = None, *, timeout: float = 5.0,
            check: bool = True) -> Cluster:
    """A :class:`Cluster` from the kubeconfig (or the in-cluster service account), reachable unless ``check=False``."""
    path = kubeconfig_path(kubeconfig)
    configuration = client.Configuration()
    try:
        if path.is_file():
            config.load_kube_config(config_file=str(path), context=context, client_configuration=configuration,
                                    persist_config=False)
            _, active = config.list_kube_config_contexts(config_file=str(path))
            current = context or (active or {}).get("name", "")
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
            current = "in-cluster"
        else:
            raise ClusterUnavailableError(f"No kubeconfig at {path} and not running inside a cluster. {SETUP_HINT}")
    except ConfigException as error:
        raise ClusterUnavailableError(f"The kubeconfig {path} cannot be used: {error}. {SETUP_HINT}") from None
    cluster = Cluster(client.ApiClient(configuration), context=current, server=configuration.host)
    if check:
        cluster.version(timeout)
    return cluster
