"""Shared machinery of the matrix-style models: fitted-state checks, batched top-k with
seen-item exclusion and cold-start fallback, and safe save/load.

A model subclasses :class:`BaseRecommender`, declares its ``Config`` and the learned
attributes in ``_state_fields``, and implements ``_fit`` and ``_score_users``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from recsys.artifacts import check_format_version
from recsys.errors import ArtifactError, ConfigError, DataError, NotFittedError
from recsys.models import _exact
from recsys.types import TrainingData

__all__ = [
    "BaseRecommender",
    "HistoryFoldIn",
    "ModelConfig",
    "check_is_fitted",
    "csr_rows",
    "latest_entries",
    "score_pairs",
    "topk",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

FORMAT_VERSION = 1
_BLOCK_BYTES = 64 * 1024 * 1024  # dense score block budget per recommend chunk
# Threads that score and rank the blocks of one recommend call (None: the usable CPUs);
# 1 runs them in the caller. Results never depend on it.
_RECOMMEND_THREADS: int | None = None


class ModelConfig(BaseModel):
    """Frozen hyperparameters of a model; unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 42


def check_is_fitted(model: BaseRecommender) -> None:
    """Raise :class:`NotFittedError` unless every learned attribute of ``model`` is set."""
    missing = [f for f in model._all_state_fields() if getattr(model, f, None) is None]
    if missing:
        raise NotFittedError(
            f"{type(model).__name__} is not fitted (missing {', '.join(missing)}); "
            "call fit() or load() first"
        )


_TOPK_GROUP = 8  # columns per group in the two-pass top-k of wide blocks
_TOPK_ROWS_BYTES = 4 * 1024 * 1024  # rows of a wide block the grouped top-k takes at once


def topk(scores: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Row-wise top-``k`` of a dense score block, deterministic under ties.

    Ties are broken by the lower item index, so a user's list does not depend on which
    other users share the block. ``-inf`` marks ineligible items; rows with fewer than
    ``k`` eligible items are padded with index ``-1`` and score NaN.

    Wide blocks (``n_items >= 8 * max(4 k, 8)``) take a two-pass path that reads the
    block once: the columns are cut into groups of 8 (group ``j`` = columns ``j, j + G,
    j + 2G, ...``, so the group maxima are an element-wise max of contiguous slices), the
    ``k`` groups with the largest maxima are found, and the exact selection runs on their
    ``8 k`` columns only. Every item scoring at least the ``k``-th best score lies in one
    of those groups (``k`` groups each hold an item scoring at least the ``k``-th largest
    group maximum), so the answer is exact; rows where another group ties that maximum,
    or with NaN or fewer than ``k`` finite scores, are redone by the one-pass selection.
    The ``k`` groups are found the same way one level up when there are many (groups of
    8 groups, then the ``8 k`` groups inside the ``k`` best of those), and the block is
    taken a few rows at a time, so the second pass reads rows still in the CPU cache.

    Parameters
    ----------
    scores : (n, n_items) float32
    k
        Items per row; clipped to ``n_items``.

    Returns
    -------
    items : (n, k) int64 and scores : (n, k) float32
    """
    n, n_items = scores.shape
    if n and k >= 1 and n_items // _TOPK_GROUP >= max(4 * k, _TOPK_GROUP):
        return _topk_grouped(scores, k)
    return _topk_exact(scores, k)


def score_pairs(
    owner: str,
    user_idx: ArrayLike,
    item_idx: ArrayLike,
    n_users: int,
    n_items: int,
    *,
    one_d: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """The arguments of a ``score(user_idx, item_idx)`` call, checked.

    Returns ``users``, ``items`` (int64, same shape) and the mask of the pairs inside
    the vocabularies (the others score NaN). Raises :class:`DataError` naming ``owner``
    when the shapes differ (or, with ``one_d``, are not one-dimensional).
    """
    users = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
    items = np.atleast_1d(np.asarray(item_idx, dtype=np.int64))
    if users.shape != items.shape or (one_d and users.ndim != 1):
        need = "be equal 1-d shapes" if one_d else "match"
        raise DataError(
            f"{owner}.score: user_idx has shape {users.shape}, item_idx has shape "
            f"{items.shape}; they must {need}"
        )
    known = (users >= 0) & (users < n_users) & (items >= 0) & (items < n_items)
    return users, items, known


def _topk_exact(
    scores: NDArray[np.float32], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Row-wise top-``k`` by one ``argpartition`` over every column (see :func:`topk`)."""
    n, n_items = scores.shape
    kk = min(k, n_items)
    if n == 0 or kk == 0:
        return np.full((n, k), -1, np.int64), np.full((n, k), np.nan, np.float32)
    nan = np.isnan(scores)
    if nan.any():  # NaN is no score: rank it as ineligible (-inf), padded out below
        scores = np.where(nan, np.float32(-np.inf), scores)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    thr = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
    above = scores > thr
    need = kk - above.sum(axis=1, keepdims=True)
    tie = scores == thr
    chosen = above | (tie & (np.cumsum(tie, axis=1) <= need))
    # flat positions: a 2-d np.nonzero is several times slower on wide blocks
    cols = (np.flatnonzero(chosen) % n_items).reshape(n, kk)
    vals = np.take_along_axis(scores, cols, axis=1)
    order = np.lexsort((cols, -vals), axis=1)
    items = np.take_along_axis(cols, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    bad = ~np.isfinite(vals)
    items[bad] = -1
    vals[bad] = np.nan
    if kk < k:
        items = np.pad(items, ((0, 0), (0, k - kk)), constant_values=-1)
        vals = np.pad(vals, ((0, 0), (0, k - kk)), constant_values=np.nan)
    return items, vals


def _topk_grouped(
    scores: NDArray[np.float32], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Two-pass top-``k`` of a wide block, a few rows at a time (see :func:`topk`)."""
    n, n_items = scores.shape
    scores = np.ascontiguousarray(scores)  # the passes index the block's flat buffer
    step = max(1, _TOPK_ROWS_BYTES // (4 * n_items))
    if n <= step:
        return _topk_grouped_rows(scores, k)
    items = np.empty((n, k), np.int64)
    top_vals = np.empty((n, k), np.float32)
    for start in range(0, n, step):
        sl = slice(start, start + step)
        items[sl], top_vals[sl] = _topk_grouped_rows(scores[sl], k)
    return items, top_vals


def _topk_grouped_rows(
    scores: NDArray[np.float32], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Two-pass top-``k`` of a C-contiguous wide block (see :func:`topk`)."""
    n = scores.shape[0]
    rows, groups = _top_groups(_group_maxima(scores), k)
    if len(rows) == n:
        items, top_vals = _select_members(scores, rows, groups, k)
        return items, top_vals
    items = np.empty((n, k), np.int64)
    top_vals = np.empty((n, k), np.float32)
    if len(rows):
        items[rows], top_vals[rows] = _select_members(scores, rows, groups, k)
    redo = np.ones(n, bool)
    redo[rows] = False
    redo_rows = np.flatnonzero(redo)
    items[redo_rows], top_vals[redo_rows] = _topk_exact(scores[redo_rows], k)
    return items, top_vals


def _group_maxima(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Maxima of the column groups of ``x``: group ``j`` = columns ``j + G l`` (``l < 8``,
    ``G = m // 8``) and, for ``j < m - 8 G``, the last column ``8 G + j``."""
    n, m = x.shape
    g, n_groups = _TOPK_GROUP, m // _TOPK_GROUP
    maxima = x[:, : n_groups * g].reshape(n, g, n_groups).max(axis=1)
    if m > n_groups * g:  # the last columns join groups 0..rem-1
        np.maximum(
            maxima[:, : m - n_groups * g], x[:, n_groups * g :], out=maxima[:, : m - n_groups * g]
        )
    return maxima


def _members(
    x: NDArray[np.float32], rows: NDArray[np.int64], groups: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Flat positions in ``x`` and values of the members of ``groups`` (see
    :func:`_group_maxima`) of ``x``'s rows ``rows``; a missing last member is ``-inf``."""
    m = x.shape[1]
    g, n_groups = _TOPK_GROUP, m // _TOPK_GROUP
    base = groups + (rows * m)[:, None]
    flat = (base[:, None, :] + n_groups * np.arange(g)[:, None]).reshape(
        len(rows), g * groups.shape[1]
    )
    rem = m - n_groups * g
    if rem:  # groups j < rem have a 9th member, column 8 G + j; the others a -inf slot
        flat = np.concatenate([flat, np.where(groups < rem, base + n_groups * g, base)], axis=1)
    vals = np.take(x.reshape(-1), flat)
    if rem:
        vals[:, g * groups.shape[1] :][groups >= rem] = -np.inf
    return flat, vals


def _top_groups(maxima: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows of ``maxima`` whose ``k`` largest entries are unambiguous, and their columns.

    A row qualifies when exactly ``k`` entries reach its ``k``-th largest and that is
    finite; NaN anywhere disqualifies it (group maxima carry NaN up every level). Wide
    rows are narrowed first by the same search over their group maxima: the ``k``-th
    largest entry is at least the ``k``-th largest group maximum, so every entry reaching
    it lies in the ``k`` groups with the largest maxima.
    """
    n, m = maxima.shape
    if m // _TOPK_GROUP >= max(2 * k, _TOPK_GROUP):
        rows, groups = _top_groups(_group_maxima(maxima), k)
        flat, vals = _members(maxima, rows, groups)
        ok_extra = None
    else:
        rows, flat, vals = np.arange(n), None, maxima
        ok_extra = ~np.isnan(maxima).any(axis=1)
    c = vals.shape[1]
    thr = np.partition(vals, c - k, axis=1)[:, c - k, None]
    reach = vals >= thr
    ok = (np.count_nonzero(reach, axis=1) == k) & np.isfinite(thr[:, 0])
    if ok_extra is not None:
        ok &= ok_extra
    if not ok.all():
        rows, reach = rows[ok], reach[ok]
        if flat is not None:
            flat = flat[ok]
    hits = np.flatnonzero(reach)
    if flat is None:
        return rows, (hits % m).reshape(len(rows), k)
    return rows, flat.reshape(-1)[hits].reshape(len(rows), k) - (rows * m)[:, None]


def _select_members(
    scores: NDArray[np.float32], rows: NDArray[np.int64], groups: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact top-``k`` of ``scores``' rows ``rows`` among the members of ``groups``."""
    flat, vals = _members(scores, rows, groups)
    sel, sel_vals = _select_by_key(vals, flat, k)  # flat positions order as columns do
    items = sel - (rows * scores.shape[1])[:, None]
    bad = np.isinf(sel_vals)  # +inf is not a score to recommend, as in _topk_exact
    items[bad], sel_vals[bad] = -1, np.nan
    return items, sel_vals


def _select_by_key(
    vals: NDArray[np.float32], cols: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Top-``k`` of each row by (score desc, column asc) through one unique int64 key.

    The float32 score becomes an order-preserving int32 (negative values get their low
    31 bits flipped) in the key's high half, ``~column`` its low half: keys are unique,
    so ``partition`` + ``sort`` give the exact order of :func:`topk` with no tie
    bookkeeping. Columns must be below ``2**32``.
    """
    m = vals.shape[1]
    bits = (vals + np.float32(0.0)).view(np.int32)  # -0.0 -> +0.0: equal scores must tie
    ordered = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    low = np.int64(0xFFFFFFFF)
    keys = (ordered.astype(np.int64) << 32) | (low - cols)
    top = np.partition(keys, m - k, axis=1)[:, m - k :]
    top.sort(axis=1)
    top = top[:, ::-1]
    items = low - (top & low)
    high = (top >> 32).astype(np.int32)
    return items, (high ^ ((high >> 31) & np.int32(0x7FFFFFFF))).view(np.float32)


def csr_rows(matrix: sp.csr_matrix, rows: NDArray[np.int64]) -> sp.csr_matrix:
    """``matrix[rows]`` (a new matrix), as a cheap slice when ``rows`` is a run of
    consecutive rows (one user, a block of users, every row of a batch)."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
        return matrix[rows[0] : rows[-1] + 1]
    return matrix[rows]


def latest_entries(
    histories: sp.csr_matrix, depth: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """The latest ``depth`` entries of every row of a history matrix.

    Stored values order a row's items in time (larger = later; ties to the higher item
    index). Returns ``rows``, ``items`` and ``age`` (0 = the row's latest item) of the
    kept entries, each row's latest first.
    """
    h = histories
    rows = np.repeat(np.arange(h.shape[0], dtype=np.int64), np.diff(h.indptr))
    order = np.lexsort((-h.indices, -h.data, rows))
    age = np.arange(h.nnz) - h.indptr[rows[order]]
    keep = age < depth
    return rows[order][keep], h.indices[order][keep].astype(np.int64), age[keep]


def _mask_rows(scores: NDArray[np.float32], rows: sp.csr_matrix) -> None:
    """Set ``scores[r, j] = -inf`` for every stored entry ``(r, j)`` of ``rows``."""
    n_items = scores.shape[1]
    if scores.flags.c_contiguous:  # flat positions: cheaper than a 2-d fancy index
        flat = np.repeat(np.arange(0, rows.shape[0] * n_items, n_items), np.diff(rows.indptr))
        flat += rows.indices
        scores.reshape(-1)[flat] = -np.inf
        return
    r = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    scores[r, rows.indices] = -np.inf


_pool: ThreadPoolExecutor | None = None
_pool_threads = 0
_pool_lock = threading.Lock()
_in_pool = threading.local()


def _forget_pool() -> None:  # a forked child does not inherit the parent's threads
    global _pool, _pool_threads
    _pool, _pool_threads = None, 0


os.register_at_fork(after_in_child=_forget_pool)


def _recommend_threads() -> int:
    if _RECOMMEND_THREADS is not None:
        return max(1, _RECOMMEND_THREADS)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _block_pool(threads: int) -> ThreadPoolExecutor:
    """The process-wide pool the blocks of :meth:`BaseRecommender.recommend` run on.

    One pool for every caller: concurrent calls (the batch job's chunk threads) share its
    threads, so a call that runs alone, such as the job's last chunk, still uses them all.
    """
    global _pool, _pool_threads
    with _pool_lock:
        if _pool is None or _pool_threads != threads:  # a replaced pool ends once unused
            _pool = ThreadPoolExecutor(
                threads, thread_name_prefix="recsys-blocks", initializer=_mark_pool_thread
            )
            _pool_threads = threads
        return _pool


def _mark_pool_thread() -> None:
    _in_pool.active = True


def _run_blocks(fn: Callable[[int], None], starts: Sequence[int]) -> None:
    """``fn(start)`` for every block start, on the block pool when there are several.

    Blocks write disjoint rows of the caller's output, so the result does not depend on
    the order they run in. A call made from a pool thread runs its blocks in place (a
    nested wait on the same pool could deadlock).
    """
    threads = _recommend_threads()
    if threads == 1 or len(starts) < 2 or getattr(_in_pool, "active", False):
        for start in starts:
            fn(start)
        return
    pool = _block_pool(threads)
    futures: list[Future[None]] = [pool.submit(fn, start) for start in starts]
    try:
        for fut in futures:
            fut.result()
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise


class _BlockBuffers:
    """Score-block buffers of the threads that run :meth:`BaseRecommender.recommend` blocks.

    A fresh 64 MiB block is a fresh ``mmap``: the kernel faults in and zeroes every page
    before the product can write it, which costs about a quarter of the product itself.
    Each thread instead reuses one buffer for as long as some ``recommend`` call is
    running; when the last one ends every buffer is released, so an idle process holds
    none. A block is fully written before it is read, so nothing carries over; a nested
    lease on the same thread (a model whose scoring recommends) gets a fresh array.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._local = threading.local()

    def __enter__(self) -> _BlockBuffers:
        with self._lock:
            self._active += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:  # the buffers go with the old thread-local object
                self._local = threading.local()

    @contextmanager
    def lease(self, rows: int, cols: int) -> Iterator[NDArray[np.float32]]:
        """A C-contiguous ``(rows, cols) float32`` scratch array for the calling thread."""
        local = self._local
        if getattr(local, "busy", False):
            yield np.empty((rows, cols), np.float32)
            return
        buf: NDArray[np.float32] | None = getattr(local, "buf", None)
        if buf is None or buf.size < rows * cols:
            local.buf = None  # free the smaller one before allocating
            buf = local.buf = np.empty(rows * cols, np.float32)
        local.busy = True
        try:
            yield buf[: rows * cols].reshape(rows, cols)
        finally:
            local.busy = False


_block_buffers = _BlockBuffers()


class BaseRecommender(ABC):
    """Base of the matrix-style models (popular, KNN, factor models).

    Subclasses set ``name``, ``Config`` and ``_state_fields`` and implement
    :meth:`_fit` and :meth:`_score_users`. The base provides the whole public protocol:
    ``fit`` validation, ``score``, batched ``recommend`` with seen-item exclusion and
    popularity for unknown users, and ``save``/``load`` (JSON + ``.npz``, no pickle).

    Stability: provisional
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    _state_fields: ClassVar[tuple[str, ...]] = ()
    _base_state: ClassVar[tuple[str, ...]] = ("user_items_", "item_popularity_")

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise ConfigError(f"{type(self).__name__}: pass either config or keyword params")
        if config is None:
            try:
                config = self.Config(**params)
            except ValidationError as exc:
                raise ConfigError(f"{type(self).__name__}: invalid config: {exc}") from exc
        elif not isinstance(config, self.Config):
            raise ConfigError(
                f"{type(self).__name__}: config must be {self.Config.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.user_items_: sp.csr_matrix | None = None
        self.item_popularity_: NDArray[np.float32] | None = None
        for f in self._state_fields:
            setattr(self, f, None)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"

    @classmethod
    def _all_state_fields(cls) -> tuple[str, ...]:
        return cls._base_state + cls._state_fields

    # ------------------------------------------------------------------ fitting
    def fit(self, data: TrainingData, *, show_progress: bool = True) -> Self:
        """Learn from ``data``; returns ``self``. See :class:`recsys.protocols.Recommender`."""
        if not isinstance(data, TrainingData):
            raise DataError(
                f"{type(self).__name__}.fit expects TrainingData, got {type(data).__name__}; "
                "build one with TrainingData.from_frame(df)"
            )
        if data.n_interactions == 0:
            raise DataError(f"{type(self).__name__}.fit: the training data has no interactions")
        self.user_items_ = data.user_items
        self.item_popularity_ = np.asarray(self.user_items_.sum(axis=0), dtype=np.float32).ravel()
        self._fit(data, show_progress=show_progress)
        logger.info(
            "fitted model=%s n_users=%d n_items=%d n_interactions=%d",
            self.name,
            data.n_users,
            data.n_items,
            data.n_interactions,
        )
        return self

    @abstractmethod
    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        """Set the model's learned attributes from ``data``."""

    @abstractmethod
    def _score_users(self, user_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        """Dense ``(len(user_idx), n_items) float32`` scores of known users."""

    def _score_users_into(
        self, user_idx: NDArray[np.int64], out: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """Scores of known users, as :meth:`_score_users`, written into ``out`` if possible.

        ``out`` is a C-contiguous ``(len(user_idx), n_items) float32`` scratch block the
        caller reuses; the returned block is ``out`` or a new array and must equal
        :meth:`_score_users` bit for bit. The default ignores ``out``.
        """
        return self._score_users(user_idx)

    # ------------------------------------------------------------------ inner products
    def _user_queries(
        self, user_idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float32]] | None:
        """For a model whose score of ``(u, i)`` is ``q_u . v_i``: the users of ``user_idx``
        scored that way (a mask) and their query vectors ``(mask.sum(), dim) float32``.

        ``None`` (the default) for the other models, whose scores come from sparse
        products that are already exact per row. Where this returns vectors, final scores
        are computed by :func:`recsys.models._exact.canonical_dot` against
        :meth:`_item_vectors`, so they never depend on the batch or the BLAS kernel.
        """
        return None

    def _item_vectors(self) -> tuple[NDArray[np.float32], float] | None:
        """``(n_items, dim) float32`` item vectors of :meth:`_user_queries` and their
        largest norm (cached per fitted state); ``None`` (the default) for the models that
        are not inner-product models."""
        return None

    def _inner_items(self) -> tuple[NDArray[np.float32], float]:
        """:meth:`_item_vectors` where the caller has inner-product queries."""
        found = self._item_vectors()
        if found is None:  # an internal invariant: only inner-product models get here
            raise TypeError(f"{type(self).__name__} has queries but no item vectors")
        return found

    def _vectors_and_norm(self, vectors: NDArray[np.float32]) -> tuple[NDArray[np.float32], float]:
        """``vectors`` and their largest norm, the norm computed once per array."""
        return vectors, self._derived("_max_item_norm", vectors, lambda: _exact.max_norm(vectors))

    def _rank_rows(
        self,
        block: NDArray[np.float32],
        k: int,
        parts: tuple[NDArray[np.bool_], NDArray[np.float32]] | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` of a masked score block; rows of ``parts``' mask are ranked by their
        canonical inner products (:func:`recsys.models._exact.rescore_topk`)."""
        if parts is None or not parts[0].any():
            return topk(block, k)
        mask, queries = parts
        vectors, vmax = self._inner_items()
        if mask.all():
            return _exact.rescore_topk(block, queries, vectors, k, max_item_norm=vmax)
        items = np.empty((len(block), k), np.int64)
        scores = np.empty((len(block), k), np.float32)
        items[mask], scores[mask] = _exact.rescore_topk(
            block[mask], queries, vectors, k, max_item_norm=vmax
        )
        items[~mask], scores[~mask] = topk(block[~mask], k)
        return items, scores

    def _history_pair_scores(
        self,
        histories: sp.csr_matrix,
        rows: ArrayLike,
        items: ArrayLike,
        block_of: Callable[
            [sp.csr_matrix],
            tuple[NDArray[np.float32], tuple[NDArray[np.bool_], NDArray[np.float32]] | None],
        ],
    ) -> NDArray[np.float32]:
        """Scores of the pairs ``(rows[j], items[j])`` of checked history rows, block by
        block: ``block_of`` gives a block's masked scores and inner-product rows (as for
        :meth:`_rank_rows`), :meth:`_pair_scores` reads the pairs off it."""
        rows = np.asarray(rows, np.int64)
        items = np.asarray(items, np.int64)
        out = np.full(len(rows), np.nan, np.float32)
        bs = self._block_size()
        for start in range(0, histories.shape[0], bs):
            chunk = histories[start : start + bs]
            block, parts = block_of(chunk)
            sel = (rows >= start) & (rows < start + chunk.shape[0])
            out[sel] = self._pair_scores(block, parts, rows[sel] - start, items[sel])
        return out

    def _pair_scores(
        self,
        block: NDArray[np.float32],
        parts: tuple[NDArray[np.bool_], NDArray[np.float32]] | None,
        rows: NDArray[np.int64],
        items: NDArray[np.int64],
    ) -> NDArray[np.float32]:
        """The scores :meth:`_rank_rows` ``(block, n_items, parts)`` gives the pairs
        ``(rows[j], items[j])``: NaN for ineligible (``-inf``) items, the canonical inner
        product on the rows of ``parts``' mask, the block's value elsewhere."""
        out = np.array(block[rows, items], dtype=np.float32)
        out[out == -np.inf] = np.nan
        if parts is not None and parts[0].any():
            mask, queries = parts
            position = np.cumsum(mask) - 1  # row -> its query among the masked rows
            sel = mask[rows] & ~np.isnan(out)
            if sel.any():
                vectors, _ = self._inner_items()
                out[sel] = _exact.canonical_dot(
                    queries[position[rows[sel]]], vectors, items[sel][:, None]
                )[:, 0]
        return out

    # ------------------------------------------------------------------ shapes
    @property
    def n_users(self) -> int:
        """Users in the training vocabulary."""
        check_is_fitted(self)
        assert self.user_items_ is not None
        return int(self.user_items_.shape[0])

    @property
    def n_items(self) -> int:
        """Items in the training vocabulary."""
        check_is_fitted(self)
        assert self.user_items_ is not None
        return int(self.user_items_.shape[1])

    def _derived(self, key: str, source: object, build: Callable[[], _T]) -> _T:
        """A value derived from ``source`` (an array of the fitted state), built once per
        ``source`` object and rebuilt when a refit or load replaces it. Kept in the
        instance under ``key``; never saved."""
        cached = self.__dict__.get(key)
        if cached is None or cached[0] is not source:
            cached = (source, build())
            self.__dict__[key] = cached
        return cached[1]

    def _block_size(self) -> int:
        return max(1, _BLOCK_BYTES // (4 * max(1, self.n_items)))

    # ------------------------------------------------------------------ scoring
    def score(self, user_idx: ArrayLike, item_idx: ArrayLike) -> NDArray[np.float32]:
        """Scores of user-item pairs; NaN for unknown users or items."""
        check_is_fitted(self)
        users, items, ok = score_pairs(
            type(self).__name__, user_idx, item_idx, self.n_users, self.n_items
        )
        out = np.full(users.shape, np.nan, np.float32)
        uniq, inverse = np.unique(users[ok], return_inverse=True)
        parts = self._user_queries(uniq)
        if parts is not None:  # canonical inner products, pair by pair
            inner, queries = parts
            row = np.full(len(uniq), -1, np.int64)
            row[inner] = np.arange(int(inner.sum()))
            pair_row = row[inverse]
            sel = pair_row >= 0
            pos = np.flatnonzero(ok)
            vectors, _ = self._inner_items()
            out[pos[sel]] = _exact.canonical_pairs(queries[pair_row[sel]], vectors[items[ok][sel]])
            ok = ok.copy()
            ok[pos[sel]] = False  # the other pairs (e.g. popularity rows) as below
            uniq, inverse = np.unique(users[ok], return_inverse=True)
        pos = np.flatnonzero(ok)
        bs = self._block_size()
        for start in range(0, len(uniq), bs):
            block = self._score_users(uniq[start : start + bs])
            sel = (inverse >= start) & (inverse < start + bs)
            out[pos[sel]] = block[inverse[sel] - start, items[ok][sel]]
        return out

    def recommend(
        self, user_idx: ArrayLike, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items per user; unknown users get the popularity list."""
        check_is_fitted(self)
        if k < 1:
            raise ConfigError(f"{type(self).__name__}.recommend: k must be >= 1, got {k}")
        users = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
        known = (users >= 0) & (users < self.n_users)
        items = np.empty((len(users), k), np.int64)
        scores = np.empty((len(users), k), np.float32)
        bs = self._block_size()
        assert self.user_items_ is not None and self.item_popularity_ is not None
        user_items, popularity = self.user_items_, self.item_popularity_

        def block_topk(start: int) -> None:
            sl = slice(start, start + bs)
            u, kn = users[sl], known[sl]
            with _block_buffers.lease(len(u), self.n_items) as buf:
                if kn.all():  # the common case: score in place, no copy into a second block
                    block = self._score_users_into(u, buf)
                else:
                    block = buf
                    if kn.any():
                        block[kn] = self._score_users(u[kn])
                    block[~kn] = popularity
                if exclude_seen and kn.all():
                    _mask_rows(block, csr_rows(user_items, u))
                elif exclude_seen and kn.any():
                    seen = user_items[np.where(kn, u, 0)]
                    seen = sp.csr_matrix(seen.multiply(kn[:, None].astype(np.float32)))
                    seen.eliminate_zeros()
                    _mask_rows(block, seen)
                parts = self._user_queries(u[kn]) if kn.any() else None
                if parts is not None and not kn.all():
                    inner = np.zeros(len(u), bool)
                    inner[np.flatnonzero(kn)[parts[0]]] = True
                    parts = (inner, parts[1])
                items[sl], scores[sl] = self._rank_rows(block, k, parts)

        with _block_buffers:
            _run_blocks(block_topk, range(0, len(users), bs))
        return items, scores

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write ``config.json`` and ``state.npz`` (arrays only, no pickle) to ``path``."""
        check_is_fitted(self)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, NDArray[Any]] = {}
        for f in self._all_state_fields():
            value = getattr(self, f)
            if sp.issparse(value):
                csr = sp.csr_matrix(value)
                arrays[f"{f}__data"] = csr.data
                arrays[f"{f}__indices"] = csr.indices
                arrays[f"{f}__indptr"] = csr.indptr
                arrays[f"{f}__shape"] = np.asarray(csr.shape, np.int64)
            else:
                arrays[f] = np.asarray(value)
        np.savez(path / "state.npz", **arrays)  # type: ignore[arg-type]
        meta = {
            "model": self.name,
            "format_version": FORMAT_VERSION,
            "params": self.config.model_dump(mode="json"),
        }
        (path / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save`."""
        path = Path(path)
        try:
            meta = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
            raise ArtifactError(
                f"{cls.__name__}: cannot read {path / 'config.json'}: {exc}"
            ) from exc
        if meta.get("model") != cls.name:
            raise ArtifactError(
                f"{cls.__name__}: {path} holds model {meta.get('model')!r}, expected {cls.name!r}"
            )
        check_format_version(meta, FORMAT_VERSION, cls.__name__, path)
        model = cls(**meta["params"])
        try:
            with np.load(path / "state.npz", allow_pickle=False) as npz:
                for f in cls._all_state_fields():
                    if f"{f}__data" in npz:
                        shape = tuple(int(s) for s in npz[f"{f}__shape"])
                        value: Any = sp.csr_matrix(
                            (npz[f"{f}__data"], npz[f"{f}__indices"], npz[f"{f}__indptr"]),
                            shape=shape,
                        )
                    else:
                        value = npz[f]
                    setattr(model, f, value)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:  # truncated .npz
            raise ArtifactError(f"{cls.__name__}: cannot read {path / 'state.npz'}: {exc}") from exc
        return model


class HistoryFoldIn(BaseRecommender):
    """Base of models that score an arbitrary item history (fold-in).

    Subclasses implement :meth:`_score_history`. By default scoring a known user is
    scoring its training row (popular, KNN, EASE), so fold-in of a training user's own
    history gives exactly the fitted recommendations; models with learned user state
    (factor models, the CTR models) override :meth:`_score_users` and fold a history in
    their own way.
    """

    @abstractmethod
    def _score_history(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        """Dense ``(n, n_items) float32`` scores for the rows of a history matrix."""

    def _score_users(self, user_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        assert self.user_items_ is not None
        return self._score_history(csr_rows(self.user_items_, user_idx))

    def recommend_for_history(
        self, histories: sp.csr_matrix, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items for each row of a ``(n, n_items)`` history matrix (fold-in).

        Empty rows get the popularity list, as unknown users do in :meth:`recommend`.
        See :class:`recsys.protocols.FoldIn`. Item indices outside the vocabulary must be
        removed by the caller (the pipeline maps unknown ids away).
        """
        check_is_fitted(self)
        h = sp.csr_matrix(histories, dtype=np.float32)
        if h.shape[1] != self.n_items:
            raise DataError(
                f"{type(self).__name__}.recommend_for_history: histories have {h.shape[1]} "
                f"columns, the model has {self.n_items} items"
            )
        n = h.shape[0]
        items = np.empty((n, k), np.int64)
        scores = np.empty((n, k), np.float32)
        bs = self._block_size()
        for start in range(0, n, bs):
            block, parts = self._history_block(h[start : start + bs], exclude_seen)
            items[start : start + bs], scores[start : start + bs] = self._rank_rows(block, k, parts)
        return items, scores

    def _history_block(
        self, rows: sp.csr_matrix, exclude_seen: bool
    ) -> tuple[NDArray[np.float32], tuple[NDArray[np.bool_], NDArray[np.float32]] | None]:
        """The masked score block of some history rows and, for an inner-product model,
        the rows it scores by inner product with their queries (see :meth:`_rank_rows`).
        Empty rows score popularity, as unknown users do."""
        queries = self._history_queries(rows)
        block = self._score_history(rows) if queries is None else self._score_queries(queries)
        empty = np.diff(rows.indptr) == 0
        if empty.any():  # no history: the cold-start answer, as for unknown users
            assert self.item_popularity_ is not None
            block[empty] = self.item_popularity_
        if exclude_seen:
            _mask_rows(block, rows)
        if queries is None:
            return block, None
        inner = ~empty & self._queries_scored(queries)
        return block, (inner, queries[inner])

    def score_history_pairs(
        self,
        histories: sp.csr_matrix,
        rows: NDArray[np.int64],
        items: NDArray[np.int64],
        *,
        exclude_seen: bool = True,
    ) -> NDArray[np.float32]:
        """The score :meth:`recommend_for_history` gives item ``items[j]`` in the full-depth
        list (``k = n_items``) of history row ``rows[j]``, without ranking the catalogue.

        NaN where that list leaves the item out (a seen item with ``exclude_seen``).
        Inner-product models score the pairs by the canonical routine, as their lists do
        (:mod:`recsys.models._exact`), so the values are the list's bit for bit.

        Returns
        -------
        (len(rows),) float32
        """
        check_is_fitted(self)
        h = sp.csr_matrix(histories, dtype=np.float32)
        if h.shape[1] != self.n_items:
            raise DataError(
                f"{type(self).__name__}.score_history_pairs: histories have {h.shape[1]} "
                f"columns, the model has {self.n_items} items"
            )
        return self._history_pair_scores(
            h, rows, items, lambda chunk: self._history_block(chunk, exclude_seen)
        )

    def _history_queries(self, histories: sp.csr_matrix) -> NDArray[np.float32] | None:
        """Query vectors ``(n, dim) float32`` of history rows for an inner-product model
        (see :meth:`_user_queries`); ``None`` (the default) for the other models."""
        return None

    def _queries_scored(self, queries: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Rows of :meth:`_history_queries` that the model scores by inner product (the
        others, e.g. a zero content profile, get another answer from
        :meth:`_score_queries`)."""
        return np.ones(len(queries), bool)

    def _score_queries(self, queries: NDArray[np.float32]) -> NDArray[np.float32]:
        """Approximate ``(n, n_items) float32`` scores of query vectors (a BLAS product);
        used only to choose the candidates that are then scored canonically."""
        vectors, _ = self._inner_items()
        return np.asarray(queries @ vectors.T, np.float32)
