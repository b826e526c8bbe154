"""The GitHub Actions workflows: actionlint (with shellcheck on the run: scripts) passes on each, the cluster
workflow runs the workshop on a kind cluster, the macOS one runs the local-target notebooks on a Mac, and
both keep what they produced. Neither can run here: they are linted and their steps checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))
VENV_BIN = Path(sys.executable).parent
ACTIONLINT = VENV_BIN / "actionlint"
SHELLCHECK = VENV_BIN / "shellcheck"


def test_there_are_workflows():
    names = {workflow.name for workflow in WORKFLOWS}
    assert {"ci.yml", "cluster.yml", "macos.yml"} <= names


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_actionlint_passes(workflow: Path):
    # actionlint skips shellcheck silently when it cannot find it: make sure it is there to run.
    assert ACTIONLINT.is_file() and SHELLCHECK.is_file(), "actionlint and shellcheck come with the dev extra"
    done = subprocess.run(
        [str(ACTIONLINT), "-no-color", f"-shellcheck={SHELLCHECK}", str(workflow.relative_to(PROJECT_ROOT))],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"actionlint on {workflow.name}:\n{done.stdout}{done.stderr}"


def _cluster_steps() -> list[dict]:
    workflow = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "cluster.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-24.04" and job["timeout-minutes"] == 120
    return job["steps"]


def test_cluster_workflow_runs_on_every_change_and_by_hand():
    workflow = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "cluster.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"] == {"branches": ["main"]}
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)


def test_cluster_workflow_creates_the_kind_cluster_the_workshop_loads_its_images_into():
    steps = _cluster_steps()
    (kind,) = [step for step in steps if step.get("uses", "").startswith("helm/kind-action@v")]
    assert kind["with"]["cluster_name"] == "workshop"  # context kind-workshop
    assert any(step.get("uses", "").startswith("azure/setup-helm@v") for step in steps)


def test_cluster_workflow_runs_the_workshop_then_the_cluster_tests():
    runs = [step.get("run", "").strip() for step in _cluster_steps()]
    assert "make workshop TARGET=kubernetes" in runs and "make test-cluster" in runs
    assert runs.index("make workshop TARGET=kubernetes") < runs.index("make test-cluster")


def test_cluster_workflow_uploads_build_always():
    steps = _cluster_steps()
    (upload,) = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"].rstrip("/") == "build"
    assert upload["if"] == "always()"
    assert steps[-1] is upload


def _macos_job() -> dict:
    workflow = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "macos.yml").read_text())
    (job,) = workflow["jobs"].values()
    return job


def test_the_macos_workflow_runs_on_every_change_and_by_hand():
    workflow = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "macos.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert _macos_job()["runs-on"] == "macos-latest"


def test_the_macos_job_installs_prometheus_with_homebrew_as_the_readme_says_then_runs_the_local_notebooks():
    steps = _macos_job()["steps"]
    runs = [step.get("run", "").strip() for step in steps]
    brew = next(i for i, run in enumerate(runs) if run.startswith("brew install"))
    assert "prometheus" in runs[brew].split()
    assert "brew install prometheus" in (PROJECT_ROOT / "README.md").read_text()
    workshop = runs.index("make workshop")  # TARGET defaults to local
    assert brew < workshop
    assert not any("TARGET=" in run for run in runs), "the local target only: no cluster on the runner"


def test_the_macos_job_runs_the_process_tests_that_differ_there_before_the_notebooks():
    runs = [step.get("run", "").strip() for step in _macos_job()["steps"]]
    (tests,) = [run for run in runs if "pytest" in run]
    for path in ("tests/test_started_processes.py", "tests/test_process.py", "tests/test_cleanup.py"):
        assert path in tests.split() and (PROJECT_ROOT / path).is_file()
    assert runs.index(tests) < runs.index("make workshop")


def test_the_macos_job_caches_the_wine_data_where_platformdirs_puts_it_on_macos():
    (cache,) = [step for step in _macos_job()["steps"] if step.get("uses", "").startswith("actions/cache@")]
    assert cache["with"]["path"] == "~/Library/Caches/ml-serving-workshop"  # platformdirs' user_cache_dir there


def test_the_macos_job_keeps_the_executed_notebooks():
    steps = _macos_job()["steps"]
    (upload,) = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"].rstrip("/") == "build" and upload["if"] == "always()"
    assert steps[-1] is upload
