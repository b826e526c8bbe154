"""Typed dependencies: routes ask for what they need, the app state provides it.

``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread.
Routes ask for one :class:`Serving` rather than its parts (each dependency
costs FastAPI a little on every request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.llm.config import Settings
from app.llm.errors import ModelNotReadyError
from app.llm.generation import Generator
from app.llm.loader import LoadedModel
from app.llm.manager import ModelManager
from app.llm.metrics import LLMMetrics


@dataclass(frozen=True)
class Serving:
    settings: Settings
    manager: ModelManager
    generator: Generator
    metrics: LLMMetrics

    def model_for_completion(self) -> LoadedModel:
        """The model serving now, for a completion; none serving is a 503 counted as ``unavailable``."""
        try:
            return self.manager.serving_or_503()
        except ModelNotReadyError:
            self.metrics.completion("unavailable")
            raise


async def get_serving(request: Request) -> Serving:
    return request.app.state.serving


ServingDep = Annotated[Serving, Depends(get_serving)]
