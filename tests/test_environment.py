"""Notebook 00's checks: what is missing, whether it blocks, and how to get it."""

from __future__ import annotations

from workshop.container import docker_cli
from workshop.environment import environment_report, environment_summary, missing_required


def test_a_data_folder_without_the_csvs_is_a_required_miss(monkeypatch, tmp_path):
    monkeypatch.setenv("WINE_QUALITY_DATA_DIR", str(tmp_path))
    missing = {check.name: check for check in missing_required("local")}
    assert "wine data" in missing
    assert "winequality-red.csv" in missing["wine data"].found
    assert "WINE_QUALITY_DATA_DIR" in missing["wine data"].how_to_get


def test_the_kubernetes_target_needs_a_kubeconfig(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    report = environment_report("kubernetes")
    assert report.loc["kubeconfig", "status"] == "MISSING"
    assert "minikube or kind" in report.loc["kubeconfig", "how_to_get"]
    assert "kubeconfig" not in environment_report("local").index


def test_the_kubernetes_target_needs_docker_and_kubectl_to_build_load_and_render(monkeypatch):
    """Every deploy on a cluster builds and loads its image, and kustomize (in kubectl) renders k8s/."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("WORKSHOP_DOCKER", "/nonexistent/docker")
    monkeypatch.setattr("sys.executable", "/nonexistent/python")  # no kubectl beside the interpreter either
    docker_cli.cache_clear()
    try:
        report = environment_report("kubernetes")
    finally:
        docker_cli.cache_clear()
    for tool in ("docker engine", "kubectl"):
        assert report.loc[tool, "status"] == "MISSING", tool
        assert report.loc[tool, "how_to_get"]
    assert report.loc["minikube or kind", "status"] == "missing (optional)"


def test_optional_tools_never_block_and_say_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("WORKSHOP_DOCKER", "/nonexistent/docker")  # the engine check also looks outside PATH
    docker_cli.cache_clear()
    try:
        report = environment_report("local")
        missing = missing_required("local")
    finally:
        docker_cli.cache_clear()  # the next caller, with the real environment, finds the real docker
    for tool in ("prometheus", "wrk", "docker engine"):
        assert report.loc[tool, "status"] == "missing (optional)"
        assert report.loc[tool, "how_to_get"]
    assert not [c for c in missing if c.name in ("prometheus", "wrk", "docker engine")]


def test_the_summary_puts_what_is_missing_first_with_its_fix_then_one_line_for_the_rest(monkeypatch, tmp_path):
    monkeypatch.setenv("WINE_QUALITY_DATA_DIR", str(tmp_path))  # required, and missing
    monkeypatch.setenv("PATH", "/nonexistent")  # wrk and prometheus: optional, missing
    monkeypatch.setenv("WORKSHOP_DOCKER", "/nonexistent/docker")
    docker_cli.cache_clear()
    try:
        lines = environment_summary("local").splitlines()
    finally:
        docker_cli.cache_clear()
    assert lines[0] == "✗ MISSING: wine data (for 01_train)"
    assert "WINE_QUALITY_DATA_DIR" in lines[1], "the fix, in full, under what it fixes"
    optional = [line for line in lines if line.startswith("– optional, missing:")]
    assert {line.split(":")[1].split("(")[0].strip() for line in optional} >= {"prometheus", "wrk"}
    found = "\n".join(lines[lines.index(next(line for line in lines if line.startswith("✓ found"))):])
    assert "python 3." in found and "fastapi" in found and " ok" not in found
