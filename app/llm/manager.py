"""Swapping models: validate the id, load in a background thread, swap atomically.

The :class:`ModelManager` ties the pure :class:`~app.llm.lifecycle.Lifecycle`
to the loader and the metrics, the way KServe's model server ties a model's
``load()`` to its ``ready`` flag. A request for a swap returns at once (the
API's 202); the load runs in a thread of its own; its outcome is a lifecycle
transition, so ``GET /status`` and the metrics always agree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app.llm.config import Settings
from app.llm.errors import InvalidModelIdError, ModelNotReadyError, SwapInProgressError
from app.llm.lifecycle import Lifecycle, LoadInProgressError, Snapshot, State
from app.llm.loader import LoadedModel, ModelLoadError, load_model
from app.llm.metrics import LLMMetrics
from app.llm.sources import ModelSource, resolve_source

log = logging.getLogger(__name__)

Loader = Callable[[ModelSource], LoadedModel]


class ModelManager:
    def __init__(self, settings: Settings, metrics: LLMMetrics, loader: Loader | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.lifecycle: Lifecycle[LoadedModel] = Lifecycle()
        self.lifecycle.subscribe(metrics.on_lifecycle)
        self._loader = loader or self._load_with_settings
        self._thread: threading.Thread | None = None

    def _load_with_settings(self, source: ModelSource) -> LoadedModel:
        s = self.settings
        if s.torch_threads is not None:
            import torch

            torch.set_num_threads(s.torch_threads)
        return load_model(source, dtype=s.dtype, offline=s.hub_offline, hub_timeout_s=s.hub_timeout_s)

    def resolve(self, model_id: str, revision: str | None = None) -> ModelSource:
        return resolve_source(model_id, self.settings.models_dir, revision)

    def swap(self, model_id: str, revision: str | None = None) -> Snapshot[LoadedModel]:
        """Start loading ``model_id`` in the background and return the LOADING snapshot.

        Raises :class:`InvalidModelIdError` (422) for an id it will not load and
        :class:`SwapInProgressError` (409) while another load runs.
        """
        source = self.resolve(model_id, revision)
        try:
            snapshot = self.lifecycle.begin_load(model_id)
        except LoadInProgressError as error:
            raise SwapInProgressError(str(error), state=State.LOADING.value) from error
        log.info("loading model %s (%s)", model_id, source.kind, extra={"model_id": model_id, "source": source.kind})
        self._thread = threading.Thread(target=self._load, args=(source,), name=f"load:{model_id}", daemon=True)
        self._thread.start()
        return snapshot

    def start_default(self) -> None:
        """Load ``LLM_DEFAULT_MODEL`` in the background; a refused id ends FAILED (the service still starts)."""
        model_id = self.settings.default_model
        if not model_id:
            log.info("LLM_DEFAULT_MODEL is empty: NOT_DEPLOYED until POST /model")
            return
        try:
            self.swap(model_id)
        except SwapInProgressError:
            log.info("LLM_DEFAULT_MODEL: a load is already in progress (the app started again)")
        except InvalidModelIdError as error:
            log.error("LLM_DEFAULT_MODEL refused: %s", error.message)
            self.lifecycle.begin_load(model_id)
            self.lifecycle.fail(model_id, f"LLM_DEFAULT_MODEL: {error.message}")
            self.metrics.observe_load(0.0, ok=False)

    def _load(self, source: ModelSource) -> None:
        started = time.perf_counter()
        try:
            model = self._loader(source)
        except ModelLoadError as error:
            self._failed(source, str(error), started)
        except Exception as error:  # a bug or an exotic failure must still end the LOADING state
            log.exception("loading %s crashed", source.model_id)
            self._failed(source, f"cannot load {source.model_id!r}: {type(error).__name__}: {error}", started)
        else:
            seconds = time.perf_counter() - started
            self.metrics.observe_load(seconds, ok=True)
            self.lifecycle.succeed(model, source.model_id)
            # The replaced model is freed by reference counting once its last request ends (no
            # gc.collect() here: with torch loaded, a full collection stalls every thread for ~0.3 s).
            log.info("model %s serving (loaded in %.2f s)", source.model_id, seconds,
                     extra={"model_id": source.model_id, "seconds": seconds})

    def _failed(self, source: ModelSource, message: str, started: float) -> None:
        self.metrics.observe_load(time.perf_counter() - started, ok=False)
        self.lifecycle.fail(source.model_id, message)
        log.error("loading %s failed: %s", source.model_id, message, extra={"model_id": source.model_id})

    def wait(self, timeout: float | None = None) -> Snapshot[LoadedModel]:
        """Wait for the current load to end (for scripts and tests; the API never blocks on it)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.lifecycle.snapshot()

    def serving_or_503(self) -> LoadedModel:
        """The model that answers now, or a 503 that says the state (and Retry-After while loading)."""
        model = self.lifecycle.serving
        if model is not None:
            return model
        snapshot = self.lifecycle.snapshot()
        raise ModelNotReadyError(
            not_ready_reason(snapshot), state=snapshot.state.value,
            retry_after_s=self.settings.retry_after_s if snapshot.state is State.LOADING else None,
        )


def not_ready_reason(snapshot: Snapshot) -> str:
    if snapshot.state is State.LOADING:
        return f"no model is serving yet: {snapshot.loading_model_id!r} is loading (state LOADING)"
    if snapshot.state is State.FAILED and snapshot.last_error is not None:
        return f"no model is serving: the last load failed (state FAILED): {snapshot.last_error.message}"
    return "no model is deployed (state NOT_DEPLOYED); POST /model with a model_id"
