"""The wine service's domain exceptions; ``app.common.errors`` maps them to the shared JSON shape.

All the wine service raises is what both services raise alike (no model yet: 503; the body guard's 413 and
415), defined once in ``app.common.errors`` and re-exported here, so the service's modules import their
errors from one place, as the LLM service's do from ``app.llm.errors``.
"""

from __future__ import annotations

from app.common.errors import ModelNotReadyError, PayloadTooLargeError, UnsupportedMediaTypeError, error_body

__all__ = ["ModelNotReadyError", "PayloadTooLargeError", "UnsupportedMediaTypeError", "error_body"]
