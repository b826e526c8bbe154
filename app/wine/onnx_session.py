"""Run the wine model's ONNX file with onnxruntime.

ONNX is data, not code: loading a model file cannot execute anything, unlike a
pickle. The same :func:`session` settings serve in the API and in training's
parity and latency checks (``training.onnx_export``), so what training measures
is what serving does. Converting a model to ONNX is training's job: the service
only runs one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME = "wine"


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
    """The model file's SHA-256: its model card records it, the service checks it before serving."""
    return hashlib.sha256(payload).hexdigest()
