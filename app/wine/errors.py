"""The wine service's domain exceptions; ``app.common.errors`` maps them to the shared JSON shape."""

from __future__ import annotations

from app.common.errors import PayloadTooLargeError, ServiceError, UnsupportedMediaTypeError, error_body

__all__ = ["ModelNotReadyError", "PayloadTooLargeError", "UnsupportedMediaTypeError", "WineServiceError",
           "error_body"]


class WineServiceError(ServiceError):
    """Base of the wine service's own errors."""


class ModelNotReadyError(WineServiceError):
    status_code = 503
    kind = "model_not_ready"
