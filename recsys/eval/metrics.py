"""Vectorised evaluation metrics: top-N ranking, beyond-accuracy, CTR and rating.

Top-N definitions follow the shared MovieLens protocol (``peers/classical/protocol.py``)
exactly: binary relevance; recommendation lists are ``(n_users, K) int64`` arrays of item
indices, best first, with ``-1`` marking an empty slot; per-user values are averaged over
the users that have at least one test item.

For a user ``u`` with test items ``T_u`` and ``hits`` = number of top-``k`` slots that
hold a test item:

* ``precision@k = hits / k`` (empty slots count against the list),
* ``recall@k = hits / |T_u|``,
* ``f1@k = 2 P R / (P + R)`` per user (0 without hits), then averaged,
* ``ndcg@k = DCG / IDCG`` with ``DCG = sum_r rel_r / log2(r + 1)`` and the ideal list holding
  ``min(|T_u|, k)`` hits,
* ``map@k = sum_{r <= k, rel_r} precision@r / min(|T_u|, k)``,
* ``hit_rate@k = 1`` if ``hits > 0``, ``mrr@k = 1 / rank of the first hit`` (0 if none).

Nothing here loops over users in Python: hits come from one sorted-key lookup into the
CSR test matrix, and every metric is a row reduction of the ``(n_users, K)`` hit matrix.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from recsys.errors import ConfigError, DataError, PerformanceWarning, format_examples

__all__ = [
    "average_popularity",
    "average_precision_at_k",
    "catalogue_coverage",
    "ctr_metrics",
    "f1_at_k",
    "gauc",
    "hit_matrix",
    "hit_rate_at_k",
    "intra_list_diversity",
    "log_loss",
    "mae",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "rating_metrics",
    "recall_at_k",
    "reciprocal_rank_at_k",
    "rmse",
    "roc_auc",
    "topn_metrics",
]

logger = logging.getLogger(__name__)

#: Accuracy metrics of a top-N list, in the order they appear in result dicts.
ACCURACY_KEYS: tuple[str, ...] = (
    "precision",
    "recall",
    "f1",
    "ndcg",
    "map",
    "hit_rate",
    "mrr",
)

# Non-zeros allowed in one block of the (users x vector-dim) sum matrix of the diversity
# computation; bounds memory at a few hundred MB whatever the number of users.
_DIVERSITY_BLOCK_NNZ = 20_000_000
# Above this many touched vector entries (about 20 s on one core) diversity warns.
_DIVERSITY_WARN_COST = 500_000_000


# --------------------------------------------------------------------------- validation
def _check_ks(ks: Sequence[int] | int) -> tuple[int, ...]:
    """Validate cut-offs: a non-empty sequence of distinct positive integers, in order."""
    values = (ks,) if isinstance(ks, int | np.integer) else tuple(ks)
    if not values:
        raise ConfigError("ks is empty; pass at least one cut-off, e.g. ks=(10,)")
    out: list[int] = []
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"ks must hold positive integers, got {k!r} in {values!r}")
        if int(k) not in out:
            out.append(int(k))
    return tuple(out)


def _as_binary_csr(matrix: Any, name: str) -> sp.csr_matrix:
    """A canonical binary CSR copy: duplicates summed, zeros dropped, indices sorted."""
    if not sp.issparse(matrix):
        arr = np.asarray(matrix)
        if arr.ndim != 2:
            raise DataError(f"{name} must be a 2-d (users x items) matrix, got shape {arr.shape}")
        matrix = sp.csr_matrix(arr)
    csr = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.data[:] = 1.0
    csr.sort_indices()
    return csr


def _check_rec_items(rec_items: ArrayLike, n_rows: int, n_items: int) -> NDArray[np.int64]:
    """Validate a recommendation array against the truth matrix shape."""
    arr = np.asarray(rec_items)
    if arr.ndim != 2:
        raise DataError(
            f"rec_items must be a 2-d (n_users, k) array of item indices, got shape {arr.shape}"
        )
    if arr.size and arr.dtype.kind not in "iu":
        raise DataError(
            f"rec_items must hold integer item indices (-1 for empty slots), got dtype "
            f"{arr.dtype}; map item ids to indices first"
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.shape[0] != n_rows:
        raise DataError(
            f"rec_items has {arr.shape[0]} rows but truth has {n_rows} users; row u of "
            "rec_items must be the list of truth's user u"
        )
    bad = (arr < -1) | (arr >= n_items)
    if bad.any():
        raise DataError(
            f"rec_items holds {int(bad.sum())} indices outside -1..{n_items - 1} (the truth "
            f"matrix has {n_items} item columns), e.g. {format_examples(np.unique(arr[bad]))}"
        )
    return arr


def _check_distinct(rec_items: NDArray[np.int64]) -> None:
    """Raise if any list repeats an item (a repeated hit would count twice)."""
    if rec_items.shape[1] < 2:
        return
    srt = np.sort(rec_items, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        rows = np.flatnonzero(dup.any(axis=1))
        r = int(rows[0])
        item = int(srt[r, 1:][dup[r]][0])
        raise DataError(
            f"rec_items repeats items within a list in {len(rows)} rows (row {r} holds "
            f"item {item} twice); each list must hold distinct items"
        )


def _check_hits(
    hits: ArrayLike, k: int, n_relevant: ArrayLike | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Validate a hit matrix and (optionally) relevant counts; returns the top-k slice."""
    h = np.asarray(hits)
    if h.ndim != 2:
        raise DataError(f"hits must be a 2-d (n_users, K) array, got shape {h.shape}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if k > h.shape[1]:
        raise ConfigError(
            f"k={k} exceeds the {h.shape[1]} columns of hits; pad the lists with -1 "
            "(empty slots) or lower k"
        )
    top = h[:, :k].astype(np.float64, copy=False)
    if n_relevant is None:
        return top, None
    rel = np.asarray(n_relevant, dtype=np.float64).ravel()
    if rel.shape[0] != h.shape[0]:
        raise DataError(f"n_relevant has {rel.shape[0]} entries, hits has {h.shape[0]} rows")
    if rel.size and rel.min() < 1:
        raise DataError(
            f"n_relevant must be >= 1 for every user ({int((rel < 1).sum())} users have 0); "
            "drop users without test items before computing per-user metrics"
        )
    return top, rel


# --------------------------------------------------------------------------- top-N
def hit_matrix(rec_items: ArrayLike, truth: sp.spmatrix | sp.sparray) -> NDArray[np.bool_]:
    """Which recommended slots hold a relevant item, by one sorted-key lookup.

    Parameters
    ----------
    rec_items : (n_users, K) int64
        Item indices, best first; ``-1`` marks an empty slot (never a hit).
    truth : (n_users, n_items) sparse
        Relevant (test) items; any stored non-zero counts as relevant.

    Returns
    -------
    (n_users, K) bool
        ``hits[u, r]`` is true when ``rec_items[u, r]`` is a test item of user ``u``.

    Raises
    ------
    DataError
        If the shapes disagree or an index lies outside ``-1..n_items-1``.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> truth = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0]]))
    >>> hit_matrix(np.array([[1, 2], [2, -1]]), truth).tolist()
    [[True, False], [False, False]]
    """
    t = _as_binary_csr(truth, "truth")
    recs = _check_rec_items(rec_items, t.shape[0], t.shape[1])
    return _hits(recs, t)


def _hits(recs: NDArray[np.int64], truth: sp.csr_matrix) -> NDArray[np.bool_]:
    """Hit matrix of validated inputs (truth canonical: sorted indices, no duplicates)."""
    n_rows, n_items = truth.shape
    if truth.nnz == 0 or recs.size == 0:
        return np.zeros(recs.shape, dtype=bool)
    # Row-major keys of a CSR with sorted indices are globally sorted, so one
    # searchsorted answers every (user, item) membership query at once.
    stride = np.int64(n_items)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(truth.indptr))
    truth_keys = rows * stride + truth.indices.astype(np.int64)
    rec_keys = np.arange(n_rows, dtype=np.int64)[:, None] * stride + recs
    pos = np.searchsorted(truth_keys, rec_keys)
    np.minimum(pos, len(truth_keys) - 1, out=pos)
    return (truth_keys[pos] == rec_keys) & (recs >= 0)


def precision_at_k(hits: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per-user precision: hits in the top ``k`` divided by ``k``.

    Parameters
    ----------
    hits : (n_users, K) bool
        Hit matrix with ``K >= k`` (see :func:`hit_matrix`).
    k
        Cut-off.

    Returns
    -------
    (n_users,) float64
    """
    top, _ = _check_hits(hits, k)
    return top.sum(axis=1) / k


def recall_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per-user recall: hits in the top ``k`` divided by the number of test items.

    Parameters
    ----------
    hits : (n_users, K) bool
    n_relevant : (n_users,) int
        ``|T_u|``, at least 1 per user.
    k
        Cut-off.

    Returns
    -------
    (n_users,) float64
    """
    top, rel = _check_hits(hits, k, n_relevant)
    assert rel is not None
    return top.sum(axis=1) / rel


def f1_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per-user F1: harmonic mean of precision@k and recall@k (0 when there is no hit).

    Parameters
    ----------
    hits : (n_users, K) bool
    n_relevant : (n_users,) int
    k
        Cut-off.

    Returns
    -------
    (n_users,) float64
        Averaging these gives the mean per-user F1 (not F1 of the mean P and R).
    """
    top, rel = _check_hits(hits, k, n_relevant)
    assert rel is not None
    n_hits = top.sum(axis=1)
    # F1 = 2PR/(P+R) with P = h/k, R = h/|T| simplifies to 2h / (k + |T|).
    return 2.0 * n_hits / (k + rel)


def _discounts(k: int) -> NDArray[np.float64]:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def ndcg_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per-user NDCG with binary relevance and ``log2(rank + 1)`` discounts.

    The ideal DCG places ``min(|T_u|, k)`` hits at the top.

    Parameters
    ----------
    hits : (n_users, K) bool
    n_relevant : (n_users,) int
    k
        Cut-off.

    Returns
    -------
    (n_users,) float64
        In ``[0, 1]``; 1 exactly when the top ``min(|T_u|, k)`` slots are all hits.
    """
    top, rel = _check_hits(hits, k, n_relevant)
    assert rel is not None
    disc = _discounts(k)
    dcg = top @ disc
    ideal_len = np.minimum(rel, k).astype(np.int64)
    idcg = np.cumsum(disc)[ideal_len - 1]
    return dcg / idcg


def average_precision_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per-user average precision, normalised by ``min(|T_u|, k)``; its mean is MAP@k.

    Parameters
    ----------
    hits : (n_users, K) bool
    n_relevant : (n_users,) int
    k
        Cut-off.

    Returns
    -------
    (n_users,) float64
    """
    top, rel = _check_hits(hits, k, n_relevant)
    assert rel is not None
    ranks = np.arange(1, k + 1, dtype=np.float64)
    prec_at_r = np.cumsum(top, axis=1) / ranks
    return (prec_at_r * top).sum(axis=1) / np.minimum(rel, k)


def hit_rate_at_k(hits: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per-user hit indicator: 1.0 when any of the top ``k`` slots is a hit.

    Parameters
    ----------
    hits : (n_users, K) bool
    k
        Cut-off.

    Returns
    -------
    (n_users,) float64
    """
    top, _ = _check_hits(hits, k)
    return (top.sum(axis=1) > 0).astype(np.float64)


def reciprocal_rank_at_k(hits: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per-user reciprocal rank of the first hit within the top ``k`` (0 if none).

    Parameters
    ----------
    hits : (n_users, K) bool
    k
        Cut-off.

    Returns
    -------
    (n_users,) float64
    """
    top, _ = _check_hits(hits, k)
    any_hit = top.sum(axis=1) > 0
    first = np.argmax(top > 0, axis=1)
    return np.where(any_hit, 1.0 / (first + 1.0), 0.0)


def _valid_slots(rec_items: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    r = rec_items[:, :k].ravel()
    return r[r >= 0]


def catalogue_coverage(rec_items: ArrayLike, n_catalogue: int, k: int) -> float:
    """Share of the catalogue that appears in at least one user's top ``k``.

    Parameters
    ----------
    rec_items : (n_users, K) int64
        ``-1`` slots are ignored.
    n_catalogue
        Catalogue size; items ``0..n_catalogue-1`` form the catalogue and indices beyond
        it (items known only from test or recommendation files) do not count.
    k
        Cut-off.

    Returns
    -------
    float
        ``|distinct catalogue items in all top-k lists| / n_catalogue``.
    """
    if n_catalogue < 1:
        raise DataError(f"n_catalogue must be >= 1, got {n_catalogue}")
    r = _valid_slots(np.asarray(rec_items, dtype=np.int64), k)
    r = r[r < n_catalogue]
    return float(np.count_nonzero(np.bincount(r, minlength=n_catalogue)) / n_catalogue)


def _item_counts(train: sp.csr_matrix) -> tuple[NDArray[np.float64], int]:
    """Distinct train users per item and the number of users with any train interaction."""
    counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64)
    n_train_users = int(np.count_nonzero(np.diff(train.indptr)))
    return counts, n_train_users


def novelty(rec_items: ArrayLike, item_train_users: ArrayLike, n_train_users: int, k: int) -> float:
    """Mean self-information ``-log2 p_i`` of the recommended slots.

    ``p_i = (#train users with item i) / n_train_users``; an item without any train
    interaction counts as one user, so its novelty stays finite.

    Parameters
    ----------
    rec_items : (n_users, K) int64
        ``-1`` slots are ignored.
    item_train_users : (n_items,) int or float
        Distinct train users per item.
    n_train_users
        Users with at least one train interaction.
    k
        Cut-off.

    Returns
    -------
    float
        Mean over every non-empty (user, slot) pair; NaN when all slots are empty.
    """
    if n_train_users < 1:
        raise DataError(f"n_train_users must be >= 1, got {n_train_users}")
    r = _valid_slots(np.asarray(rec_items, dtype=np.int64), k)
    if r.size == 0:
        return float("nan")
    counts = np.maximum(np.asarray(item_train_users, dtype=np.float64)[r], 1.0)
    return float(np.mean(-np.log2(counts / n_train_users)))


def average_popularity(rec_items: ArrayLike, item_train_users: ArrayLike, k: int) -> float:
    """Mean train popularity (distinct train users) of the recommended slots.

    Parameters
    ----------
    rec_items : (n_users, K) int64
        ``-1`` slots are ignored.
    item_train_users : (n_items,) int or float
        Distinct train users per item (items never seen in train count 0).
    k
        Cut-off.

    Returns
    -------
    float
        NaN when all slots are empty.
    """
    r = _valid_slots(np.asarray(rec_items, dtype=np.int64), k)
    if r.size == 0:
        return float("nan")
    return float(np.mean(np.asarray(item_train_users, dtype=np.float64)[r]))


def _normalise_rows(vectors: Any) -> sp.csr_matrix | NDArray[np.float64]:
    """L2-normalise item vectors row-wise; all-zero rows stay zero."""
    if sp.issparse(vectors):
        v = sp.csr_matrix(vectors, dtype=np.float64, copy=True)
        norms = np.sqrt(np.asarray(v.multiply(v).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(scale) @ v)
    dense = np.asarray(vectors, dtype=np.float64)
    if dense.ndim != 2:
        raise DataError(f"item_vectors must be 2-d (n_items, dim), got shape {dense.shape}")
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)


def intra_list_diversity(rec_items: ArrayLike, item_vectors: Any, k: int) -> float:
    """Mean over lists of the mean pairwise cosine distance ``1 - cos`` of their items.

    Uses ``sum_{i<j} cos(i, j) = (||sum_i v_i||^2 - sum_i ||v_i||^2) / 2`` on unit
    vectors, so each list costs one sparse row sum instead of ``k^2`` dot products. An
    item with an all-zero vector has similarity 0 (distance 1) to every other item.

    Parameters
    ----------
    rec_items : (n_users, K) int64
        Distinct items per row; ``-1`` slots are ignored.
    item_vectors : (n_items, dim) array or sparse matrix
        One row per item, e.g. genre multi-hot, or the transposed train matrix
        (each item's column of users).
    k
        Cut-off.

    Returns
    -------
    float
        In ``[0, 2]`` (``[0, 1]`` for non-negative vectors); lists with fewer than two
        items are left out; NaN when no list has two.
    """
    recs = np.asarray(rec_items, dtype=np.int64)[:, :k]
    n_items = item_vectors.shape[0]
    if recs.size and recs.max() >= n_items:
        raise DataError(
            f"rec_items holds item {int(recs.max())} but item_vectors has only {n_items} rows"
        )
    unit = _normalise_rows(item_vectors)
    valid = recs >= 0
    m = valid.sum(axis=1)
    keep = m >= 2
    if not keep.any():
        return float("nan")
    recs, valid, m = recs[keep], valid[keep], m[keep].astype(np.float64)
    if sp.issparse(unit):
        assert isinstance(unit, sp.csr_matrix)
        nonzero_vec = np.diff(unit.indptr) > 0
        row_cost = np.diff(unit.indptr)[np.where(valid, recs, 0)].sum(axis=1)
    else:
        nonzero_vec = np.any(unit != 0, axis=1)
        row_cost = np.full(len(recs), unit.shape[1], dtype=np.int64)
    n_nonzero = (nonzero_vec[np.where(valid, recs, 0)] & valid).sum(axis=1).astype(np.float64)
    sq_norm = np.empty(len(recs), dtype=np.float64)
    total_cost = int(row_cost.sum())
    if total_cost > _DIVERSITY_WARN_COST:
        warnings.warn(
            f"intra-list diversity will touch {total_cost:,} vector entries "
            f"({len(recs):,} lists of up to {k} items); this can take minutes. Pass "
            "diversity=False to skip it, or low-dimensional item_vectors (e.g. genres)",
            PerformanceWarning,
            stacklevel=2,
        )
    # Split users into blocks whose summed vectors stay within the memory budget.
    cum = np.cumsum(row_cost)
    n_blocks = int(cum[-1] // _DIVERSITY_BLOCK_NNZ) + 1
    cuts = np.searchsorted(cum, np.arange(1, n_blocks) * _DIVERSITY_BLOCK_NNZ)
    starts = np.unique(np.r_[0, cuts, len(recs)])
    for lo, hi in itertools.pairwise(starts.tolist()):
        block, ok = recs[lo:hi], valid[lo:hi]
        rows = np.repeat(np.arange(hi - lo), ok.sum(axis=1))
        sel = sp.csr_matrix((np.ones(len(rows)), (rows, block[ok])), shape=(hi - lo, n_items))
        summed = sel @ unit
        if sp.issparse(summed):
            # csr_matmat accumulates each output entry once, so no duplicate summing.
            summed = sp.csr_matrix(summed)
            rows_of = np.repeat(np.arange(hi - lo), np.diff(summed.indptr))
            sq_norm[lo:hi] = np.bincount(rows_of, weights=summed.data**2, minlength=hi - lo)
        else:
            sq_norm[lo:hi] = np.einsum("ij,ij->i", summed, summed)
    pair_cos = (sq_norm - n_nonzero) / 2.0
    n_pairs = m * (m - 1.0) / 2.0
    return float(np.mean(1.0 - pair_cos / n_pairs))


def topn_metrics(
    rec_items: ArrayLike,
    truth: sp.spmatrix | sp.sparray,
    ks: Sequence[int] | int = (10,),
    *,
    train: sp.spmatrix | sp.sparray | None = None,
    item_vectors: Any = None,
    n_catalogue: int | None = None,
    diversity: bool = True,
) -> dict[str, float]:
    """Every top-N metric of a batch of recommendation lists, averaged over users.

    Stability: stable

    Parameters
    ----------
    rec_items : (n_users, K) int64
        Item indices, best first, ``-1`` for empty slots. Lists shorter than ``max(ks)``
        are treated as padded with ``-1``. Items must be distinct within a row.
    truth : (n_users, n_items) sparse
        Test items per user (binary relevance; any stored non-zero is relevant). Row
        ``u`` belongs to ``rec_items[u]``. Users without test items are skipped.
    ks
        Cut-offs, e.g. ``(10, 20)``.
    train : (n_train_users, n_items) sparse, optional
        Train interactions (rows need not align with ``truth``'s). Enables
        ``novelty@k``, ``avg_popularity@k`` and, without ``item_vectors``,
        ``diversity@k`` over the train matrix's item columns.
    item_vectors : (n_items, dim) array or sparse, optional
        Item representations for ``diversity@k`` (e.g. genre multi-hot).
    n_catalogue
        Catalogue size for ``coverage@k``: items ``0..n_catalogue-1``. Defaults to
        ``n_items``.
    diversity
        Set ``False`` to skip ``diversity@k``, whose cost grows with the number of
        non-zeros of the recommended items' vectors.

    Returns
    -------
    dict[str, float]
        ``precision@k``, ``recall@k``, ``f1@k``, ``ndcg@k``, ``map@k``, ``hit_rate@k``,
        ``mrr@k``, ``coverage@k`` for each ``k``; ``novelty@k``, ``avg_popularity@k``
        with ``train``; ``diversity@k`` with ``train`` or ``item_vectors``; and
        ``n_users``, the number of users evaluated (those with a test item).

    Raises
    ------
    DataError
        Shapes that disagree, indices out of range, a list that repeats an item, or no
        user with a test item.
    ConfigError
        Invalid ``ks``.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> truth = sp.csr_matrix(np.array([[0, 1, 0, 1], [1, 0, 0, 0]]))
    >>> m = topn_metrics(np.array([[1, 2], [3, 0]]), truth, ks=(2,))
    >>> m["precision@2"], m["hit_rate@2"], m["mrr@2"]
    (0.5, 1.0, 0.75)
    """
    cutoffs = _check_ks(ks)
    kmax = max(cutoffs)
    t = _as_binary_csr(truth, "truth")
    n_rows, n_items = t.shape
    recs = _check_rec_items(rec_items, n_rows, n_items)
    if recs.shape[1] < kmax:
        logger.debug("padding lists of length %d to k=%d with -1", recs.shape[1], kmax)
        recs = np.pad(recs, ((0, 0), (0, kmax - recs.shape[1])), constant_values=-1)
    recs = recs[:, :kmax]
    n_relevant = np.diff(t.indptr)
    evaluated = n_relevant > 0
    if not evaluated.any():
        raise DataError(
            f"truth holds no test item for any of its {n_rows} users; nothing to evaluate"
        )
    if not evaluated.all():
        logger.debug("skipping %d users without test items", int((~evaluated).sum()))
        recs = recs[evaluated]
        t = t[evaluated]
        n_relevant = n_relevant[evaluated]
    _check_distinct(recs)
    hits = _hits(recs, t)

    n_cat = n_items if n_catalogue is None else int(n_catalogue)
    counts: NDArray[np.float64] | None = None
    n_train_users = 0
    train_csr: sp.csr_matrix | None = None
    if train is not None:
        train_csr = _as_binary_csr(train, "train")
        if train_csr.shape[1] != n_items:
            raise DataError(
                f"train has {train_csr.shape[1]} item columns, truth has {n_items}; both "
                "must index items the same way"
            )
        counts, n_train_users = _item_counts(train_csr)
        if n_train_users == 0:
            raise DataError("train holds no interaction; pass train=None to skip novelty")
    vectors = item_vectors
    if vectors is None and train_csr is not None:
        vectors = train_csr.T.tocsr()
    if vectors is not None and vectors.shape[0] != n_items:
        raise DataError(
            f"item_vectors has {vectors.shape[0]} rows, truth has {n_items} item columns; "
            "pass one vector per item index"
        )

    out: dict[str, float] = {}
    for k in cutoffs:
        per_user = {
            "precision": precision_at_k(hits, k),
            "recall": recall_at_k(hits, n_relevant, k),
            "f1": f1_at_k(hits, n_relevant, k),
            "ndcg": ndcg_at_k(hits, n_relevant, k),
            "map": average_precision_at_k(hits, n_relevant, k),
            "hit_rate": hit_rate_at_k(hits, k),
            "mrr": reciprocal_rank_at_k(hits, k),
        }
        for name in ACCURACY_KEYS:
            out[f"{name}@{k}"] = float(per_user[name].mean())
        out[f"coverage@{k}"] = catalogue_coverage(recs, n_cat, k)
        if counts is not None:
            out[f"novelty@{k}"] = novelty(recs, counts, n_train_users, k)
            out[f"avg_popularity@{k}"] = average_popularity(recs, counts, k)
        if diversity and vectors is not None:
            out[f"diversity@{k}"] = intra_list_diversity(recs, vectors, k)
    out["n_users"] = len(recs)
    return out


# --------------------------------------------------------------------------- CTR
def _check_labels(
    y_true: ArrayLike, y_score: ArrayLike, what: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"y_true has {y.shape[0]} values, {what} has {s.shape[0]}")
    if y.size == 0:
        raise DataError("y_true is empty; nothing to evaluate")
    if y.dtype.kind not in "biuf":
        raise DataError(f"y_true must hold 0/1 labels, got dtype {y.dtype}")
    yf = y.astype(np.float64)
    bad = (yf != 0) & (yf != 1)
    if bad.any():
        raise DataError(
            f"y_true must hold 0/1 labels; {int(bad.sum())} values are not, e.g. "
            f"{format_examples(np.unique(yf[bad]))}; binarise first (e.g. rating >= 4)"
        )
    if not np.isfinite(s).all():
        raise DataError(
            f"{what} holds {int((~np.isfinite(s)).sum())} NaN or infinite values; "
            "every row needs a finite prediction"
        )
    return yf, s


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    Parameters
    ----------
    y_true : (n,) 0/1 labels
    y_score : (n,) float
        Any monotone score; higher means more likely positive.

    Returns
    -------
    float
        Agrees with ``sklearn.metrics.roc_auc_score``.

    Raises
    ------
    DataError
        If only one class is present (AUC is undefined) or the inputs are malformed.
    """
    y, s = _check_labels(y_true, y_score, "y_score")
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"AUC needs both classes; y_true holds only {'1' if n_neg == 0 else '0'}s "
            f"({len(y)} rows)"
        )
    ranks = rankdata(s)
    return float((ranks @ y - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _group_auc(
    y: NDArray[np.float64], s: NDArray[np.float64], groups: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-group AUC (NaN for one-class groups) and group sizes, without a group loop."""
    g = np.asarray(groups).ravel()
    if g.shape != y.shape:
        raise DataError(f"groups has {g.shape[0]} values, y_true has {y.shape[0]}")
    codes, _ = pd.factorize(g, use_na_sentinel=False)
    codes = codes.astype(np.int64)
    n_groups = int(codes.max()) + 1
    order = np.lexsort((s, codes))
    c, sv, yv = codes[order], s[order], y[order]
    n = len(c)
    idx = np.arange(n)
    group_start = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    pos = idx - np.repeat(group_start, np.diff(np.r_[group_start, n])) + 1.0
    # Tied scores within a group share the mean of their positions (average ranks).
    run_start = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (sv[1:] != sv[:-1])])
    run_end = np.r_[run_start[1:], n] - 1
    run_rank = (pos[run_start] + pos[run_end]) / 2.0
    rank = np.repeat(run_rank, run_end - run_start + 1)
    size = np.bincount(c, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(c, weights=yv, minlength=n_groups)
    n_neg = size - n_pos
    rank_sum = np.bincount(c, weights=rank * yv, minlength=n_groups)
    both = (n_pos > 0) & (n_neg > 0)
    auc = np.full(n_groups, np.nan)
    auc[both] = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2) / (n_pos[both] * n_neg[both])
    return auc, size


def gauc(y_true: ArrayLike, y_score: ArrayLike, groups: ArrayLike) -> float:
    """Group AUC: per-group AUC averaged with weights = rows per group (DIN paper, eq. 8).

    Groups (usually users) whose rows hold a single class are left out.

    Parameters
    ----------
    y_true : (n,) 0/1 labels
    y_score : (n,) float
    groups : (n,) any hashable ids
        Group of each row, e.g. the user id.

    Returns
    -------
    float
        NaN (with a warning logged) when no group has both classes.
    """
    y, s = _check_labels(y_true, y_score, "y_score")
    auc, size = _group_auc(y, s, groups)
    ok = ~np.isnan(auc)
    if not ok.any():
        logger.warning("gauc undefined: none of %d groups has both classes", len(auc))
        return float("nan")
    return float((auc[ok] * size[ok]).sum() / size[ok].sum())


def log_loss(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean binary cross-entropy; probabilities are clipped to ``[eps, 1 - eps]``.

    Parameters
    ----------
    y_true : (n,) 0/1 labels
    y_prob : (n,) float in [0, 1]
        Predicted probability of the positive class.

    Returns
    -------
    float
        Natural-log loss, as ``sklearn.metrics.log_loss``.
    """
    y, p = _check_labels(y_true, y_prob, "y_prob")
    if p.min() < 0 or p.max() > 1:
        raise DataError(
            f"y_prob must be probabilities in [0, 1]; got values in [{p.min()}, {p.max()}]; "
            "apply a sigmoid to raw scores first"
        )
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ctr_metrics(
    y_true: ArrayLike, y_prob: ArrayLike, groups: ArrayLike | None = None
) -> dict[str, float]:
    """AUC, log loss and (with ``groups``) GAUC of click-probability predictions.

    Stability: stable

    Parameters
    ----------
    y_true : (n,) 0/1 labels
    y_prob : (n,) float in [0, 1]
    groups : (n,) ids, optional
        Row groups for GAUC, usually ``user_id``.

    Returns
    -------
    dict[str, float]
        ``auc``, ``logloss`` and, with ``groups``, ``gauc``.
    """
    out = {"auc": roc_auc(y_true, y_prob)}
    if groups is not None:
        out["gauc"] = gauc(y_true, y_prob, groups)
    out["logloss"] = log_loss(y_true, y_prob)
    return out


# --------------------------------------------------------------------------- rating
def _check_ratings(
    y_true: ArrayLike, y_pred: ArrayLike, clip: tuple[float, float] | None
) -> NDArray[np.float64]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise DataError(f"y_true has {t.shape[0]} values, y_pred has {p.shape[0]}")
    if t.size == 0:
        raise DataError("y_true is empty; nothing to evaluate")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if not np.isfinite(arr).all():
            raise DataError(
                f"{name} holds {int((~np.isfinite(arr)).sum())} NaN or infinite values; "
                "predict every test row (fall back to the global mean for unknown ids)"
            )
    if clip is not None:
        lo, hi = clip
        if not lo <= hi:
            raise ConfigError(f"clip must be (low, high) with low <= high, got {clip!r}")
        p = np.clip(p, lo, hi)
    return t - p


def rmse(y_true: ArrayLike, y_pred: ArrayLike, clip: tuple[float, float] | None = None) -> float:
    """Root mean squared error of rating predictions.

    Parameters
    ----------
    y_true, y_pred : (n,) float
    clip
        ``(low, high)`` rating scale to clip predictions to first, e.g. ``(1, 5)``.

    Returns
    -------
    float
    """
    d = _check_ratings(y_true, y_pred, clip)
    return float(np.sqrt(np.mean(d * d)))


def mae(y_true: ArrayLike, y_pred: ArrayLike, clip: tuple[float, float] | None = None) -> float:
    """Mean absolute error of rating predictions (see :func:`rmse` for ``clip``).

    Parameters
    ----------
    y_true, y_pred : (n,) float
    clip
        ``(low, high)`` to clip predictions to first.

    Returns
    -------
    float
    """
    d = _check_ratings(y_true, y_pred, clip)
    return float(np.mean(np.abs(d)))


def rating_metrics(
    y_true: ArrayLike, y_pred: ArrayLike, clip: tuple[float, float] | None = None
) -> dict[str, float]:
    """RMSE and MAE of rating predictions.

    Stability: stable

    Parameters
    ----------
    y_true, y_pred : (n,) float
    clip
        ``(low, high)`` rating scale to clip predictions to first; the MovieLens rating
        protocol uses ``(1, 5)``. ``None`` (default) leaves predictions as they are.

    Returns
    -------
    dict[str, float]
        ``rmse`` and ``mae``.

    Examples
    --------
    >>> rating_metrics([1, 2, 3], [1, 2, 6], clip=(1, 5))
    {'rmse': 1.1547005383792515, 'mae': 0.6666666666666666}
    """
    d = _check_ratings(y_true, y_pred, clip)
    return {"rmse": float(np.sqrt(np.mean(d * d))), "mae": float(np.mean(np.abs(d)))}
