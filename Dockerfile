# syntax=docker/dockerfile:1
# The wine-quality service image. Line-by-line explanation: docs/container.md.
#
#   python -m app.wine.train --output artifacts/wine      # the model is baked into the image
#   DOCKER_BUILDKIT=1 docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt \
#       --target wine -t wine-service:latest .
#
# The --secret is optional: it lets pip trust a corporate proxy's CA without storing the bundle in a layer.

# Every stage starts from the same interpreter, so the venv built in one runs in the others.
ARG PYTHON_IMAGE=python:3.11-slim

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
COPY workshop/ workshop/
# Runtime dependencies only (no dev extra: no pytest, no jupyter), at the tested versions.
# The pip cache lives in a cache mount, not in a layer; the CA bundle is used only when the secret is given.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,required=false,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca; fi \
    && pip install -c constraints.txt .
# Byte-compile the service code once, here: the running container must not write anything.
RUN python -m compileall -q --invalidation-mode checked-hash app

# ---------------------------------------------------------------- llm: STUB, filled in by the LLM-serving issue
# Same base, venv with the `llm` extra. Nothing serves an LLM yet: the command says so and exits.
FROM builder AS llm-builder
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,required=false,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca; fi \
    && pip install -c constraints.txt ".[llm]"

FROM base AS llm
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv
COPY --from=llm-builder /opt/venv /opt/venv
COPY --from=llm-builder /src/app /srv/app
USER 10001:10001
CMD ["python", "-c", "raise SystemExit('llm image: stub stage, not implemented yet')"]

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
CMD ["uvicorn", "app.wine.api:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]
