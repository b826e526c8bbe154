"""Install torch's CPU build from PyTorch's CPU index before the project, so that the project's install keeps it.

On Linux PyPI's torch is a CUDA build: torch 2.13.0's wheel weighs 527 MB and requires NVIDIA's CUDA 13
libraries (cuDNN, cuBLAS, NCCL and more), several GB again. PyTorch's CPU index has the same version as a
192 MB wheel (2.13.0+cpu, which constraints.txt's torch==2.13.0 accepts). Where that index does not answer
within a few seconds (a network that blocks it), this says so in one line, and the project's install then
takes torch from pip's default index. On macOS and Windows PyPI's torch is the CPU build already: nothing to do.

Standard library only: it runs in the new virtual environment before anything else is in it.

    python scripts/install-cpu-torch.py [--index-url URL] [--timeout SECONDS]   (make install runs it)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"


def pinned_torch(constraints: Path = CONSTRAINTS) -> str:
    """The torch version constraints.txt pins."""
    match = re.search(r"^torch==([^\s;#]+)", constraints.read_text(), flags=re.MULTILINE)
    if not match:
        raise SystemExit(f"{constraints} pins no torch==VERSION")
    return match[1]


def build_of(version: str, requires: list[str]) -> str:
    """'the CPU build' or 'a CUDA build', from a torch's version and dependencies (no import of torch)."""
    cuda = ("nvidia-", "cuda-")  # torch 2.13's Linux wheel on PyPI requires cuda-toolkit[...] and nvidia-*-cu13
    if "+cpu" in version or not any(requirement.lower().startswith(cuda) for requirement in requires):
        return "the CPU build"
    return "a CUDA build"


def why(pip_output: str) -> str:
    """The reason pip gives for an index that did not answer, else its last error line."""
    lines = [line.strip() for line in pip_output.splitlines() if line.strip()]
    for line in lines:
        fetch = re.match(r"Could not fetch URL \S+?: (.*?)(?: - skipping)?$", line)
        if fetch:
            return fetch[1]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return errors[-1] if errors else (lines[-1] if lines else "no output")


def install(index_url: str, timeout_s: float, version: str) -> str:
    """pip install torch==VERSION (no dependencies) from ``index_url``; one line saying what happened."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        # -vv: pip says why an index did not answer only at that verbosity; the output is read, not shown.
        command = [sys.executable, "-m", "pip", "install", "-vv", "--progress-bar", "off", "--no-deps",
                   "--only-binary=:all:", "--index-url", index_url, "--timeout", f"{timeout_s:g}", "--retries", "0",
                   "--report", str(report), f"torch=={version}"]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        took = time.monotonic() - started
        if done.returncode != 0:
            return (f"torch: nothing from {index_url} after {took:.0f} s ({why(done.stdout + done.stderr)}); the "
                    f"project's install takes torch {version} from pip's default index (on Linux PyPI's is a CUDA "
                    "build of several GB)")
        installed = json.loads(report.read_text()).get("install", [])
    if not installed:
        found = importlib.metadata.distribution("torch")
        return f"torch {found.version}: already installed, {build_of(found.version, found.requires or [])}"
    metadata = installed[0]["metadata"]
    where = installed[0].get("download_info", {}).get("url", index_url)
    return (f"torch {metadata['version']}: {build_of(metadata['version'], metadata.get('requires_dist', []))}, "
            f"from {where} in {took:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-url", default=CPU_INDEX, help="PyTorch's CPU index (empty: leave torch to pip)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the index, one try")
    args = parser.parse_args(argv)
    if not args.index_url:
        print("torch: no CPU index given; the project's install takes torch from pip's default index")
    elif not sys.platform.startswith("linux"):
        print(f"torch: on {sys.platform} PyPI's torch is the CPU build; the project's install takes it from there")
    else:
        print(install(args.index_url, args.timeout, pinned_torch()))
    return 0  # a miss is not a failure: the project's install still gets a torch


if __name__ == "__main__":
    sys.exit(main())
