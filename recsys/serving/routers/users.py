"""``/users``: user ids and histories (for the demo page and debugging)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from recsys.serving.deps import ServiceDep
from recsys.serving.schemas import MAX_ID_LENGTH, HistoryResponse, UsersResponse

router = APIRouter(prefix="/users", tags=["users"])


@router.get("")
async def list_users(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> UsersResponse:
    """A page of the artifact's user ids, in vocabulary order."""
    return service.users(limit, offset)


@router.get("/{user_id:path}/history", response_model_exclude_none=True)
async def user_history(
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> HistoryResponse:
    """The user's online events (newest first) and training items, with titles and genres."""
    return service.history(user_id, limit)
