"""Request and response bodies of the HTTP API (the contract in ARCHITECTURE.md).

Ids are opaque: a JSON string or integer in requests; in responses, ids take the type of
the artifact's vocabulary (JSON numbers for an integer vocabulary such as MovieLens, strings
otherwise; an unknown id is echoed as sent). See :mod:`recsys.serving.ids`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

__all__ = [
    "MAX_BATCH",
    "MAX_ID_LENGTH",
    "MAX_ITEMS_PER_LIST",
    "MAX_K",
    "BatchRequest",
    "BatchResponse",
    "EventIn",
    "EventReceipt",
    "GenresResponse",
    "HistoryItem",
    "HistoryResponse",
    "ItemFilters",
    "RecommendRequest",
    "RecommendResponse",
    "RecommendedItem",
    "ReloadRequest",
    "ReloadResponse",
    "SimilarItemsResponse",
    "Status",
    "UsersResponse",
]

#: Upper bound of ``k`` on every endpoint.
MAX_K = 100
#: Upper bound of the number of requests in one ``POST /recommend/batch``.
MAX_BATCH = 100
#: Upper bound of ``recent_items`` and ``exclude_items`` lengths.
MAX_ITEMS_PER_LIST = 500
#: Longest accepted id string.
MAX_ID_LENGTH = 256

_INT64 = {"ge": -(2**63), "le": 2**63 - 1}

#: An opaque id as a client sends it: a non-empty string or a 64-bit integer (never a bool
#: or a float).
IdIn = (
    Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_ID_LENGTH)]
    | Annotated[StrictInt, Field(**_INT64)]
)
#: An id in a response: the vocabulary's type (see the module docstring).
IdOut = str | int

K = Annotated[int, Field(ge=1, le=MAX_K, description=f"How many items (1..{MAX_K}).")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ItemFilters(_Request):
    """Simple filters on item attributes.

    ``genres``: keep items with at least one of these genres. ``exclude_genres``: drop
    items with any of these. Genre names must exist in the artifact's catalogue.
    """

    genres: list[Annotated[str, StringConstraints(max_length=200)]] | None = Field(
        default=None, max_length=50
    )
    exclude_genres: list[Annotated[str, StringConstraints(max_length=200)]] | None = Field(
        default=None, max_length=50
    )


class RecommendRequest(_Request):
    """``POST /recommend``: one user's recommendations, optionally with fresh context."""

    user_id: IdIn
    k: K = 10
    recent_items: list[IdIn] = Field(
        default_factory=list,
        max_length=MAX_ITEMS_PER_LIST,
        description="Items the user just interacted with (not yet sent as events); they "
        "are folded into the user's history and excluded from the answer.",
    )
    exclude_items: list[IdIn] = Field(
        default_factory=list, max_length=MAX_ITEMS_PER_LIST, description="Never return these."
    )
    filters: ItemFilters | None = None
    model: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="Use this component instead of the pipeline's primary."
    )
    details: bool = Field(default=False, description="Add item titles and genres.")


class RecommendedItem(BaseModel):
    """One recommended item."""

    item_id: IdOut
    score: float
    rank: int
    sources: list[str] = Field(description="Candidate sources that proposed the item.")
    title: str | None = None
    genres: list[str] | None = None


class RecommendResponse(BaseModel):
    """Recommendations for one user.

    ``strategy`` says what answered: ``"personalized"`` for users of the training data (with
    any fresh events and ``recent_items`` folded in), ``"fold_in"`` for users unknown to the
    artifact whose events or ``recent_items`` hold at least one known item (a fold-in of
    that history), ``"cold_start"`` for users with no usable history (the popularity list).
    """

    user_id: IdOut
    items: list[RecommendedItem]
    strategy: str
    model_version: str


class BatchRequest(_Request):
    """``POST /recommend/batch``: several requests answered in order."""

    requests: list[RecommendRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResponse(BaseModel):
    """Answers of a batch, in request order."""

    results: list[RecommendResponse]
    model_version: str


class SimilarItemsResponse(BaseModel):
    """Items similar to one item; ``strategy`` ``"similar"`` or ``"cold_start"`` (popular
    items, for an item unknown to the artifact)."""

    item_id: IdOut
    items: list[RecommendedItem]
    strategy: str
    model_version: str


class EventIn(_Request):
    """``POST /events``: one interaction.

    ``timestamp`` is Unix seconds or an ISO-8601 string (default: when it was received).
    """

    user_id: IdIn
    item_id: IdIn
    timestamp: Annotated[StrictInt, Field(ge=0, le=2**40)] | datetime | None = None
    rating: float | None = Field(default=None, ge=-1e6, le=1e6, allow_inf_nan=False)

    @field_validator("timestamp")
    @classmethod
    def _no_naive_overflow(cls, v: int | datetime | None) -> int | datetime | None:
        if isinstance(v, datetime) and not (1970 <= v.year <= 9999):
            raise ValueError("timestamp must be between 1970 and 9999")
        return v

    def unix_seconds(self, default: float) -> int:
        """``timestamp`` as Unix seconds (``default`` when absent)."""
        if self.timestamp is None:
            return math.floor(default)
        if isinstance(self.timestamp, datetime):
            ts = self.timestamp
            if ts.tzinfo is None:  # a naive time is taken as UTC, never as server-local
                ts = ts.replace(tzinfo=UTC)
            return math.floor(ts.timestamp())
        return self.timestamp


class EventReceipt(BaseModel):
    """The durable receipt of an accepted event."""

    accepted: bool = True
    user_id: IdOut
    item_id: IdOut
    known_user: bool
    known_item: bool = Field(description="False: logged, but the item is not in the model.")
    n_user_events: int = Field(description="Events of this user held for fold-in.")


class HistoryItem(BaseModel):
    """One item of a user's history."""

    item_id: IdOut
    source: str = Field(description='"training" (the artifact) or "event" (online).')
    title: str | None = None
    genres: list[str] | None = None


class HistoryResponse(BaseModel):
    """A user's training history and online events (for the demo page)."""

    user_id: IdOut
    known: bool
    n_items: int
    items: list[HistoryItem]
    model_version: str


class UsersResponse(BaseModel):
    """A page of the artifact's user ids."""

    user_ids: list[IdOut]
    total: int


class GenresResponse(BaseModel):
    """Genre names usable in ``filters``."""

    genres: list[str]


class ReloadRequest(_Request):
    """``POST /admin/reload``: optionally a new artifact directory (default: the current)."""

    artifact: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None


class ReloadResponse(BaseModel):
    """A completed reload."""

    model_version: str
    previous_version: str
    artifact: str
    load_seconds: float


class Status(BaseModel):
    """Liveness / readiness."""

    status: str
    model_version: str | None = None
