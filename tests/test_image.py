"""The images, built and run for real when a Docker engine answers (``scripts/docker-engine.sh start``).

The wine image is built from a temporary context holding this session's trained model, run on
127.0.0.1 the way Kubernetes runs it (read-only root filesystem, no capabilities), and smoke-tested as
a client would: /ready, /predict, /metrics. The llm image is built from the project with the wheelhouse
(torch's CPU wheel in build/wheelhouse, ``make wheelhouse``: no PyTorch index needed), run the same hardened
way with the real SmolLM2-135M-Instruct mounted read-only at /models, offline, and asked for the capital of
France. Then what each image promises is checked from the outside: it runs as the non-root user 10001, its
size, its HEALTHCHECK, and that the CA bundle given as a build secret is in no layer. The locust image is
built too and drives a short load test against the wine container.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import NamedTuple

import certifi
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.wine.config import Settings
from app.wine.data import locate
from tests.llm_fixtures import REAL_MODEL, real_models_dir  # noqa: F401  (fixture)
from workshop import container
from workshop.waiting import WaitTimeout, wait_for

# The engine fixture first: without an engine every test skips at once, before a model is trained for it.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine")]

BASE_IMAGE = "python:3.11-slim"
# The measured wine image is ~390 MB on the debootstrap stand-in base (~176 MB of it the base); the venv
# (onnxruntime, numpy, uvicorn) is most of the rest. A bound well above that catches a leaked build tool,
# pip cache, the workshop extra (pandas, scikit-learn) or a data folder, which would each add 100 MB+.
MAX_WINE_IMAGE_BYTES = 550_000_000
# The measured llm image is ~1.24 GB: the base, CPU torch (~600 MB installed, its C++ tests and headers left out),
# transformers (~130 MB), the service's venv. A CUDA torch would add GBs, the pruned torch files ~190 MB.
MAX_LLM_IMAGE_BYTES = 1_350_000_000
SERVICES = ("wine", "llm")
MAX_IMAGE_BYTES = {"wine": MAX_WINE_IMAGE_BYTES, "llm": MAX_LLM_IMAGE_BYTES}
# Where the service must not be able to write: the image's own files, and the models folder mounted read-only.
READ_ONLY_FILES = {"wine": ("/srv/app/x", "/srv/model/x", "/opt/venv/x"),
                   "llm": ("/srv/app/x", "/opt/venv/x", "/models/x")}
CAPITAL_QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="session")
def engine() -> container.Engine:
    found = container.engine_available()
    if not found:
        pytest.skip(f"no usable Docker engine: {found.reason}")
    return found


def _ca_bundle() -> Path | None:
    return container.DEFAULT_CA_BUNDLE if container.DEFAULT_CA_BUNDLE.is_file() else None


@pytest.fixture(scope="module")
def build_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return container.build_context(model_dir, tmp_path_factory.mktemp("image-context"))


def _built(engine: container.Engine, target: str, context: Path, **options):
    """Build the Dockerfile's ``target`` under a fresh tag, yield the tag, remove the image afterwards."""
    tag = f"{target}-service:test-{uuid.uuid4().hex[:8]}"
    build = container.build_image(target, tag, context, ca_bundle=_ca_bundle(), **options)
    print(f"\nbuilt {tag} in {build.seconds:.1f}s with {engine.reason}")
    yield tag
    container.remove_image(tag)


def _running(tag: str, extra_args: tuple[str, ...] = (), **options):
    """Run ``tag`` hardened on 127.0.0.1 until ready, yield the container, and check it is gone afterwards."""
    # A 1 s health interval, so the HEALTHCHECK's verdict comes within the test (the images say 30 s).
    running = container.run_container(tag, extra_args=["--health-interval", "1s", *extra_args], **options)
    try:
        yield running
    finally:
        container.remove(running.id)
    assert not container.docker("ps", "--all", "--quiet", "--filter", f"id={running.id}").strip()


@pytest.fixture(scope="module")
def wine_image(engine: container.Engine, build_dir: Path):
    yield from _built(engine, "wine", build_dir)


@pytest.fixture(scope="module")
def wine_container(wine_image: str):
    yield from _running(wine_image)


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """build/wheelhouse with torch's CPU wheel (downloaded once and kept, as ``make wheelhouse`` does)."""
    try:
        container.fill_wheelhouse(container.WHEELHOUSE_DIR)
    except container.ContainerError as error:
        pytest.skip(f"no CPU torch wheel for the llm image ({error}); make wheelhouse says why")
    return container.WHEELHOUSE_DIR


@pytest.fixture(scope="module")
def llm_image(engine: container.Engine, wheelhouse: Path):
    """The llm target built from the project, as the kubernetes target builds it: with the wheelhouse."""
    yield from _built(engine, "llm", container.PROJECT_ROOT, wheelhouse=wheelhouse)


@pytest.fixture(scope="module")
def llm_models(real_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A models folder holding the real float32 SmolLM2, readable by the image's user (uid 10001).

    A copy: transformers' save_pretrained writes model.safetensors with mode 0600, so the folder made on this
    machine (by root, here) is readable by its owner only, and the container's user would find no weights.
    """
    models = tmp_path_factory.mktemp("llm-models")
    copy = shutil.copytree(real_models_dir / REAL_MODEL, models / REAL_MODEL)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    models.chmod(0o755)
    return models


@pytest.fixture(scope="module")
def llm_container(llm_image: str, llm_models: Path):
    """The chat service serving the real model, offline, from /models mounted read-only."""
    yield from _running(
        llm_image, env={"LLM_DEFAULT_MODEL": REAL_MODEL, "LLM_MODELS_DIR": "/models", "HF_HUB_OFFLINE": "1"},
        extra_args=("--volume", f"{llm_models}:/models:ro"), timeout=180)


class Image(NamedTuple):
    service: str
    tag: str


class Running(NamedTuple):
    service: str
    tag: str
    container: container.Container


@pytest.fixture(params=SERVICES)
def image(request: pytest.FixtureRequest) -> Image:
    """Each service's image (wine, llm), built once per module."""
    return Image(request.param, request.getfixturevalue(f"{request.param}_image"))


@pytest.fixture(params=SERVICES)
def running(request: pytest.FixtureRequest) -> Running:
    """Each service's image running hardened and ready."""
    return Running(request.param, request.getfixturevalue(f"{request.param}_image"),
                   request.getfixturevalue(f"{request.param}_container"))


@pytest.fixture(scope="module")
def model_card(model_dir: Path) -> dict:
    return json.loads((model_dir / "model_card.json").read_text())


# ----------------------------------------------------------------------------------------------- serving


def test_ready_reports_the_baked_in_model(wine_container: container.Container, model_card: dict):
    response = httpx.get(f"{wine_container.url}/ready", timeout=5)
    assert response.status_code == 200
    assert response.json()["model_version"] == model_card["version"]


def test_predict_answers_with_a_quality_and_the_model_version(
    wine_container: container.Container, model_card: dict, wines: list[dict]
):
    for wine in wines[:3]:
        response = httpx.post(f"{wine_container.url}/predict", json=wine, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert 0 <= body["quality"] <= 10
        assert body["model_version"] == model_card["version"]
    refused = httpx.post(f"{wine_container.url}/predict", json={**wines[0], "alcohol": "lots"}, timeout=10)
    assert refused.status_code == 422


def test_metrics_expose_the_wine_metrics(wine_container: container.Container, model_card: dict, wines: list[dict]):
    assert httpx.post(f"{wine_container.url}/predict", json=wines[0], timeout=10).status_code == 200
    response = httpx.get(f"{wine_container.url}/metrics", timeout=10)
    assert response.status_code == 200
    samples = [s for family in text_string_to_metric_families(response.text) for s in family.samples]
    names = {s.name for s in samples}
    assert {"wine_predicted_quality_count", "wine_input_rows_total", "wine_training_feature_mean"} <= names
    info = [s for s in samples if s.name == "wine_model_info"]
    assert [s.labels["version"] for s in info if s.value == 1] == [model_card["version"]]


def test_healthcheck_marks_the_container_healthy(running: Running):
    statuses = [""]

    def healthy() -> bool:
        statuses.append(container.docker("inspect", "--format", "{{.State.Health.Status}}",
                                         running.container.id).strip())
        return statuses[-1] == "healthy"

    try:
        wait_for(healthy, 30, "the container's HEALTHCHECK to say healthy", interval=0.5, retry_on=())
    except WaitTimeout:
        pytest.fail(f"HEALTHCHECK status {statuses[-1]!r} after 30s; log:\n{container.logs(running.container.id)}")


def _completion(url: str) -> httpx.Response:
    return httpx.post(f"{url}/completion", timeout=120,
                      json={"messages": [{"role": "user", "content": CAPITAL_QUESTION}], "max_new_tokens": 24})


def test_llm_serves_the_real_model_offline_and_knows_the_capital_of_france(llm_container: container.Container):
    status = httpx.get(f"{llm_container.url}/ready", timeout=5)
    assert status.status_code == 200, status.text
    response = _completion(llm_container.url)
    assert response.status_code == 200, response.text
    body = response.json()
    print(f"\n{CAPITAL_QUESTION} -> {body['message']['content']!r} in {body['generation_seconds']:.2f}s")
    assert body["model"] == REAL_MODEL
    assert "Paris" in body["message"]["content"]
    assert 0 < body["usage"]["completion_tokens"] <= 24


def _llm_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_llm_metrics_count_the_completion(llm_container: container.Container):
    success = ("llm_completions_total", (("outcome", "success"),))
    before = _llm_samples(llm_container.url)
    assert _completion(llm_container.url).status_code == 200
    after = _llm_samples(llm_container.url)
    assert after[success] == before[success] + 1
    assert after[("llm_completion_tokens_total", ())] > before[("llm_completion_tokens_total", ())]
    serving = [labels for (name, labels), value in after.items() if name == "llm_model_info" and value == 1]
    assert [dict(labels)["model_id"] for labels in serving] == [REAL_MODEL]


def test_llm_image_has_cpu_torch_gguf_and_the_init_containers_model_fetcher(llm_container: container.Container):
    """The k8s init container runs ``python -m app.llm.fetch_model`` in this image; it converts GGUF with gguf."""
    versions = container.exec_in(llm_container.id, [
        "python", "-c", "import gguf, importlib.metadata as m, torch; "
        "print(torch.__version__, torch.version.cuda, m.version('gguf'))"]).split()
    print(f"\ntorch {versions[0]} (CUDA {versions[1]}), gguf {versions[2]}")
    assert versions[1] == "None", f"torch {versions[0]} is a CUDA build"
    container.exec_in(llm_container.id, ["test", "-f", "/srv/app/llm/fetch_model.py"])
    usage = container.exec_in(llm_container.id, ["python", "-m", "app.llm.fetch_model", "--help"])
    assert "--models-dir" in usage


# ----------------------------------------------------------------------------------------------- the image


# What the wine image may import and what it must not: training (scikit-learn, skl2onnx) wrote the model
# before the build; the image only runs it. The serving module is the probe's check that it looks in the right place.
_TRAINING_PROBE = """
import importlib.util, json, pathlib, sys, sysconfig
purelib = pathlib.Path(sysconfig.get_paths()["purelib"])
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
files = [str(path) for root in (pathlib.Path("/srv"), purelib) for path in [
         *root.glob("training"), *root.glob("workshop"),
         *root.glob("app/wine/**/train.*"), *root.glob("app/wine/**/onnx_export*")]]
serving = found("app.wine.model") and pathlib.Path("/srv/app/wine/model.py").is_file()
print(json.dumps({"modules": [name for name in sys.argv[1:] if found(name)], "files": files, "serving": serving}))
"""


def test_the_wine_image_holds_no_training_code(wine_container: container.Container):
    """The serving image has the service and the model, not what trained it: no ``training`` package, no
    ``app.wine.train``/``onnx_export``, in /srv or the venv, nor the converter and scikit-learn, nor the
    notebooks' ``workshop`` library (whose exercises import training)."""
    probe = json.loads(container.exec_in(wine_container.id, [
        "python", "-c", _TRAINING_PROBE, "training", "training.wine", "app.wine.train", "app.wine.onnx_export",
        "skl2onnx", "sklearn", "workshop"]))
    assert probe["serving"], "the probe does not find the service's own model module: it looks in the wrong place"
    assert probe["modules"] == [] and probe["files"] == [], f"training code in the serving image: {probe}"


def test_runs_as_a_non_root_user(running: Running):
    user = container.image_user(running.tag)
    assert user, "no USER in the image: it runs as root"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), user
    assert user == "10001:10001", "the uid k8s' runAsUser and the manifests' fsGroup name"
    assert container.exec_in(running.container.id, ["id", "-u"]).strip() == uid
    assert container.exec_in(running.container.id, ["id", "-u"]).strip() != "0"


def test_root_filesystem_is_not_writable_by_the_service(running: Running):
    """The container runs --read-only; and the image's files belong to root, so even without it they are safe."""
    for path in READ_ONLY_FILES[running.service]:
        with pytest.raises(container.ContainerError, match=r"Read-only file system|Permission denied"):
            container.exec_in(running.container.id, ["python", "-c", f"open('{path}', 'w')"])
    container.exec_in(running.container.id, ["python", "-c", "open('/tmp/x', 'w').write('ok')"])  # the tmpfs


def test_image_size_is_reported_and_sane(image: Image):
    size = container.image_size(image.tag)
    base = container.image_size(BASE_IMAGE)
    print(f"\n{image.tag}: {container.human_size(size)} ({container.human_size(size - base)} above {BASE_IMAGE})")
    assert 0 < size < MAX_IMAGE_BYTES[image.service]


def _certificates(text: str) -> set[str]:
    """The PEM certificates in ``text``, as their base64 bodies without line breaks."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    return {re.sub(r"\s", "", block) for block in blocks}


def test_the_ca_secret_is_in_no_layer(image: Image, tmp_path: Path):
    """No file added by the Dockerfile holds the bundle, nor a certificate that only the host's bundle has."""
    assert container.docker("run", "--rm", image.tag, "python", "-c",
                            "import os; print(os.path.exists('/run/secrets/ca'))").strip() == "False"
    bundle = _ca_bundle()
    if bundle is None:
        pytest.skip(f"{container.DEFAULT_CA_BUNDLE} missing: nothing was passed as the ca secret (apt-get install "
                    "ca-certificates)")
    # Public roots are legitimately in the image (the base's bundle, certifi's): look for the others.
    public = _certificates(container.docker("run", "--rm", BASE_IMAGE, "cat", "/etc/ssl/certs/ca-certificates.crt"))
    public |= _certificates(Path(certifi.where()).read_text())
    host_only = _certificates(bundle.read_text()) - public
    markers = [cert[:64].encode() for cert in host_only]
    bundle_sha = hashlib.sha256(bundle.read_bytes()).hexdigest()

    archive = tmp_path / "image.tar"
    container.docker("save", "--output", str(archive), image.tag, timeout=600)
    base_layers = len(json.loads(container.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                                                  BASE_IMAGE)))
    found, scanned = [], 0
    with tarfile.open(archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))[0]
        for layer_name in manifest["Layers"][base_layers:]:  # the layers this Dockerfile added
            with tarfile.open(fileobj=saved.extractfile(layer_name)) as layer:
                for member in layer:
                    if not member.isfile():
                        continue
                    data = layer.extractfile(member).read()
                    scanned += 1
                    if hashlib.sha256(data).hexdigest() == bundle_sha or any(m in data for m in markers):
                        found.append(f"{layer_name}: {member.name}")
    print(f"\nscanned {scanned} files in {len(manifest['Layers']) - base_layers} layers for the bundle "
          f"and {len(markers)} host-only certificate(s)")
    assert scanned > 1000, "the image's own layers were not found in the saved archive"
    assert not found, f"the CA bundle (or its private certificates) is in the image: {found}"
    history = container.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image.tag)
    assert "BEGIN CERTIFICATE" not in history and "/etc/ssl/certs" not in history


# ----------------------------------------------------------------------------------------------- failure paths


def test_a_container_that_never_gets_ready_is_removed_and_its_log_reported(wine_image: str):
    before = set(container.docker("ps", "--all", "--quiet", "--no-trunc").split())
    with pytest.raises(container.ContainerError, match=r"not ready|exited") as raised:
        container.run_container(wine_image, env={"WINE_MODEL_DIR": "/nonexistent"}, timeout=10)
    assert "/nonexistent" in str(raised.value), "the error should carry the container's log"
    assert set(container.docker("ps", "--all", "--quiet", "--no-trunc").split()) <= before


def test_build_without_a_model_says_how_to_make_one(engine: container.Engine, tmp_path: Path):
    with pytest.raises(container.ContainerError, match="train a model first"):
        container.build_context(tmp_path / "no-model", tmp_path / "context")


# ----------------------------------------------------------------------------------------------- locust


def test_locust_image_load_tests_the_wine_container(
    build_dir: Path, wine_container: container.Container, wine_data, tmp_path: Path
):
    """The image k8s/load_tests runs, against the wine container: no request may fail.

    The wine data is mounted read-only (the workers' WINE_QUALITY_DATA_DIR), as a classroom cluster would.
    """
    tag = f"wine-locust:test-{uuid.uuid4().hex[:8]}"
    build = container.build_image("locust", tag, build_dir, ca_bundle=_ca_bundle())
    print(f"\nbuilt {tag} in {build.seconds:.1f}s: {container.human_size(container.image_size(tag))}")
    data_dir, _, _ = locate(Settings())  # WINE_QUALITY_DATA_DIR or the download cache: verified CSVs
    try:
        assert container.image_user(tag).partition(":")[0] not in ("", "0")
        binary, _ = container.docker_cli()
        # The host's network: the wine container is published on the host's 127.0.0.1.
        result = subprocess.run(
            [binary, "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
             "--volume", f"{data_dir}:/data:ro", "--env", "WINE_QUALITY_DATA_DIR=/data", tag,
             "locust", "--headless", "--users", "4", "--spawn-rate", "4", "--run-time", "6s",
             "--host", wine_container.url, "--only-summary", "--exit-code-on-error", "1"],
            capture_output=True, text=True, timeout=120,
        )
        summary = result.stdout + result.stderr
        assert result.returncode == 0, summary[-3000:]
        totals = re.search(r"Aggregated\s+(\d+)\s+(\d+)\(", summary)
        assert totals, summary[-3000:]
        assert int(totals[1]) > 10 and int(totals[2]) == 0, totals[0]
    finally:
        container.remove_image(tag)


def test_the_layers_say_where_the_bytes_are_and_the_model_comes_last(wine_image: str):
    """What notebook 03 shows: the base image's layers first, the venv the largest of the Dockerfile's, and the
    model on top, so a new model ships as one small layer."""
    layers = container.image_layers(wine_image, container.dockerfile_base_image())
    assert sum(layer.size for layer in layers) == container.image_size(wine_image)
    assert layers[0].from_base and not layers[-1].from_base
    own = [layer for layer in layers if not layer.from_base]
    assert max(own, key=lambda layer: layer.size).instruction.startswith("COPY /opt/venv")
    assert own[-1].instruction.startswith("COPY artifacts/wine /srv/model")
    assert container.dockerfile_base_image() == BASE_IMAGE
