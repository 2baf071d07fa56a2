"""The one recommend path: a block of queries in, one result type out.

Every caller — :meth:`recsys.pipeline.Pipeline.recommend` and its thin wrappers, the
online service (single requests, micro-batches, ``/recommend/batch``), the batch job and
the evaluator — describes what it wants as :class:`RecommendQueries` (known users, or
histories to fold in, with per-row exclusions, allow sets and attribute-filter masks) and
gets :class:`Recommendations` back from :func:`recommend_block`. Filters and exclusions
are applied here, in one place, by one pass over each row's ranked list.

A row's list never depends on the other rows of the block: rows are answered in groups
that share a list width, and the models' lists are deterministic under ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from recsys.errors import ConfigError

if TYPE_CHECKING:
    from recsys.pipeline import Pipeline

__all__ = [
    "COLD_START",
    "FOLD_IN",
    "PERSONALIZED",
    "RecommendQueries",
    "Recommendations",
    "recommend_block",
]

#: ``strategy`` of a row: what answered it.
PERSONALIZED = "personalized"  # a user of the training data (extra history folded in)
FOLD_IN = "fold_in"  # a user unknown to the artifact, from the history the query brings
COLD_START = "cold_start"  # no usable history: the popularity list

COLD_START_SOURCE = "popular"
HYBRID = "hybrid"
BLEND = "blend"

_Rows = Sequence[NDArray[np.int64] | None]


@dataclass(frozen=True)
class RecommendQueries:
    """A block of recommend queries over the artifact's vocabularies (indices, not ids).

    Stability: provisional

    Attributes
    ----------
    user_idx : (n,) int64
        User indices; ``-1`` for a user unknown to the artifact.
    history
        Per row, item indices to fold in (oldest first: the last ones are the most recent),
        added to a known user's training items; ``None`` (or no list) for a plain query,
        answered from the model's stored user. Unknown item indices (``-1``) are skipped.
    exclude
        Per row, item indices to leave out of the list (besides the seen ones).
    allow
        Per row, the only item indices the list may hold; ``None``: every item.
    blocked
        Per row, a ``(n_items,) bool`` mask of items an attribute filter removes
        (e.g. :meth:`recsys.serving.catalog.ItemCatalog.blocked`); ``None``: none.
    """

    user_idx: NDArray[np.int64]
    history: _Rows | None = None
    exclude: _Rows | None = None
    allow: _Rows | None = None
    blocked: Sequence[NDArray[np.bool_] | None] | None = None
    _n: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        users = np.atleast_1d(np.asarray(self.user_idx, dtype=np.int64))
        object.__setattr__(self, "user_idx", users)
        object.__setattr__(self, "_n", len(users))
        for name in ("history", "exclude", "allow", "blocked"):
            rows = getattr(self, name)
            if rows is not None and len(rows) != self._n:
                raise ConfigError(
                    f"RecommendQueries: {name} has {len(rows)} rows for {self._n} users"
                )

    def __len__(self) -> int:
        return self._n

    @classmethod
    def for_users(cls, user_idx: ArrayLike) -> RecommendQueries:
        """Plain queries of user indices (``-1``: unknown)."""
        return cls(np.atleast_1d(np.asarray(user_idx, dtype=np.int64)))

    @classmethod
    def for_histories(
        cls,
        histories: Sequence[NDArray[np.int64]],
        *,
        exclude: _Rows | None = None,
    ) -> RecommendQueries:
        """Fold-in queries of unknown users who bring item-index histories."""
        return cls(np.full(len(histories), -1, np.int64), list(histories), exclude=exclude)

    def _row(self, name: str, r: int) -> Any:
        rows = getattr(self, name)
        return None if rows is None else rows[r]


@dataclass(frozen=True)
class Recommendations:
    """One result type, whichever path asked: ``k`` items per row, best first.

    Stability: provisional

    Attributes
    ----------
    items : (n, k) int64
        Item indices; ``-1`` pads rows with fewer eligible items.
    scores : (n, k) float32
        NaN at the padding.
    sources : (n, k) object
        Each item's sources, ``|``-separated (``"covisit|itemknn@recent"`` for the hybrid,
        the component's name otherwise, ``"popular"`` for the cold-start list); ``None`` pads.
    strategy : (n,) object
        :data:`PERSONALIZED`, :data:`FOLD_IN` or :data:`COLD_START` per row.
    """

    items: NDArray[np.int64]
    scores: NDArray[np.float32]
    sources: NDArray[np.object_]
    strategy: NDArray[np.object_]

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def row(self, r: int) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.object_]]:
        """Row ``r`` without its padding: ``(items, scores, sources)``."""
        keep = self.items[r] >= 0
        return self.items[r][keep], self.scores[r][keep], self.sources[r][keep]


def recommend_block(
    pipeline: Pipeline,
    queries: RecommendQueries,
    k: int,
    *,
    model: str | None = None,
    exclude_seen: bool = True,
) -> Recommendations:
    """Top-``k`` lists of a block of queries: the one recommend path.

    Parameters
    ----------
    pipeline
        The loaded artifact.
    queries
        The block.
    k
        Items per row.
    model
        ``None``: the pipeline's primary component (the hybrid by default); ``"blend"`` or
        a component name otherwise.
    exclude_seen
        Leave each known user's training items out (fold-in rows always leave their
        history out).

    Returns
    -------
    Recommendations
        Rows in query order. Plain rows of known users get the model's list; rows with a
        history are folded in (the training items of a known user plus the history; a
        component that cannot fold in answers with the popularity list); rows with no
        usable history get the popularity list. Excluded, disallowed and filtered items
        are dropped by one pass over each row's ranked list, fetched long enough that
        ``k`` remain when the catalogue has them.

    Raises
    ------
    ConfigError
        ``k < 1`` or a component the artifact does not have.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    name, _ = pipeline._model(model)
    n = len(queries)
    n_items = len(pipeline.item_map)
    users = queries.user_idx
    known = (users >= 0) & (users < len(pipeline.user_map))
    fold = np.array([queries._row("history", r) is not None for r in range(n)], dtype=bool)
    masks = [_row_mask(queries, r, n_items) for r in range(n)]
    fetch = np.array(
        [min(n_items, k + (0 if m is None else int(m.sum()))) for m in masks], dtype=np.int64
    )
    width = int(fetch.max(initial=k))
    items = np.full((n, width), -1, np.int64)
    scores = np.full((n, width), np.nan, np.float32)
    sources = np.full((n, width), None, dtype=object)
    strategy = np.where(known, PERSONALIZED, COLD_START).astype(object)
    # rows that share a list width are answered together (a row's list is the same
    # whatever its group: lists are deterministic and prefix-stable)
    for is_fold in (False, True):
        for w in np.unique(fetch[fold == is_fold]).tolist():
            rows = np.flatnonzero((fold == is_fold) & (fetch == w))
            if is_fold:
                i, s, src, folded = _fold_in_rows(
                    pipeline, name, queries, rows, known, int(w), exclude_seen
                )
                strategy[rows[folded & ~known[rows]]] = FOLD_IN
            else:
                i, s, src = _plain_rows(
                    pipeline, name, users[rows], known[rows], int(w), exclude_seen
                )
            items[rows, : i.shape[1]] = i
            scores[rows, : i.shape[1]] = s
            sources[rows, : i.shape[1]] = src
    return _cut(items, scores, sources, masks, k, strategy)


def _row_mask(queries: RecommendQueries, r: int, n_items: int) -> NDArray[np.bool_] | None:
    """Items row ``r`` may not hold: exclusions, outside the allow set, attribute filters."""
    blocked = queries._row("blocked", r)
    exclude = queries._row("exclude", r)
    allow = queries._row("allow", r)
    if blocked is None and exclude is None and allow is None:
        return None
    mask = np.zeros(n_items, bool) if blocked is None else np.array(blocked, dtype=bool)
    if exclude is not None:
        ex = np.asarray(exclude, np.int64)
        mask[ex[(ex >= 0) & (ex < n_items)]] = True
    if allow is not None:
        ok = np.zeros(n_items, bool)
        al = np.asarray(allow, np.int64)
        ok[al[(al >= 0) & (al < n_items)]] = True
        mask |= ~ok
    return mask if mask.any() else None


def _plain_rows(
    pipeline: Pipeline,
    name: str,
    users: NDArray[np.int64],
    known: NDArray[np.bool_],
    k: int,
    exclude_seen: bool,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.object_]]:
    if name in (HYBRID, BLEND):
        return pipeline.models[HYBRID].recommend_lists(  # type: ignore[no-any-return]
            users, k, exclude_seen=exclude_seen, learned=name == HYBRID
        )
    items, scores = pipeline.models[name].recommend(users, k, exclude_seen=exclude_seen)
    per_row = np.where(known, name, COLD_START_SOURCE).astype(object)
    sources = np.full(items.shape, None, dtype=object)
    valid = items >= 0
    sources[valid] = np.broadcast_to(per_row[:, None], items.shape)[valid]
    return items, scores, sources


def _fold_in_rows(
    pipeline: Pipeline,
    name: str,
    queries: RecommendQueries,
    rows: NDArray[np.int64],
    known: NDArray[np.bool_],
    k: int,
    exclude_seen: bool,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.object_], NDArray[np.bool_]]:
    """Fold-in lists of ``rows``; the last array says which rows had a history to fold."""
    from recsys.protocols import FoldIn

    m = pipeline.models.get(name) if name != BLEND else None
    if not isinstance(m, FoldIn):  # the blend and components without fold-in
        name = COLD_START_SOURCE if COLD_START_SOURCE in pipeline.models else pipeline.primary
        m = pipeline.models[name]
    seen = pipeline.training_matrix() if known[rows].any() else None
    histories: list[NDArray[np.int64]] = []
    for r in rows.tolist():
        extra = np.asarray(queries._row("history", r), np.int64)
        extra = extra[(extra >= 0) & (extra < len(pipeline.item_map))]
        if known[r] and seen is not None:
            u = int(queries.user_idx[r])
            train = np.asarray(seen.indices[seen.indptr[u] : seen.indptr[u + 1]], np.int64)
            extra = np.concatenate([train, extra])
        histories.append(extra)
    h = _history_matrix(histories, len(pipeline.item_map), ordered=name in (HYBRID, BLEND))
    folded = np.diff(h.indptr) > 0
    if isinstance(m, FoldIn):
        with_sources = getattr(m, "recommend_for_history_lists", None)
        if with_sources is not None:
            return (*with_sources(h, k, exclude_seen=True), folded)
        items, scores = m.recommend_for_history(h, k, exclude_seen=True)
    else:
        items, scores = m.recommend(np.full(len(rows), -1, np.int64), k, exclude_seen=True)
    per_row = np.where(folded, name, COLD_START_SOURCE).astype(object)
    sources = np.full(items.shape, None, dtype=object)
    valid = items >= 0
    sources[valid] = np.broadcast_to(per_row[:, None], items.shape)[valid]
    return items, scores, sources, folded


def _history_matrix(
    histories: Sequence[NDArray[np.int64]], n_items: int, *, ordered: bool
) -> sp.csr_matrix:
    """History rows; with ``ordered``, values are positions (1 = oldest, larger = later,
    a repeated item keeping its latest position), else 1."""
    lengths = [len(h) for h in histories]
    cols = np.concatenate([*histories, np.empty(0, np.int64)]).astype(np.int64)
    rows = np.repeat(np.arange(len(histories)), lengths)
    shape = (len(histories), n_items)
    if ordered:
        pos = np.concatenate(
            [np.arange(1, n + 1, dtype=np.int64) for n in lengths] or [np.empty(0, np.int64)]
        )
        order = np.lexsort((pos, cols, rows))
        keys = rows[order] * n_items + cols[order]
        last = order[np.append(keys[1:] != keys[:-1], True)] if len(keys) else order
        return sp.csr_matrix((pos[last].astype(np.float32), (rows[last], cols[last])), shape=shape)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _cut(
    items: NDArray[np.int64],
    scores: NDArray[np.float32],
    sources: NDArray[np.object_],
    masks: Sequence[NDArray[np.bool_] | None],
    k: int,
    strategy: NDArray[np.object_],
) -> Recommendations:
    """The one filtering pass: drop padding and masked items, keep each row's first ``k``."""
    n = items.shape[0]
    keep = items >= 0
    for r, mask in enumerate(masks):
        if mask is not None:
            keep[r] &= ~mask[np.maximum(items[r], 0)]
    out_i = np.full((n, k), -1, np.int64)
    out_s = np.full((n, k), np.nan, np.float32)
    out_src = np.full((n, k), None, dtype=object)
    if keep[:, :k].all():  # nothing removed: a slice
        out_i[:], out_s[:], out_src[:] = items[:, :k], scores[:, :k], sources[:, :k]
    else:
        rank = np.cumsum(keep, axis=1) - 1
        sel = keep & (rank < k)
        rows, cols = np.nonzero(sel)
        out_i[rows, rank[sel]] = items[rows, cols]
        out_s[rows, rank[sel]] = scores[rows, cols]
        out_src[rows, rank[sel]] = sources[rows, cols]
    return Recommendations(out_i, out_s, out_src, strategy)
