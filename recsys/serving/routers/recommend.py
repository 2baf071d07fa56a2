"""``/recommend``: one user, a user by path, and batches.

The service answers with JSON-ready dicts that the endpoints send as they are; the
response models below document the shapes in OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from recsys.serving.deps import ServiceDep
from recsys.serving.schemas import (
    MAX_ID_LENGTH,
    MAX_K,
    BatchRequest,
    BatchResponse,
    RecommendRequest,
    RecommendResponse,
)

router = APIRouter(prefix="/recommend", tags=["recommend"])


def _respond(request: Request, payload: dict[str, Any]) -> JSONResponse:
    request.state.log_extra = f" strategy={payload['strategy']} n_items={len(payload['items'])}"
    return JSONResponse(payload)


@router.post("", response_model=RecommendResponse, response_model_exclude_none=True)
async def recommend(body: RecommendRequest, service: ServiceDep, request: Request) -> JSONResponse:
    """Top-``k`` items for a user, with optional fresh context and filters.

    Unknown users get ``strategy: "cold_start"`` (never an error). ``recent_items`` are
    folded into the user's history; ``exclude_items`` are never returned.
    """
    return _respond(request, await service.recommend_async(body))


@router.post("/batch", response_model=BatchResponse, response_model_exclude_none=True)
async def recommend_batch(body: BatchRequest, service: ServiceDep) -> JSONResponse:
    """Several recommendation requests (at most 100) answered in order, from one model."""
    return JSONResponse(await service.run_model(service.recommend_batch, list(body.requests)))


@router.get("/{user_id:path}", response_model=RecommendResponse, response_model_exclude_none=True)
async def recommend_user(
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    service: ServiceDep,
    request: Request,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    details: bool = False,
) -> JSONResponse:
    """Top-``k`` items for ``user_id`` (an opaque id; see the API description)."""
    req = RecommendRequest(user_id=user_id, k=k, details=details)
    return _respond(request, await service.recommend_async(req))
