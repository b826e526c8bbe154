"""Getting a locally built image into a laptop cluster with the cluster tool's own command.

minikube and kind run their own container runtime, which cannot see the host's Docker images and (with
imagePullPolicy IfNotPresent and no registry) must be given them: ``minikube image load IMAGE`` or
``kind load docker-image IMAGE``. Which one applies is read from the kubeconfig context name, the way
both tools name their contexts (``minikube`` or the profile name; ``kind-<cluster>``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass

from workshop.k8s.errors import ImageLoadError, ToolMissingError

REMOTE_HINT = (
    "For any other cluster, push the image to a registry the cluster can pull from "
    "(`docker tag IMAGE REGISTRY/IMAGE && docker push REGISTRY/IMAGE`) and deploy with image='REGISTRY/IMAGE', "
    "load_image=False."
)


def version_tag(version: str) -> str:
    """A model version as an image tag (letters, digits, ``_ . -``; at most 128; not starting with ``.`` or ``-``)."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", version).lstrip(".-")[:128]
    return tag or "model"


def repository(image: str) -> str:
    """``wine-service:latest`` -> ``wine-service``; a registry's port (``host:5000/wine``) is not a tag."""
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


@dataclass(frozen=True)
class ImageLoader:
    """Which tool loads images into the current cluster, and for which profile/cluster name."""

    tool: str
    cluster: str

    def command(self, image: str) -> list[str]:
        if self.tool == "kind":
            return ["kind", "load", "docker-image", image, "--name", self.cluster]
        return ["minikube", "image", "load", image, "--profile", self.cluster]


def detect_loader(context: str, minikube_profiles: tuple[str, ...] = ()) -> ImageLoader:
    """The loader for kubeconfig context ``context``; ImageLoadError for a cluster that is neither tool's.

    kind names its contexts ``kind-<cluster>``; minikube names them after the profile (``minikube`` by
    default), so a context equal to a profile minikube knows (``minikube profile list``) is minikube's.
    """
    if context.startswith("kind-"):
        return ImageLoader("kind", context.removeprefix("kind-"))
    if context == "minikube" or context in minikube_profiles:
        return ImageLoader("minikube", context)
    raise ImageLoadError(
        f"The current context {context!r} is neither a minikube nor a kind cluster, so the image cannot be "
        f"loaded into it directly. {REMOTE_HINT}"
    )


def minikube_profiles() -> tuple[str, ...]:
    """Profiles minikube knows (empty without minikube), so a renamed profile is still recognised."""
    if shutil.which("minikube") is None:
        return ()
    done = subprocess.run(["minikube", "profile", "list", "--output", "json", "--light"], capture_output=True,
                          text=True, timeout=60, check=False)
    try:
        listing = json.loads(done.stdout or "{}")
    except ValueError:
        return ()
    return tuple(p.get("Name", "") for p in listing.get("valid", []) if p.get("Name"))


def load_image(image: str, context: str, *, timeout: float = 600.0) -> list[str]:
    """Load ``image`` into the cluster of ``context``; returns the command that did it."""
    profiles = minikube_profiles() if not context.startswith("kind-") and context != "minikube" else ()
    loader = detect_loader(context, profiles)
    command = loader.command(image)
    if shutil.which(command[0]) is None:
        raise ToolMissingError(
            f"The current context {context!r} is a {loader.tool} cluster but `{loader.tool}` is not on PATH: "
            f"install it, or run `{' '.join(command)}` where it is installed. {REMOTE_HINT}"
        )
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise ImageLoadError(
            f"`{' '.join(command)}` failed (exit {done.returncode}):\n{output}\nIs the image built "
            f"(`docker image inspect {image}`)? The Dockerfile's README section shows how to build it."
        )
    return command
