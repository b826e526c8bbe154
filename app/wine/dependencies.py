"""Typed dependencies: routes ask for what they need, the app state provides it.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a
worker thread, which costs more than the lookup itself. The predict routes ask
for one :class:`Serving` rather than the model and the metrics separately:
each dependency costs FastAPI about 10 µs a request, a tenth of a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.wine.metrics import WineMetrics
from app.wine.model import WineModel


@dataclass(frozen=True)
class Serving:
    """What a prediction needs: the model and the metrics it reports to."""

    model: WineModel
    metrics: WineMetrics


async def get_serving(request: Request) -> Serving:
    return request.app.state.serving


async def get_model(request: Request) -> WineModel:
    return request.app.state.model


ServingDep = Annotated[Serving, Depends(get_serving)]
ModelDep = Annotated[WineModel, Depends(get_model)]
