"""``/admin``: operations behind the admin API key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from recsys.serving.deps import AdminDep, ServiceDep
from recsys.serving.schemas import ReloadRequest, ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


@router.post("/reload", responses={409: {"description": "artifact refused or reload busy"}})
async def reload(service: ServiceDep, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load an artifact (default: the current directory again) and swap it in atomically.

    Requests in flight finish on the old model. A damaged or missing artifact is refused
    with 409 and the old model keeps serving.
    """
    target = Path(body.artifact) if body is not None and body.artifact else None
    return await run_in_threadpool(service.reload, target)
