# The workshop's images. Line-by-line explanation: docs/container.md.
#
#   python -m training --output artifacts/wine            # the model is baked into the image
#   DOCKER_BUILDKIT=1 docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt \
#       --target wine -t wine-service:latest .
#
# Targets: wine (the default: the last stage), llm (the chat service), locust (the load generator).
# The --secret is optional: it lets pip trust a corporate proxy's CA without storing the bundle in a layer.
# BuildKit is required (RUN --mount); there is deliberately no "# syntax=" line: the builder's built-in
# Dockerfile frontend (Docker 20.10 and later) has every feature used here, and no frontend image has to
# be pulled from a registry, which keeps the build working offline and behind registry mirrors.

# Every stage starts from the same interpreter, so the venv built in one runs in the others.
ARG PYTHON_IMAGE=python:3.11-slim
# The llm build's wheelhouse (see the stage `wheelhouse` below): empty unless an image of wheels is named here.
ARG WHEELHOUSE_IMAGE=scratch

# ---------------------------------------------------------------- wheelhouse: wheels pip takes before an index
# A folder of wheels the llm build installs from first (pip --find-links), for air-gapped and corporate builds
# and for torch's CPU build without PyTorch's index (`make wheelhouse` puts it in build/wheelhouse). Empty by
# default, so a build without one works as before. Two ways to fill it with a folder:
#   BuildKit 0.10+ (Docker 23+):  docker buildx build --build-context wheelhouse=build/wheelhouse --target llm .
#                                 (a named context replaces the stage of that name)
#   any BuildKit (Docker 20.10):  an image holding the wheels at /, built from the folder
#                                 (FROM scratch, COPY *.whl /), given as --build-arg WHEELHOUSE_IMAGE=TAG
# workshop.container.build_image(wheelhouse=...) picks the one the engine supports.
FROM ${WHEELHOUSE_IMAGE} AS wheelhouse

# ---------------------------------------------------------------- base: shared by all stages
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed numeric user: Kubernetes' runAsNonRoot can verify a number, not a name.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app

# ---------------------------------------------------------------- builder: the virtual environment
FROM base AS builder
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what `pip install .` reads; the source changes more often than the dependencies but is small.
COPY pyproject.toml constraints.txt README.md ./
COPY app/ app/
# Runtime dependencies only (no dev extra: no pytest, no jupyter), at the tested versions.
# The pip cache lives in a cache mount, not in a layer; the CA bundle is used only when the secret is given.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,required=false,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca; fi \
    && pip install -c constraints.txt .
# Byte-compile the service code once, here: the running container must not write anything.
RUN python -m compileall -q --invalidation-mode checked-hash app

# ---------------------------------------------------------------- llm: the chat service (app.llm)
# The builder's venv plus the `llm` extra (transformers, tokenizers, torch, gguf). torch on PyPI is, on Linux,
# the CUDA build (several GB of libraries a CPU node never uses); the CPU build (~200 MB wheel) comes from the
# wheelhouse when it holds torch, else from PyTorch's own index, which pip then sees next to PyPI.
# constraints.txt pins the version ("torch==2.13.0") and pip prefers the local build of it ("2.13.0+cpu").
# An empty TORCH_INDEX_URL means no extra index. For a GPU image pass the matching index,
# e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (and a CUDA base).
FROM builder AS llm-builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,required=false,target=/run/secrets/ca \
    --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca; fi \
    && if [ -n "${TORCH_INDEX_URL}" ] && [ -z "$(find /wheelhouse -maxdepth 1 -name 'torch-*.whl')" ]; then \
         export PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}"; fi \
    && pip install -c constraints.txt --find-links /wheelhouse ".[llm]"
# torch's wheel carries files only its developers and extension builders use: C++ test programs (torch/test,
# torch/bin), protoc, and the C++ headers (torch/include: torch.utils.cpp_extension and torch.compile's C++ code
# generation, neither of which the service runs). Left out of the image, they are ~190 MB fewer to ship.
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && rm -rf "${site}/torch/test" "${site}/torch/include" "${site}"/torch/bin/test_* "${site}"/torch/bin/*Test \
       "${site}"/torch/bin/protoc*

FROM base AS llm
# Models are not baked in (hundreds of MB to GB each, swapped at run time): a model_id that names a folder
# in LLM_MODELS_DIR loads from there, offline (mount a volume at /models); any other id is a hub id,
# downloaded into HF_HOME (mount a writable volume at /cache, shared by restarts).
ENV PATH=/opt/venv/bin:$PATH \
    LLM_MODELS_DIR=/models \
    HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache
WORKDIR /srv
COPY --from=llm-builder /opt/venv /opt/venv
COPY --from=llm-builder /src/app /srv/app
# Mount points: /models read-only for the service user, /cache writable by it when no volume is mounted.
RUN mkdir -p /models /cache && chown 10001:10001 /cache
USER 10001:10001
EXPOSE 8000
# Liveness only: /health answers while a model loads in the background; /ready (503 until loaded) is for
# the orchestrator's readiness probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["python", "-m", "app.llm", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- locust: load generator (k8s/load_tests)
# The locustfile imports app.wine (feature bounds, the data loader: pandas), so the image is the
# builder's venv plus Locust and pandas. The locustfile is baked in and LOCUST_LOCUSTFILE names it: the
# Kubernetes Job and workers run it from the image (a changed locustfile means a rebuilt image).
FROM builder AS locust-builder
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,required=false,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca; fi \
    && pip install -c constraints.txt locust pandas

FROM base AS locust
ENV PATH=/opt/venv/bin:$PATH \
    LOCUST_LOCUSTFILE=/srv/load_tests/locustfile.py
WORKDIR /srv
COPY --from=locust-builder /opt/venv /opt/venv
COPY --from=locust-builder /src/app /srv/app
COPY load_tests/locustfile.py /srv/load_tests/locustfile.py
USER 10001:10001
# 8089: the web UI (without --headless); 5557: where a master listens for its workers.
EXPOSE 8089 5557
CMD ["locust"]

# ---------------------------------------------------------------- wine: the service (last = default target)
FROM base AS wine
ENV PATH=/opt/venv/bin:$PATH \
    WINE_MODEL_DIR=/srv/model
WORKDIR /srv
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/app /srv/app
# The model is part of the image: one tag = one code version + one model version.
COPY artifacts/wine /srv/model
# Owned by root, read-only for the service user; writes go to /tmp only (readOnlyRootFilesystem).
USER 10001:10001
EXPOSE 8000
# Slim images have no curl: Python's urllib fails (exit 1) on a refused connection or a non-2xx status.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["python", "-m", "app.wine", "--host", "0.0.0.0", "--port", "8000"]
