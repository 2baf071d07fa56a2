"""``/events``: new interactions, durable before they are acknowledged."""

from __future__ import annotations

from fastapi import APIRouter, status

from recsys.serving.deps import ServiceDep
from recsys.serving.schemas import EventIn, EventReceipt

router = APIRouter(tags=["events"])


@router.post("/events", status_code=status.HTTP_201_CREATED)
def post_event(body: EventIn, service: ServiceDep) -> EventReceipt:
    """Record an interaction; the user's next recommendation reflects it.

    The event is appended to the log and fsync-ed before this answers, so an accepted
    event survives a crash or restart. Unknown users and items are accepted and logged;
    ``known_item: false`` says the model cannot use the item until it is retrained.
    """
    return service.add_event(body)
