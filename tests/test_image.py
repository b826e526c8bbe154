"""The images, built and run for real when a Docker engine answers (``scripts/docker-engine.sh start``).

The wine image is built from a temporary context holding this session's trained model, run on
127.0.0.1 the way Kubernetes runs it (read-only root filesystem, no capabilities), and smoke-tested as
a client would: /ready, /predict, /metrics. Then what the image promises is checked from the outside:
it runs as a non-root user, its size, its HEALTHCHECK, and that the CA bundle given as a build secret is
in no layer. The locust image is built too and drives a short load test against the wine container.

The llm image is not built here: its torch comes from PyTorch's package index, which this project's
machines cannot reach (tests/test_dockerfile.py checks it statically).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import certifi
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.wine.config import Settings
from app.wine.data import locate
from workshop import container

# The engine fixture first: without an engine every test skips at once, before a model is trained for it.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine")]

BASE_IMAGE = "python:3.11-slim"
# The measured wine image is ~390 MB on the debootstrap stand-in base (~176 MB of it the base); the venv
# (onnxruntime, numpy, uvicorn) is most of the rest. A bound well above that catches a leaked build tool,
# pip cache, the workshop extra (pandas, scikit-learn) or a data folder, which would each add 100 MB+.
MAX_WINE_IMAGE_BYTES = 550_000_000


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


@pytest.fixture(scope="module")
def wine_image(engine: container.Engine, build_dir: Path):
    tag = f"wine-service:test-{uuid.uuid4().hex[:8]}"
    build = container.build_image("wine", tag, build_dir, ca_bundle=_ca_bundle())
    print(f"\nbuilt {tag} in {build.seconds:.1f}s with {engine.reason}")
    yield tag
    container.remove_image(tag)


@pytest.fixture(scope="module")
def wine_container(wine_image: str):
    # A 1 s health interval, so the HEALTHCHECK's verdict comes within the test (the image says 30 s).
    running = container.run_container(wine_image, extra_args=["--health-interval", "1s"])
    try:
        yield running
    finally:
        container.remove(running.id)
    assert not container.docker("ps", "--all", "--quiet", "--filter", f"id={running.id}").strip()


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


def test_healthcheck_marks_the_container_healthy(wine_container: container.Container):
    deadline, status = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        status = container.docker("inspect", "--format", "{{.State.Health.Status}}", wine_container.id).strip()
        if status == "healthy":
            return
        time.sleep(0.5)
    pytest.fail(f"HEALTHCHECK status {status!r} after 30s; log:\n{container.logs(wine_container.id)}")


# ----------------------------------------------------------------------------------------------- the image


def test_runs_as_a_non_root_user(wine_image: str, wine_container: container.Container):
    user = container.image_user(wine_image)
    assert user, "no USER in the image: it runs as root"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), user
    assert container.exec_in(wine_container.id, ["id", "-u"]).strip() == uid
    assert container.exec_in(wine_container.id, ["id", "-u"]).strip() != "0"


def test_root_filesystem_is_not_writable_by_the_service(wine_container: container.Container):
    """The container runs --read-only; and the image's files belong to root, so even without it they are safe."""
    for path in ("/srv/app/x", "/srv/model/x", "/opt/venv/x"):
        with pytest.raises(container.ContainerError, match=r"Read-only file system|Permission denied"):
            container.exec_in(wine_container.id, ["python", "-c", f"open('{path}', 'w')"])
    container.exec_in(wine_container.id, ["python", "-c", "open('/tmp/x', 'w').write('ok')"])  # the tmpfs


def test_image_size_is_reported_and_sane(wine_image: str):
    size = container.image_size(wine_image)
    base = container.image_size(BASE_IMAGE)
    print(f"\n{wine_image}: {container.human_size(size)} ({container.human_size(size - base)} above {BASE_IMAGE})")
    assert 0 < size < MAX_WINE_IMAGE_BYTES


def _certificates(text: str) -> set[str]:
    """The PEM certificates in ``text``, as their base64 bodies without line breaks."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    return {re.sub(r"\s", "", block) for block in blocks}


def test_the_ca_secret_is_in_no_layer(wine_image: str, tmp_path: Path):
    """No file added by the Dockerfile holds the bundle, nor a certificate that only the host's bundle has."""
    assert container.docker("run", "--rm", wine_image, "python", "-c",
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
    container.docker("save", "--output", str(archive), wine_image, timeout=300)
    base_layers = len(json.loads(container.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                                                  BASE_IMAGE)))
    found, scanned = [], 0
    with tarfile.open(archive) as image:
        manifest = json.load(image.extractfile("manifest.json"))[0]
        for layer_name in manifest["Layers"][base_layers:]:  # the layers this Dockerfile added
            with tarfile.open(fileobj=image.extractfile(layer_name)) as layer:
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
    history = container.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", wine_image)
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
