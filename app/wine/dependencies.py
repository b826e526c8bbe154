"""Typed dependencies: routes ask for what they need, the app state provides it.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a
worker thread, which costs more than the lookup itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.wine.config import Settings
from app.wine.metrics import WineMetrics
from app.wine.model import WineModel


async def get_model(request: Request) -> WineModel:
    return request.app.state.model


async def get_metrics(request: Request) -> WineMetrics:
    return request.app.state.metrics


async def get_settings_from_app(request: Request) -> Settings:
    return request.app.state.settings


ModelDep = Annotated[WineModel, Depends(get_model)]
MetricsDep = Annotated[WineMetrics, Depends(get_metrics)]
SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]
