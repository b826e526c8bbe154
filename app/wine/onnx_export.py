"""Export a fitted scikit-learn regressor to ONNX and run it with onnxruntime.

ONNX is data, not code: loading a model file cannot execute anything, unlike a
pickle. The same :func:`session` settings serve in the API and in training's
parity and latency checks, so what training measures is what serving does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME = "wine"


class ExportError(RuntimeError):
    """The converter cannot express this model in ONNX."""


def to_onnx(model, n_features: int) -> bytes:
    # Imported here: the service only runs models, it never converts them.
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    try:
        onnx_model = convert_sklearn(
            model, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))]
        )
    except Exception as error:  # skl2onnx raises bare RuntimeError/TypeError/ValueError for unsupported models
        raise ExportError(_root_cause(error)) from error
    # skl2onnx names the graph with a random UUID; a fixed name makes the bytes, and so
    # the content-addressed model version, reproducible for the same training run.
    onnx_model.graph.name = "wine_quality"
    return onnx_model.SerializeToString()


def _root_cause(error: BaseException, limit: int = 300) -> str:
    """The innermost error, shortened: skl2onnx wraps the real reason in a dump of the whole tree."""
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    return f"{type(error).__name__}: {error}"[:limit]


def session(model: bytes | Path, threads: int = 1) -> ort.InferenceSession:
    """An inference session pinned to ``threads`` intra-op threads (the container's CPU limit)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def predict(session: ort.InferenceSession, X: np.ndarray) -> np.ndarray:
    """Predictions as a flat float64 array, one per row of ``X``."""
    (output,) = session.run(None, {INPUT_NAME: np.ascontiguousarray(X, dtype=np.float32)})
    return np.asarray(output, dtype=np.float64).reshape(-1)


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
