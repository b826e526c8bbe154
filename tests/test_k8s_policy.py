"""Policy checks with checkov, offline: every kustomization that gets applied, as kustomize renders it, and the
Dockerfile. Zero failed checks; a check that does not apply is skipped next to what it concerns, with why.

checkov lives in a venv of its own (its pins clash with the project's): ``make install`` creates
``.venv-checkov``. It runs once over a folder holding every rendered kustomization (one file each, so a
failure names its kustomization), with ``--skip-download`` and the project's ``.checkov.yaml``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.test_k8s_manifests import ENTRY_POINTS, folder_id, kustomize_build, render, workloads

CHECKOV = PROJECT_ROOT / ".venv-checkov" / "bin" / "checkov"
CONFIG = PROJECT_ROOT / ".checkov.yaml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+")
Report = dict[str, Any]


def checkov(*arguments: str) -> dict[str, Report]:
    """One checkov run, its JSON report per framework ("kubernetes", "dockerfile"); a skip without checkov."""
    if not CHECKOV.is_file():
        pytest.skip(f"checkov is missing ({CHECKOV.relative_to(PROJECT_ROOT)}): run make install")
    command = [str(CHECKOV), "--config-file", str(CONFIG), "--skip-download", "--output", "json", *arguments]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False)
    # Exit status 1 means failed checks, which the JSON lists; anything else, or no JSON, is checkov failing.
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov exited {result.returncode} without a report:\n{result.stderr[-3000:]}", pytrace=False)
    reports = {report["check_type"]: report for report in (reports if isinstance(reports, list) else [reports])}
    for report in reports.values():
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return reports


def file_name(folder: Path) -> str:
    """The rendered kustomization's file name in the scanned folder: llm, load_tests..."""
    return folder_id(folder).replace("/", "--") + ".yaml"


def describe(check: Report) -> str:
    """A failed check as a reviewer reads it: id, object, what it wants, where."""
    lines = check["file_line_range"]
    return f"{check['check_id']} {check['resource']}: {check['check_name']} (lines {lines[0]}-{lines[1]})"


def in_file(report: Report, outcome: str, name: str) -> list[Report]:
    return [c for c in report["results"][f"{outcome}_checks"] if Path(c["file_path"]).name == name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """One checkov run (it takes seconds to start) over a folder with the Dockerfile and every entry-point
    kustomization, rendered (k8s/monitoring is part of k8s/base). A kustomization that kustomize cannot
    build is left out here: its own test reports kustomize's error."""
    folder = tmp_path_factory.mktemp("rendered")
    shutil.copyfile(DOCKERFILE, folder / "Dockerfile")
    for kustomization in ENTRY_POINTS:
        if (result := kustomize_build(kustomization)).returncode == 0:
            (folder / file_name(kustomization)).write_text(result.stdout, encoding="utf-8")
    return checkov("--framework", "kubernetes", "dockerfile", "--directory", str(folder))


@pytest.fixture(scope="module")
def kubernetes_report(reports: dict[str, Report]) -> Report:
    return reports["kubernetes"]


@pytest.mark.slow  # checkov: 5 to 15 s, once for the module
@pytest.mark.parametrize("folder", ENTRY_POINTS, ids=folder_id)
def test_the_kustomization_passes_checkov(kubernetes_report: Report, folder: Path) -> None:
    name = file_name(folder)
    if any(workloads(render(folder))):  # checkov has no checks for some kinds (ResourceQuota, LimitRange)
        assert in_file(kubernetes_report, "passed", name), f"checkov checked nothing in {folder_id(folder)}"
    failed = sorted(describe(check) for check in in_file(kubernetes_report, "failed", name))
    assert not failed, f"checkov on k8s/{folder_id(folder)} ({len(failed)} failed):\n" + "\n".join(failed)


@pytest.mark.slow
def test_checkov_skips_only_what_the_annotations_justify(kubernetes_report: Report) -> None:
    """Every skipped check comes from an annotation on its object that says why; none is skipped silently."""
    skipped = kubernetes_report["results"]["skipped_checks"]
    assert all(len(check["check_result"].get("suppress_comment", "").split()) >= 4 for check in skipped), skipped
    annotated = {
        (value.partition("=")[0], f"{doc['kind']}.{doc['metadata'].get('namespace', '')}.{doc['metadata']['name']}")
        for folder in ENTRY_POINTS
        if kustomize_build(folder).returncode == 0  # as scanned: one that does not build fails elsewhere
        for doc in render(folder)
        for key, value in doc["metadata"].get("annotations", {}).items()
        if SKIP_ANNOTATION.fullmatch(key)
    }
    reported = {(check["check_id"], check["resource"]) for check in skipped}
    # An annotation checkov does not report skips a check that does not run on that object as rendered
    # (its kind has no such check, or kustomize already satisfies it): a justification for nothing.
    idle = sorted(f"{resource}: {check}" for check, resource in annotated - reported)
    assert not idle, "skip annotations for checks checkov does not run there; remove them:\n" + "\n".join(idle)
    assert reported <= annotated, sorted(reported - annotated)


def test_every_skip_annotation_has_a_reason_and_a_comment() -> None:
    """`checkov.io/skipN: CKV_..=<why>` on the object, and a comment next to it (above it, or at the end of
    the line) in the source file."""
    sources = sorted((PROJECT_ROOT / "k8s").rglob("*.yaml"))
    found = 0
    for path in sources:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if not SKIP_ANNOTATION.search(line):
                continue
            found += 1
            check, _, reason = line.split(":", 1)[1].strip().partition("=")
            assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check), f"{path.name}:{number + 1}: {line}"
            assert len(reason.split()) >= 4, f"{path.name}:{number + 1}: the annotation needs a reason"
            commented = lines[number - 1].strip().startswith("#") or " #" in line.split("=", 1)[1]
            assert commented, f"{path.name}:{number + 1}: explain the skip in a comment on the line above"
    assert found  # k8s/base/wine-deployment.yaml has them


def test_every_skip_in_the_config_has_a_comment() -> None:
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    config = yaml.safe_load("\n".join(lines))
    assert config["skip-download"] is True
    for check in config.get("skip-check", []):
        [number] = [i for i, line in enumerate(lines) if line.strip() == f"- {check}"]
        assert lines[number - 1].strip().startswith("#"), f".checkov.yaml: {check} needs its reason above it"


@pytest.mark.slow
def test_the_dockerfile_passes_checkov(reports: dict[str, Report]) -> None:
    report = reports["dockerfile"]
    assert report["summary"]["passed"] > 0
    failed = sorted(describe(check) for check in report["results"]["failed_checks"])
    assert not failed, "checkov on the Dockerfile:\n" + "\n".join(failed)


def base_images(dockerfile: str) -> list[str]:
    """The image each FROM starts from, with build arguments replaced by their defaults; stage names
    (FROM base AS wine) are left out. What checkov's CKV_DOCKER_7 would check if it expanded arguments."""
    arguments: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for line in dockerfile.splitlines():
        words = line.split()
        if not words or words[0].upper() not in {"ARG", "FROM"}:
            continue
        if words[0].upper() == "ARG" and len(words) == 2:
            name, _, default = words[1].partition("=")
            arguments.setdefault(name, default)
            continue
        words = [word for word in words[1:] if not word.startswith("--platform")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda match: arguments.get(match[1], ""), words[0])
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image not in stages:
            images.append(image)
    return images


def test_every_base_image_has_a_fixed_tag() -> None:
    """In place of CKV_DOCKER_7, skipped in .checkov.yaml: a tag that is neither missing nor latest."""
    images = base_images(DOCKERFILE.read_text(encoding="utf-8"))
    assert images, "no FROM found in the Dockerfile"
    for image in images:
        if image == "scratch" or "@sha256:" in image:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]  # not a registry's host:port
        assert tag and tag != "latest", f"base image {image!r} needs a fixed tag"


def test_base_images_expand_build_arguments() -> None:
    dockerfile = "ARG IMG=python:3.11-slim\nFROM ${IMG} AS base\nFROM base AS wine\nFROM $IMG\nFROM debian\n"
    assert base_images(dockerfile) == ["python:3.11-slim", "python:3.11-slim", "debian"]
    assert base_images("ARG IMG\nFROM ${IMG}\n") == [""]
