"""The served model: an ONNX file and its model card, with an explicit lifecycle.

Like a KServe model, it is created unloaded, :meth:`WineModel.load` reads the
artifacts, and ``ready`` tells the readiness probe whether it may take traffic.
A missing or broken artifact leaves the process alive but not ready, so the
orchestrator (or a learner) sees a 503 that says why instead of a crash loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path

import numpy as np

from app.wine import onnx_session
from app.wine.errors import ModelNotReadyError
from app.wine.features import FEATURE_NAMES, MODEL_INPUTS, QUALITY_RANGE

log = logging.getLogger(__name__)

_measurements = attrgetter(*FEATURE_NAMES)


def encode(wines: Sequence) -> np.ndarray:
    """Rows of the model input, in :data:`MODEL_INPUTS` order, from validated wines."""
    return np.array(
        [(*_measurements(wine), 1.0 if wine.color == "red" else 0.0) for wine in wines], dtype=np.float32
    )


class WineModel:
    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.card: dict | None = None
        self.load_error: str | None = None
        self._session = None

    @property
    def ready(self) -> bool:
        return self._session is not None

    @property
    def version(self) -> str:
        if self.card is None:
            raise ModelNotReadyError(self.not_ready_reason())
        return self.card["version"]

    def not_ready_reason(self) -> str:
        return self.load_error or "the model has not been loaded yet"

    def load(self) -> bool:
        """Read the card and the ONNX file; on failure, record why and stay unready."""
        card_path = self.model_dir / "model_card.json"
        started = time.perf_counter()
        try:
            card = json.loads(card_path.read_text())
            model_path = self.model_dir / card.get("model_file", "model.onnx")
            payload = model_path.read_bytes()
            if card.get("model_sha256") and onnx_session.digest(payload) != card["model_sha256"]:
                raise ValueError(f"{model_path} does not match the checksum in its model card")
            if card.get("inputs") != list(MODEL_INPUTS):
                expected = card.get("inputs")
                raise ValueError(f"the model expects inputs {expected}, the service sends {list(MODEL_INPUTS)}")
            session = onnx_session.session(payload, threads=self.threads)
        except FileNotFoundError as error:
            self.load_error = (
                f"no model at {self.model_dir} ({error.filename} is missing): "
                "train one with `python -m training` or set WINE_MODEL_DIR"
            )
        except Exception as error:  # noqa: BLE001 - a corrupt artifact must not kill the process
            self.load_error = f"cannot load the model from {self.model_dir}: {type(error).__name__}: {error}"
        else:
            self.card, self._session, self.load_error = card, session, None
            seconds = round(time.perf_counter() - started, 3)
            log.info("model loaded", extra={"version": card["version"], "seconds": seconds})
            return True
        log.error("model not loaded", extra={"reason": self.load_error})
        return False

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Quality scores for the rows of ``X``, clipped to the 0-10 scale."""
        if self._session is None:
            raise ModelNotReadyError(self.not_ready_reason())
        return np.clip(onnx_session.predict(self._session, X), *QUALITY_RANGE)
