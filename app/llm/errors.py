"""Domain exceptions of the LLM service; ``app.common.errors`` maps them to responses.

The JSON shape of every error is the one both services share (``app.common.errors``), plus ``"state"``
when the lifecycle is the reason (503, 409), so a client knows whether to wait (LOADING) or to act
(NOT_DEPLOYED, FAILED). ``ModelNotReadyError`` (no model serves: NOT_DEPLOYED, the first LOADING, or a first
load that FAILED) is the one both services raise, from ``app.common.errors``, re-exported here.
"""

from __future__ import annotations

from app.common.errors import (
    ModelNotReadyError,
    PayloadTooLargeError,
    ServiceError,
    UnsupportedMediaTypeError,
    error_body,
)

__all__ = ["ControlTokenError", "GenerationError", "InputTooLongError", "InvalidModelIdError", "LLMServiceError",
           "ModelNotReadyError", "OverloadedError", "PayloadTooLargeError", "SwapInProgressError",
           "UnsupportedMediaTypeError", "error_body"]


class LLMServiceError(ServiceError):
    """Base of the LLM service's own errors (``state`` adds the lifecycle state to the body)."""


class OverloadedError(LLMServiceError):
    """Every generation slot is busy and the queue is full: come back later (Retry-After)."""

    status_code = 429
    kind = "overloaded"


class InvalidModelIdError(LLMServiceError):
    """A model_id that is neither a folder under the models directory nor a hub id."""

    status_code = 422
    kind = "invalid_model_id"

    def __init__(self, model_id: str, reason: str, field: str = "model_id") -> None:
        super().__init__(
            f"{field} {model_id!r} is refused: {reason}",
            [{"field": field, "reason": reason, "type": "invalid_model_id"}],
        )


class InputTooLongError(LLMServiceError):
    """The prompt, once the chat template is applied, has more tokens than allowed."""

    status_code = 422
    kind = "validation_error"


class ControlTokenError(LLMServiceError):
    """A message spells a control token that this model's tokenizer cannot encode as plain text."""

    status_code = 422
    kind = "validation_error"


class SwapInProgressError(LLMServiceError):
    status_code = 409
    kind = "load_in_progress"


class GenerationError(LLMServiceError):
    """The model raised while generating; the message says what, the log has the traceback."""

    status_code = 500
    kind = "generation_error"
