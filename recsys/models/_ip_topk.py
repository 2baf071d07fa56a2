"""Exact top-``k`` by inner product that skips the items which provably cannot make it.

For a query ``q`` and an item ``v``, Cauchy–Schwarz bounds the score: ``q . v <= |q| |v|``.
With the items sorted by norm (largest first), once ``k`` eligible items of a norm prefix
are scored, the ``k``-th best of them, ``s``, is a lower bound of the final ``k``-th best
score, and an item with ``|q| |v| < s`` can never reach it. So only the prefix of items
with ``|v| >= s / |q|`` needs scoring. In trained factor models item norms are heavy
tailed (popular items get long vectors), and that prefix is typically a few percent of the
catalogue: on the batch benchmark's ALS (27,000 items, 64 factors) the median user needs
6%, nine users in ten at most 11%.

:func:`topk_inner_product` scores a first prefix for a block of queries, derives each
row's needed prefix from its ``k``-th best, extends the rows that need more (in batches
sorted by need), and reports the rows where pruning does not pay (fewer than ``k``
eligible items in the prefix, a ``k``-th best score <= 0, or a need above half the
catalogue) so the caller scores those densely.

Its lists are those of a dense BLAS ranking up to float32 rounding (a relative margin on
the bound far larger than the rounding of a ``dim``-term dot product, ``dim * 2**-24``).
:func:`exact_topk_inner_product` turns them into the canonical answer of
:mod:`recsys.models._exact`: a padded approximate top ``k``, and the canonical scores of
every item in it within the rounding bound of the cut. That answer is the same,
bit for bit, as :func:`recsys.models._exact.rescore_topk` of a dense block, on any BLAS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.models import _exact
from recsys.models.base import _select_by_key

__all__ = ["NormOrder", "exact_topk_inner_product", "topk_inner_product"]

_EXTEND_ROWS = 256  # rows per extension product (sorted by need, so widths stay close)
_EXTEND_SLACK = 1.25  # an extension batch takes rows needing up to this times its first
_DENSE_FRACTION = 0.5  # a row needing more than this share of the items is done densely


@dataclass(frozen=True)
class NormOrder:
    """Item vectors sorted by decreasing norm, for :func:`topk_inner_product`.

    Holds a second, sorted copy of the item factors (``n_items x dim`` float32), built
    once per set of factors on the first ranking call.

    Attributes
    ----------
    perm : (n_items,) int64
        Item index at each sorted position.
    inv_perm : (n_items,) int64
        Sorted position of each item.
    factors : (n_items, dim) float32
        ``item_factors[perm]``, C-contiguous.
    neg_norms : (n_items,) float64
        ``-|factors[j]|``, ascending (for ``searchsorted``).
    margin : float
        Relative slack on the bound, above float32 rounding of a ``dim``-term product.
    """

    perm: NDArray[np.int64]
    inv_perm: NDArray[np.int64]
    factors: NDArray[np.float32]
    neg_norms: NDArray[np.float64]
    margin: float

    @classmethod
    def build(cls, item_factors: NDArray[np.float32]) -> NormOrder | None:
        """The order of ``item_factors``; ``None`` when a vector is not finite."""
        norms = np.sqrt(np.einsum("ij,ij->i", item_factors, item_factors, dtype=np.float64))
        if not np.isfinite(norms).all():
            return None
        perm = np.argsort(-norms, kind="stable")
        inv_perm = np.empty_like(perm)
        inv_perm[perm] = np.arange(len(perm))
        dim = item_factors.shape[1]
        return cls(
            perm=perm.astype(np.int64),
            inv_perm=inv_perm.astype(np.int64),
            factors=np.ascontiguousarray(item_factors[perm]),
            neg_norms=-norms[perm],
            margin=max(1e-4, 8.0 * dim * 2.0**-24),
        )

    @property
    def n_items(self) -> int:
        return len(self.perm)


def first_width(n_items: int, k: int) -> int:
    """Items scored for every row before pruning: 1/16 of the catalogue, at least ``8 k``."""
    return min(n_items, max(8 * k, -(-n_items // 16)))


def topk_inner_product(
    order: NormOrder,
    queries: NDArray[np.float32],
    seen: sp.csr_matrix | None,
    k: int,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.bool_]]:
    """Row-wise top-``k`` of ``queries @ item_factors.T``, items of ``seen`` excluded.

    Parameters
    ----------
    order
        The item factors sorted by norm (:meth:`NormOrder.build`).
    queries : (n, dim) float32
    seen : (n, n_items) csr or None
        Items to exclude per row (its stored entries; values ignored).
    k
        Items per row, ``1 <= k``.

    Returns
    -------
    items : (n, k) int64, scores : (n, k) float32, ok : (n,) bool
        Where ``ok`` is true the row is exactly :func:`recsys.models.base.topk` of the
        dense row (seen items at ``-inf``). Other rows are left undefined: the caller
        scores them densely.
    """
    n, n_items = len(queries), order.n_items
    w = first_width(n_items, k)
    if seen is not None:  # the seen items' sorted positions, row by row
        seen_ptr = np.asarray(seen.indptr, np.int64)
        seen_pos = order.inv_perm[seen.indices]
    else:
        seen_ptr, seen_pos = np.zeros(n + 1, np.int64), np.empty(0, np.int64)
    scores = _product(queries, order.factors[:w])
    _mask_seen(scores, seen_ptr, seen_pos, np.arange(n), 0)
    items, vals = _select(scores, order.perm[:w], k)

    kth = vals[:, k - 1].astype(np.float64)
    qnorm = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
    ok = np.isfinite(vals).all(axis=1) & (kth > 0) & np.isfinite(qnorm)
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = kth / (qnorm * (1.0 + order.margin))
    # items that may still reach the k-th best: |v| >= limit, a prefix of the order
    need = np.searchsorted(order.neg_norms, -np.where(ok, limit, 0.0), side="right")
    ok &= need <= max(w, int(n_items * _DENSE_FRACTION))
    extend = np.flatnonzero(ok & (need > w))
    if len(extend):
        extend = extend[np.argsort(need[extend], kind="stable")]
        needs = need[extend]
        start = 0
        while start < len(extend):  # rows of similar need share one product
            stop = int(np.searchsorted(needs, needs[start] * _EXTEND_SLACK, side="right"))
            stop = min(stop, start + _EXTEND_ROWS)
            rows = extend[start:stop]
            width = int(needs[stop - 1])
            more = _product(queries[rows], order.factors[w:width])
            _mask_seen(more, seen_ptr, seen_pos, rows, w)
            more_ids = order.perm[w:width]
            if width - w > 2 * k:  # the new columns' own top k, then merged with the old
                more_ids, more = _select(more, more_ids, k)
            else:
                more_ids = np.broadcast_to(more_ids, more.shape)
            items[rows], vals[rows] = _select_by_key(
                np.concatenate([vals[rows], more], axis=1),
                np.concatenate([items[rows], more_ids], axis=1),
                k,
            )
            start = stop
    return items, vals, ok


def _mask_seen(
    block: NDArray[np.float32],
    seen_ptr: NDArray[np.int64],
    seen_pos: NDArray[np.int64],
    rows: NDArray[np.int64],
    lo: int,
) -> None:
    """``-inf`` where row ``rows[i]`` has seen the item at sorted position ``lo + j``:
    ``block`` holds those rows' scores of positions ``lo .. lo + block.shape[1] - 1``."""
    starts = seen_ptr[rows]
    lens = seen_ptr[rows + 1] - starts
    total = int(lens.sum())
    if not total:
        return
    entry = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)
    pos = seen_pos[entry] - lo
    row = np.repeat(np.arange(len(rows)), lens)
    inside = (pos >= 0) & (pos < block.shape[1])
    block.reshape(-1)[row[inside] * block.shape[1] + pos[inside]] = -np.inf


def _product(queries: NDArray[np.float32], factors: NDArray[np.float32]) -> NDArray[np.float32]:
    """``queries @ factors.T`` as a matrix-matrix product even for one query.

    BLAS's matrix-vector path rounds differently from its matrix-matrix path, while the
    latter gives every entry the same bits whatever the other rows and columns of the
    product; a lone row is therefore doubled, so a score never depends on the batch.
    """
    if len(queries) == 1:
        return np.matmul(np.repeat(queries, 2, axis=0), factors.T)[:1]
    return np.matmul(queries, factors.T)


def _select(
    vals: NDArray[np.float32], ids: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Top-``k`` of each row by (score desc, item id asc); ``ids`` per column or per entry.

    A cheap lower bound of each row's ``k``-th largest score (:func:`_kth_lower_bound`)
    keeps the few entries that reach it; the exact keyed selection then runs on those
    only, padded to the longest row.
    """
    n, m = vals.shape
    reach = vals >= _kth_lower_bound(vals, k)[:, None]
    counts = np.count_nonzero(reach, axis=1)
    width = int(counts.max(initial=0))
    if (counts < k).any() or width > m // 2:  # NaN bounds, or a bound too weak to pay
        return _select_by_key(vals, np.broadcast_to(ids, vals.shape), k)
    flat = np.flatnonzero(reach)
    rows = np.repeat(np.arange(n), counts)
    slot = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    cand = np.full((n, width), -np.inf, np.float32)
    cand_ids = np.zeros((n, width), np.int64)  # padding: -inf, never above a reached entry
    dest = rows * width + slot
    cand.reshape(-1)[dest] = vals.reshape(-1)[flat]
    cand_ids.reshape(-1)[dest] = ids[flat - rows * m] if ids.ndim == 1 else ids.reshape(-1)[flat]
    return _select_by_key(cand, cand_ids, k)


def _kth_lower_bound(vals: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """Per row, a value that at least ``k`` entries reach and no more than the ``k``-th
    largest: the ``k``-th largest maximum of groups of 8 columns when there are enough
    groups (``k`` groups each hold an entry reaching it), else the ``k``-th largest."""
    n, m = vals.shape
    groups = m // 8
    if groups < 2 * k:
        return np.partition(vals, m - k, axis=1)[:, m - k]
    maxima = vals[:, : 8 * groups].reshape(n, 8, groups).max(axis=1)
    return np.partition(maxima, groups - k, axis=1)[:, groups - k]


def exact_topk_inner_product(
    order: NormOrder,
    queries: NDArray[np.float32],
    seen: sp.csr_matrix | None,
    k: int,
    item_vectors: NDArray[np.float32],
    max_item_norm: float,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.bool_]]:
    """Canonical top-``k`` (:mod:`recsys.models._exact`) of the rows pruning can answer.

    Parameters as :func:`topk_inner_product`, plus the unsorted ``item_vectors`` (the
    vectors ``order`` was built from) and their largest norm.

    Returns
    -------
    items : (n, k) int64, scores : (n, k) float32, ok : (n,) bool
        Where ``ok``, exactly :func:`recsys.models._exact.rescore_topk` of the dense row;
        other rows (pruning does not pay, or a near tie at the cut) are left to the caller.
    """
    it, sc, ok = topk_inner_product(order, queries, seen, _exact.fetch_width(k))
    err = _exact.rounding_bound(queries, max_item_norm)
    items, scores, resolved = _exact.rescore_sorted(
        np.where(ok[:, None], it, -1), sc, queries, item_vectors, k, err
    )
    return items, scores, ok & resolved
