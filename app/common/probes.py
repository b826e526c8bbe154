"""Liveness, the same for both services: the process answers. Readiness is each service's own (its model)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["probes"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}
