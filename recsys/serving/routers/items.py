"""``/similar-items``: items like a given item."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from recsys.serving.deps import ServiceDep
from recsys.serving.schemas import MAX_ID_LENGTH, MAX_K, GenresResponse, SimilarItemsResponse

router = APIRouter(tags=["items"])


@router.get(
    "/similar-items/{item_id:path}",
    response_model=SimilarItemsResponse,
    response_model_exclude_none=True,
)
async def similar_items(
    item_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    details: bool = False,
) -> JSONResponse:
    """The ``k`` items most similar to ``item_id``; popular items for an unknown item."""
    return JSONResponse(await service.run_model(service.similar_items, item_id, k, details=details))


@router.get("/genres")
async def genres(service: ServiceDep) -> GenresResponse:
    """Genre names of the item catalogue, usable in ``filters``."""
    return service.genres()
