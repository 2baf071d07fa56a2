"""Inner-product scores that do not depend on the BLAS kernel, the batch or the threads.

A float32 BLAS product rounds the same dot product differently for different matrix
shapes, blockings, kernels (``OPENBLAS_CORETYPE``) and thread counts. So every score that
leaves an inner-product model — a list's scores, ``score(user, item)``, a retrieval
source's scores — is the **canonical score**: the exact inner product of the float32
vectors, correctly rounded (to nearest, ties to even) to float32. It is a property of the
two vectors alone, so every routine that computes it gives the same bits on every CPU,
whatever else is in the batch. :func:`canonical_pairs` computes it with a float64 product
in any summation order (float32 products are exact in float64) and a rounding interval:
when both ends of ``s64 -+ (dim + 2) 2**-52 sum|q_i v_i|`` round to one float32, that
float32 is the answer; the rare pair whose interval straddles a float32 rounding boundary
is summed exactly with rational arithmetic.

BLAS still does the heavy part, the choice of the candidates:

1. score every item approximately (a BLAS product, or the norm-pruned product of
   :mod:`recsys.models._ip_topk`) and take each row's approximate top few;
2. bound the rounding for a row: ``|approx - canonical| <= err`` with
   ``err = (2 dim + 8) 2**-24 |q| max|v|`` (a float32 sum of ``dim`` terms is off by at
   most ``dim 2**-24 sum|q_i v_i| <= dim 2**-24 |q||v|``, Cauchy–Schwarz; the canonical
   score by one float32 rounding; the bound doubles their sum);
3. every item whose approximate score reaches the ``k``-th minus ``2 err`` is a
   candidate; no other item can reach a canonical top ``k`` score. Each row fetches its
   approximate top ``k`` plus a pad (:func:`fetch_width`); where the last fetched score
   is below that floor (nearly every row) the candidates are all fetched, and they are
   rescored canonically and ordered by (score desc, item index asc);
4. otherwise (many near ties at the cut) the row's candidates come from its whole row.

The answer is the top ``k`` of the canonical scores of every item, ties to the lower
item index, whatever produced the approximate scores.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "canonical_dot",
    "canonical_pairs",
    "fetch_width",
    "rescore_sorted",
    "rescore_topk",
    "rounding_bound",
]

_UNIT = 2.0**-24  # float32 unit round-off
#: Pairs per chunk of the canonical routines (a ~1 MiB float64 block at dimension 64).
_PAIRS_PER_CHUNK = 2048


def canonical_pairs(
    queries: NDArray[np.floating], items: NDArray[np.floating]
) -> NDArray[np.float32]:
    """Canonical scores of the pairs ``queries[j] . items[j]``.

    Parameters
    ----------
    queries, items : (n, dim) float32
        Row ``j`` of each is one pair.

    Returns
    -------
    (n,) float32
        The exact inner product of each pair, correctly rounded to float32 (NaN or inf
        where an input is not finite or the sum overflows): the same bits for a pair
        whatever other pairs are in the call, on any CPU.
    """
    q32 = np.asarray(queries, np.float32)
    v32 = np.asarray(items, np.float32)
    out = np.empty(q32.shape[0], np.float32)
    for lo in range(0, q32.shape[0], _PAIRS_PER_CHUNK):  # chunks that stay in cache
        hi = lo + _PAIRS_PER_CHUNK
        out[lo:hi] = _rounded(
            np.asarray(q32[lo:hi], np.float64), np.asarray(v32[lo:hi], np.float64)
        )
    return out


def canonical_dot(
    queries: NDArray[np.floating], items: NDArray[np.floating], cols: NDArray[np.int64]
) -> NDArray[np.float32]:
    """Canonical scores of the items ``cols[r]`` for query ``r``.

    Parameters
    ----------
    queries : (n, dim) float32
    items : (n_items, dim) float32
    cols : (n, c) int64
        Item indices per row; ``-1`` is padding.

    Returns
    -------
    (n, c) float32
        The canonical score of ``queries[r] . items[cols[r, j]]`` (as
        :func:`canonical_pairs`); NaN at the padding.
    """
    n, c = cols.shape
    out = np.full((n, c), np.nan, np.float32)
    if n == 0 or c == 0:
        return out
    q = np.asarray(np.asarray(queries, np.float32), np.float64)
    v = np.asarray(items, np.float32)
    safe = np.where(cols >= 0, cols, 0)
    step = max(1, _PAIRS_PER_CHUNK // c)
    for lo in range(0, n, step):  # chunks of pairs that stay in the CPU cache
        out[lo : lo + step] = _rounded(
            q[lo : lo + step], np.asarray(v[safe[lo : lo + step]], np.float64)
        )
    out[cols < 0] = np.nan
    return out


def _rounded(q64: NDArray[np.float64], v64: NDArray[np.float64]) -> NDArray[np.float32]:
    """Correctly rounded float32 inner products of float32-valued float64 vectors.

    ``q64`` is ``(m, dim)`` and ``v64`` ``(m, dim)`` (pairs) or ``(m, c, dim)`` (``c``
    items per query). See the module docstring.
    """
    dim = q64.shape[-1]
    if v64.ndim == 2:  # pairs
        total = np.einsum("ij,ij->i", q64, v64)
        spread = np.einsum("ij,ij->i", np.abs(q64), np.abs(v64))
    else:  # any summation order will do (only the interval matters): a batched BLAS product
        total = np.matmul(v64, q64[:, :, None])[..., 0]
        spread = np.matmul(np.abs(v64), np.abs(q64)[:, :, None])[..., 0]
    # A float64 sum of ``dim`` exact products, in any order, is off by at most
    # (dim - 1) 2**-53 spread; the slack also covers the rounding of ``spread`` itself.
    slack = spread * ((dim + 2) * 2.0**-52)
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.asarray((total - slack).astype(np.float32))
        high = np.asarray((total + slack).astype(np.float32))
    unsure = np.flatnonzero((out != high) & np.isfinite(total))
    if len(unsure):  # within the slack of a float32 rounding boundary: sum exactly
        flat = out.reshape(-1)
        q_rows = np.broadcast_to(q64[:, None, :], v64.shape) if v64.ndim == 3 else q64
        q_rows = q_rows.reshape(-1, dim)
        v_rows = v64.reshape(-1, dim)
        for i in unsure:
            flat[i] = _exact_round(q_rows[i], v_rows[i])
    nonfinite = ~np.isfinite(total)
    if nonfinite.any():
        out[nonfinite] = total[nonfinite].astype(np.float32)
    return out


def _exact_round(q: NDArray[np.float64], v: NDArray[np.float64]) -> np.float32:
    """The exact inner product of two float32-valued vectors, rounded to the nearest
    float32 (ties to the even one), by rational arithmetic."""
    exact = sum(
        (Fraction(float(a)) * Fraction(float(b)) for a, b in zip(q, v, strict=True)),
        Fraction(0),
    )
    guess = np.float32(float(exact))  # two roundings: at most one float32 step off
    options = [
        c
        for c in (
            np.nextafter(guess, np.float32(-np.inf)),
            guess,
            np.nextafter(guess, np.float32(np.inf)),
        )
        if np.isfinite(c)
    ]

    def distance(c: np.float32) -> tuple[Fraction, int]:
        return abs(Fraction(float(c)) - exact), int(np.asarray(c).view(np.uint32)) & 1

    return np.float32(min(options, key=distance))


def rounding_bound(queries: NDArray[np.floating], max_item_norm: float) -> NDArray[np.float64]:
    """Per row, a bound on ``|approximate - canonical|`` of any of the row's scores.

    ``(2 dim + 8) 2**-24 |q| max|v|``: twice the worst case of a float32 sum of ``dim``
    products in any order plus the canonical routine's final rounding (see the module
    docstring). ``inf``/NaN where a query is not finite.
    """
    q = np.asarray(queries, np.float64)
    dim = q.shape[1]
    qnorm = np.sqrt(np.einsum("ij,ij->i", q, q))
    return (2.0 * dim + 8.0) * _UNIT * qnorm * float(max_item_norm)


def max_norm(items: NDArray[np.floating]) -> float:
    """The largest row norm of ``items`` (float64), for :func:`rounding_bound`."""
    v = np.asarray(items, np.float64)
    if v.size == 0:
        return 0.0
    return float(np.sqrt(np.einsum("ij,ij->i", v, v)).max())


def order_candidates(
    cols: NDArray[np.int64], vals: NDArray[np.float32], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Top-``k`` of candidate lists by (score desc, item index asc).

    ``cols`` ``-1`` and NaN or ``-inf`` scores are ineligible; rows with fewer than ``k``
    eligible candidates are padded with ``-1``/NaN, as :func:`recsys.models.base.topk`
    pads.
    """
    from recsys.models.base import _select_by_key

    c = cols.shape[1]
    bad = (cols < 0) | ~np.isfinite(vals)
    v = np.where(bad, np.float32(-np.inf), vals).astype(np.float32)
    ids = np.where(bad, np.int64(0), cols)
    if c < k:
        v = np.pad(v, ((0, 0), (0, k - c)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, k - c)))
    items, scores = _select_by_key(v, ids, k)
    out_bad = ~np.isfinite(scores)
    items = items.astype(np.int64)
    items[out_bad] = -1
    scores = scores.astype(np.float32)
    scores[out_bad] = np.nan
    return items, scores


def fetch_width(k: int) -> int:
    """Approximate candidates a row fetches for a canonical top ``k``: ``k``, a pad for
    near ties at the cut (see :func:`rescore_sorted`) and one more that proves the cut."""
    return k + max(4, k // 8) + 1


def rescore_sorted(
    cand: NDArray[np.int64],
    approx: NDArray[np.float32],
    queries: NDArray[np.floating],
    vectors: NDArray[np.floating],
    k: int,
    err: NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.bool_]]:
    """Canonical top ``k`` from each row's approximate top ``K > k`` candidates.

    Parameters
    ----------
    cand, approx : (n, K)
        Each row's approximately best items and their approximate scores, best first
        (``-1``/NaN padding); no unlisted eligible item of the row scores higher
        approximately than the last listed one.
    queries : (n, dim) float32
    vectors : (n_items, dim) float32
        The item vectors.
    k
        Items per row, ``k < K``.
    err
        :func:`rounding_bound` of each row.

    Returns
    -------
    items : (n, k) int64, scores : (n, k) float32, resolved : (n,) bool
        Where ``resolved`` (the ``K``-th approximate score is below the ``k``-th minus
        ``2 err``, or the list holds every eligible item), the canonical top ``k``: the
        listed items within ``2 err`` of the ``k``-th are all rescored canonically, and
        no other item can reach them. Other rows are ``-1``/NaN: the caller widens them.
    """
    n, width = cand.shape
    kth = approx[:, k - 1].astype(np.float64)
    last = approx[:, width - 1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        floor = np.where(np.isfinite(kth), kth - 2.0 * err, -np.inf)
        resolved = ~np.isfinite(last) | (last < floor)
        inside = np.isfinite(approx) & (approx >= floor[:, None])  # a prefix of each row
    out_i = np.full((n, k), -1, np.int64)
    out_s = np.full((n, k), np.nan, np.float32)
    rows = np.flatnonzero(resolved)
    if len(rows):
        used = min(width, max(k, int(inside[rows].sum(axis=1).max(initial=0))))
        cols = np.where(inside[rows, :used], cand[rows, :used], -1)
        canon = canonical_dot(np.asarray(queries)[rows], vectors, cols)
        out_i[rows], out_s[rows] = order_candidates(cols, canon, k)
    return out_i, out_s, resolved


def rescore_topk(
    block: NDArray[np.float32],
    queries: NDArray[np.floating],
    items: NDArray[np.floating],
    k: int,
    *,
    max_item_norm: float | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Canonical top-``k`` of ``queries @ items.T`` from an approximate score block.

    Parameters
    ----------
    block : (n, n_items) float32
        Approximate scores (any float32 evaluation of the products); ``-inf`` marks
        ineligible items (seen, excluded).
    queries : (n, dim) float32
    items : (n_items, dim) float32
    k
        Items per row.
    max_item_norm
        ``max |items[j]|`` when the caller has it cached.

    Returns
    -------
    items : (n, k) int64 and scores : (n, k) float32
        The canonical top ``k`` of every eligible item, ties to the lower item index;
        ``-1``/NaN padding.
    """
    from recsys.models.base import topk

    n, m = block.shape
    if n == 0 or m == 0:
        return np.full((n, k), -1, np.int64), np.full((n, k), np.nan, np.float32)
    vmax = max_norm(items) if max_item_norm is None else max_item_norm
    err = rounding_bound(queries, vmax)
    width = min(fetch_width(k), m)
    cand, approx = topk(block, width)
    if width <= k:  # every item is a candidate
        return order_candidates(cand, canonical_dot(queries, items, cand), k)
    out_i, out_s, resolved = rescore_sorted(cand, approx, queries, items, k, err)
    for r in np.flatnonzero(~resolved):  # many near ties at the cut: the whole row
        kth = float(approx[r, k - 1])
        floor = kth - 2.0 * float(err[r]) if np.isfinite(kth) and np.isfinite(err[r]) else -np.inf
        row = block[r]
        with np.errstate(invalid="ignore"):
            wide = np.flatnonzero(np.isfinite(row) & (row >= floor))[None, :].astype(np.int64)
        out_i[r], out_s[r] = order_candidates(
            wide, canonical_dot(queries[r : r + 1], items, wide), k
        )
    return out_i, out_s
