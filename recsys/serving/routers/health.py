"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from recsys.serving.deps import ServiceDep
from recsys.serving.metrics import CONTENT_TYPE
from recsys.serving.schemas import Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model_exclude_none=True)
async def healthz() -> Status:
    """Liveness: the process answers."""
    return Status(status="ok")


@router.get("/readyz", responses={503: {"model": Status}})
async def readyz(service: ServiceDep) -> JSONResponse:
    """Readiness: 200 once a model is loaded, else 503."""
    version = service.model_version
    if version is None:
        return JSONResponse(Status(status="loading").model_dump(), status_code=503)
    return JSONResponse(Status(status="ready", model_version=version).model_dump())


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> PlainTextResponse:
    """Prometheus text: requests and latency per route, strategies, cold-start ratio, model."""
    return PlainTextResponse(service.render_metrics(), media_type=CONTENT_TYPE)
