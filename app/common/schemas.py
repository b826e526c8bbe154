"""The error shape both services document in OpenAPI; :func:`app.common.errors.error_body` builds its JSON."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    field: str = Field(description="Where the problem is, e.g. `instances[2].alcohol`.")
    reason: str
    type: str = ""


class ErrorResponse(BaseModel):
    error: str = Field(description="Kind of error, e.g. `validation_error`, `model_not_ready`.")
    message: str
    details: list[ErrorDetail] = []
