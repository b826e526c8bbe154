"""Request and response schemas of the wine API.

The 11 measurements are generated from :data:`app.wine.features.FEATURES`, so
the bounds, units and examples in the OpenAPI document are the ones training
and the model card use. Validation is strict: numbers must be JSON numbers
(no ``"7.4"`` strings, no booleans), finite (no NaN or Infinity), inside their
physical bounds, and no field may be missing or unknown.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from app.common.schemas import ErrorDetail, ErrorResponse
from app.wine.features import FEATURES, QUALITY_RANGE

__all__ = ["EXAMPLE_WINE", "BatchPredictionResponse", "Color", "ErrorDetail", "ErrorResponse", "Prediction",
           "PredictionResponse", "Quality", "WineInput", "batch_request_model"]

Color = Literal["red", "white"]
EXAMPLE_WINE = {**{f.name: f.example for f in FEATURES}, "color": "red"}


class _WineBase(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, json_schema_extra={"examples": [EXAMPLE_WINE]}
    )

    @field_validator("total_sulfur_dioxide", check_fields=False)
    @classmethod
    def _total_includes_free(cls, total: float, info: ValidationInfo) -> float:
        free = info.data.get("free_sulfur_dioxide")
        if free is not None and total < free:
            raise PydanticCustomError(
                "free_exceeds_total",
                "must be at least free_sulfur_dioxide ({free}): free SO2 is part of the total",
                {"free": free},
            )
        return total


def _measurement(feature) -> tuple[type, object]:
    return (
        float,
        Field(
            ge=feature.minimum, le=feature.maximum, allow_inf_nan=False,
            title=feature.name, description=f"{feature.description} Unit: {feature.unit}.",
            examples=[feature.example], json_schema_extra={"unit": feature.unit},
        ),
    )


WineInput = create_model(
    "WineInput",
    __base__=_WineBase,
    __doc__="One wine: 11 physicochemical measurements and its colour.",
    **{feature.name: _measurement(feature) for feature in FEATURES},
    color=(Color, Field(description="Wine colour: the model was trained on both.", examples=["red"])),
)


def batch_request_model(max_size: int) -> type[BaseModel]:
    """The batch schema with the configured maximum, so OpenAPI states the real limit."""
    return create_model(
        "BatchPredictionRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"instances": [EXAMPLE_WINE]}]}),
        __doc__=f"Up to {max_size} wines, predicted in one call.",
        instances=(
            Annotated[list[WineInput], Field(min_length=1, max_length=max_size)],
            Field(description=f"1 to {max_size} wines (WINE_MAX_BATCH_SIZE)."),
        ),
    )


Quality = Annotated[
    float,
    Field(ge=QUALITY_RANGE[0], le=QUALITY_RANGE[1], description="Predicted sensory quality, 0 (bad) to 10 (excellent).",
          examples=[5.4]),
]


class Prediction(BaseModel):
    quality: Quality


class PredictionResponse(BaseModel):
    quality: Quality
    model_version: str = Field(description="Version of the model that answered (see GET /model).")


class BatchPredictionResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One prediction per instance, in request order.")
    model_version: str
