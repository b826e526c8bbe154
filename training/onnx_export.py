"""Export a fitted scikit-learn regressor to ONNX, the file the service runs.

The graph's input is named as the service feeds it (``app.wine.onnx_session.INPUT_NAME``), and training
checks the export with the service's own session settings, so parity and latency are measured as served.
"""

from __future__ import annotations

from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from app.wine.onnx_session import INPUT_NAME


class ExportError(RuntimeError):
    """The converter cannot express this model in ONNX."""


def to_onnx(model, n_features: int) -> bytes:
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
