"""Neighbourhood collaborative filtering: item-based and user-based k-nearest neighbours.

* :class:`ItemKNN` — Sarwar, Karypis, Konstan and Riedl, "Item-based collaborative
  filtering recommendation algorithms", WWW 2001; Deshpande and Karypis, "Item-based
  top-N recommendation algorithms", TOIS 2004.
* :class:`UserKNN` — Herlocker, Konstan, Borchers and Riedl, "An algorithmic framework for
  performing collaborative filtering", SIGIR 1999; Resnick et al., "GroupLens", CSCW 1994.

Similarities (``similarity=``), computed between the vectors of two entities (items for
ItemKNN, users for UserKNN) over the other side (their "features"):

* ``"cosine"`` — cosine of the binary vectors.
* ``"adjusted_cosine"`` — cosine of ratings centred by the *feature's* mean rating (for
  items: each user's mean, Sarwar et al. 2001 section 3.1.3). Needs ratings.
* ``"pearson"`` — cosine of ratings centred by the *entity's own* mean rating (Pearson
  correlation over the observed entries). Needs ratings.
* ``"tfidf"`` — cosine of TF-IDF weighted vectors, ``idf_f = log(n_entities) -
  log1p(df_f)`` per feature (implicit's ``TFIDFRecommender`` weighting).
* ``"bm25"`` — plain dot product of BM25 weighted vectors (Robertson and Zaragoza 2009;
  implicit's ``BM25Recommender`` weighting): ``w = (k1 + 1) / (k1 L_e + 1) idf_f`` with
  the length norm ``L_e = 1 - b + b len_e / mean_len``.

Shrinkage (normalised similarities only): ``sim = dot / (|a| |b| + shrinkage)``, which
damps pairs whose vectors are short (little support). Only the ``n_neighbors`` strongest
*positive* similarities of each entity are kept; ties go to the lower index.

Everything is sparse matrix arithmetic; the only dense blocks are bounded
``(block, n_entities)`` similarity rows. No dense ``n_users x n_users`` matrix is ever
built: UserKNN computes the similarity rows of the users it scores, on demand.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field, model_validator
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from recsys.errors import DataError
from recsys.models.base import HistoryFoldIn, ModelConfig, check_is_fitted, csr_rows, topk
from recsys.types import TrainingData

__all__ = ["ItemKNN", "ItemKNNConfig", "Similarity", "UserKNN", "UserKNNConfig"]

logger = logging.getLogger(__name__)

Similarity = Literal["cosine", "adjusted_cosine", "pearson", "tfidf", "bm25"]

_RATED: frozenset[str] = frozenset({"adjusted_cosine", "pearson"})
_SIM_BLOCK_BYTES = 64 * 1024 * 1024  # dense similarity rows per block
_DENSE_GRAM_ENTRIES = 1 << 25  # densify the (users x items) matrix below this size


class _KNNConfig(ModelConfig):
    """Hyperparameters shared by the neighbourhood models.

    Attributes
    ----------
    n_neighbors
        Neighbours kept per entity (top-K pruning).
    similarity
        ``"cosine"``, ``"adjusted_cosine"``, ``"pearson"``, ``"tfidf"`` or ``"bm25"``
        (see the module docstring); the rating-based two need ratings in the data.
    shrinkage
        ``sim = dot / (|a| |b| + shrinkage)``; not defined for ``"bm25"`` (no norms), where
        it must be 0 and is 0 when not given.
    bm25_k1, bm25_b
        BM25 term-saturation and length-normalisation parameters.
    """

    n_neighbors: int = Field(default=50, ge=1)
    similarity: Similarity = "cosine"
    shrinkage: float = Field(default=0.0, ge=0.0)
    bm25_k1: float = Field(default=1.2, ge=0.0)
    bm25_b: float = Field(default=0.75, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _bm25_default_shrinkage(cls, values: Any) -> Any:
        # The tuned shrinkage default is for normalised similarities; BM25 has no norms.
        if isinstance(values, dict) and values.get("similarity") == "bm25":
            values = {"shrinkage": 0.0, **values}
        return values

    @model_validator(mode="after")
    def _shrinkage_needs_norms(self) -> _KNNConfig:
        if self.similarity == "bm25" and self.shrinkage > 0:
            raise ValueError(
                f"shrinkage={self.shrinkage} has no meaning with similarity='bm25' (a plain "
                "dot product without norms); use shrinkage=0 or a normalised similarity"
            )
        return self


# ----------------------------------------------------------------------------- weighting
def _interaction_values(data: TrainingData, similarity: str, owner: str) -> sp.csr_matrix:
    """The ``(n_users, n_items)`` matrix a similarity is computed from.

    The binary interaction matrix, or for the rating-based similarities the ratings
    (repeated (user, item) ratings averaged).

    Raises
    ------
    DataError
        A rating-based similarity on data without ratings.
    """
    if similarity not in _RATED:
        return data.user_items
    if data.rating is None:
        raise DataError(
            f"{owner}: similarity={similarity!r} needs explicit ratings, but the training data "
            "has none (no 'rating' column, or some ratings are missing); use 'cosine', "
            "'tfidf' or 'bm25' for implicit feedback"
        )
    shape = (data.n_users, data.n_items)
    total = sp.csr_matrix(
        (data.rating.astype(np.float64), (data.user_idx, data.item_idx)), shape=shape
    )
    count = sp.csr_matrix((np.ones(data.n_interactions), (data.user_idx, data.item_idx)), shape)
    total.sort_indices()
    count.sort_indices()
    return sp.csr_matrix(
        (total.data / count.data, total.indices, total.indptr), shape=shape, dtype=np.float32
    )


def _feature_stats(
    vectors: sp.csr_matrix, similarity: str
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-feature statistics a weighting needs, and the mean entity length (for BM25).

    ``vectors`` is ``(n_entities, n_features)``: binary for tfidf/bm25, ratings for
    adjusted cosine. Returns ``(n_features,) float32`` (idf, or mean rating) and a
    ``(1,) float32`` mean row length.
    """
    n_entities, n_features = vectors.shape
    stats = np.zeros(n_features, np.float32)
    mean_length = np.zeros(1, np.float32)
    if similarity in ("tfidf", "bm25"):
        df = np.bincount(vectors.indices, minlength=n_features).astype(np.float64)
        stats[:] = np.log(max(n_entities, 1)) - np.log1p(df)
        mean_length[0] = vectors.nnz / max(n_entities, 1)
    elif similarity == "adjusted_cosine":
        counts = np.bincount(vectors.indices, minlength=n_features)
        sums = np.bincount(vectors.indices, weights=vectors.data, minlength=n_features)
        stats[:] = np.divide(sums, counts, out=np.zeros(n_features), where=counts > 0)
    return stats, mean_length


def _weigh(
    vectors: sp.csr_matrix,
    similarity: str,
    stats: NDArray[np.float32],
    mean_length: NDArray[np.float32],
    k1: float,
    b: float,
) -> sp.csr_matrix:
    """Entity vectors weighted for ``similarity``: ``(n_entities, n_features) float32`` CSR.

    ``vectors`` holds ratings for the rating-based similarities; for the others every
    non-zero entry is one interaction.
    """
    out = sp.csr_matrix(vectors, dtype=np.float32, copy=True)
    out.sum_duplicates()
    if similarity not in _RATED:  # stored zeros are no interaction (a 0 rating is a rating)
        out.eliminate_zeros()
    out.sort_indices()
    rows = np.repeat(np.arange(out.shape[0]), np.diff(out.indptr))
    if similarity == "cosine":
        out.data[:] = 1.0
    elif similarity == "tfidf":
        out.data = stats[out.indices].astype(np.float32)  # sqrt(1) * idf
    elif similarity == "bm25":
        length = np.diff(out.indptr).astype(np.float32)
        norm = (1.0 - b) + b * length / max(float(mean_length[0]), 1e-12)
        out.data = ((k1 + 1.0) / (k1 * norm[rows] + 1.0) * stats[out.indices]).astype(np.float32)
    elif similarity == "pearson":
        counts = np.diff(out.indptr)
        sums = np.bincount(rows, weights=out.data, minlength=out.shape[0])
        means = np.divide(sums, counts, out=np.zeros(out.shape[0]), where=counts > 0)
        out.data = (out.data - means[rows]).astype(np.float32)
    elif similarity == "adjusted_cosine":
        out.data = (out.data - stats[out.indices]).astype(np.float32)
    return out


def _dense_gram(vectors: sp.csr_matrix) -> NDArray[np.float32]:
    """``vectors @ vectors.T`` as a dense C-ordered ``float32`` array, via BLAS ``ssyrk``.

    The symmetric rank-k update computes one triangle (half the work of a general
    product), which is then mirrored in blocks.
    """
    a = np.asarray(vectors.toarray(), np.float32)  # (n, d) C-order: its .T is Fortran-ordered
    upper = scipy.linalg.blas.ssyrk(1.0, a.T, trans=1)  # Fortran (n, n), upper triangle
    gram = np.asarray(upper.T)  # C-ordered view: the lower triangle is filled
    n = gram.shape[0]
    step = 512
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        gram[lo:hi, hi:] = gram[hi:, lo:hi].T
        diagonal = gram[lo:hi, lo:hi]
        diagonal[:] = np.tril(diagonal) + np.tril(diagonal, -1).T
    return gram


def _row_norms(vectors: sp.csr_matrix) -> NDArray[np.float32]:
    sq = np.bincount(
        np.repeat(np.arange(vectors.shape[0]), np.diff(vectors.indptr)),
        weights=np.square(vectors.data, dtype=np.float64),
        minlength=vectors.shape[0],
    )
    return np.sqrt(sq).astype(np.float32)


def _to_similarity(
    dots: NDArray[np.float32],
    left_norms: NDArray[np.float32] | None,
    right_norms: NDArray[np.float32] | None,
    shrinkage: float,
) -> NDArray[np.float32]:
    """Turn a dense block of dot products into similarities, in place.

    Without norms (BM25) the dot product is the similarity. Entities with a zero norm get
    similarity 0 (they share nothing measurable).
    """
    if left_norms is None or right_norms is None:
        return dots
    if shrinkage == 0.0:
        inv_l = np.divide(1.0, left_norms, out=np.zeros_like(left_norms), where=left_norms > 0)
        inv_r = np.divide(1.0, right_norms, out=np.zeros_like(right_norms), where=right_norms > 0)
        dots *= inv_l[:, None]
        dots *= inv_r[None, :]
        return dots
    denom = np.multiply.outer(left_norms, right_norms)
    denom += np.float32(shrinkage)
    np.divide(dots, denom, out=dots)
    return dots


def _top_neighbours(
    sims: NDArray[np.float32], k: int, exclude: NDArray[np.int64] | None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """The ``k`` largest positive entries of each row, ties to the lower column.

    ``exclude[r]`` is a column removed from row ``r`` (the entity itself) or ``-1``.
    Returns COO triplets ``(rows, cols, values)`` of the kept entries, rows ascending.
    ``sims`` is overwritten.
    """
    n, width = sims.shape
    if exclude is not None:
        has = exclude >= 0
        sims[np.flatnonzero(has), exclude[has]] = 0.0
    kk = min(k, width)
    if kk < width:
        # Partitioning the negated block at a small kth is markedly faster than at
        # width - k on rows with many equal entries (the zeros of non-co-occurring pairs).
        cols = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        vals = np.take_along_axis(sims, cols, axis=1)
        # argpartition breaks ties arbitrarily; rows where the k-th value ties with a value
        # left out are redone exactly (usually a minority: rare items share small counts).
        cut = vals.min(axis=1)
        tied = (cut > 0) & (np.count_nonzero(sims >= cut[:, None], axis=1) > kk)
        if tied.any():
            redo = np.flatnonzero(tied)
            cols[redo] = _exact_top_columns(sims[redo], kk)
            vals[redo] = np.take_along_axis(sims[redo], cols[redo], axis=1)
    else:
        cols = np.broadcast_to(np.arange(width), (n, width))
        vals = sims
    keep = vals > 0
    rows = np.repeat(np.arange(n), np.count_nonzero(keep, axis=1))
    return rows, cols[keep].astype(np.int64), vals[keep].astype(np.float32)


def _exact_top_columns(sims: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """Columns of the ``k`` largest entries per row by (value desc, column asc).

    One ``argpartition`` over int64 keys: the high half is the bit pattern of
    ``max(value, 0)`` (monotone for non-negative floats), the low half the reversed column.
    """
    width = sims.shape[1]
    keys = np.maximum(sims, 0.0).view(np.int32).astype(np.int64)
    keys <<= 32
    keys |= np.arange(width - 1, -1, -1, dtype=np.int64)[None, :]
    return np.argpartition(keys, width - k, axis=1)[:, width - k :]


class _DotRows:
    """Rows ``lo:hi`` of ``vectors @ vectors.T`` as a fresh dense ``float32`` block.

    From a precomputed Gram matrix, a dense copy of the vectors (one GEMM per block) or
    the sparse vectors (one sparse product per block), whichever is given first.
    """

    def __init__(
        self,
        gram: NDArray[np.float32] | None,
        dense: NDArray[np.float32] | None,
        vectors: sp.csr_matrix,
    ) -> None:
        self.gram, self.dense, self.vectors = gram, dense, vectors

    def __call__(self, lo: int, hi: int) -> NDArray[np.float32]:
        if self.gram is not None:
            return self.gram[lo:hi]  # a view: each row belongs to one chunk only
        if self.dense is not None:
            return np.asarray(self.dense[:, lo:hi].T @ self.dense, np.float32)
        return np.asarray((self.vectors[lo:hi] @ self.vectors.T).toarray(), np.float32)


def _select_chunk(
    bounds: tuple[int, int],
    *,
    source: _DotRows,
    norms: NDArray[np.float32] | None,
    shrinkage: float,
    k: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Neighbours of entities ``bounds[0]..bounds[1]-1``: per-row counts, columns, values."""
    lo, hi = bounds
    sims = _to_similarity(source(lo, hi), None if norms is None else norms[lo:hi], norms, shrinkage)
    rows, cols, vals = _top_neighbours(sims, k, np.arange(lo, hi))
    return np.bincount(rows, minlength=hi - lo), cols, vals


# ============================================================================ ItemKNN
class ItemKNNConfig(_KNNConfig):
    """Hyperparameters of :class:`ItemKNN`; see :class:`_KNNConfig` for the shared fields.

    Defaults: 100 neighbours, cosine, no shrinkage, chosen by :func:`recsys.tuning.tune` on
    a validation split of the ML-100K training data (``benchmarks/topn_classical.py``).

    Attributes
    ----------
    num_threads
        Threads of the similarity computation; 0 uses every core.
    """

    n_neighbors: int = Field(default=100, ge=1)
    num_threads: int = Field(default=0, ge=0)


class ItemKNN(HistoryFoldIn):
    """Item-KNN: a user's score for item ``j`` is the sum of ``sim(i, j)`` over their items.

    Learned state: ``similarity_``, a sparse ``(n_items, n_items) float32`` CSR matrix
    whose row ``i`` holds item ``i``'s ``n_neighbors`` neighbours (never ``i`` itself).
    Histories are read as binary; a score is ``history @ similarity_``. Fold-in is direct,
    so a training user's own history reproduces the fitted recommendations exactly. A
    user whose items have no neighbour at all gets the popularity scores.

    Fit cost: the item-item dot products as one BLAS product when the user-item matrix
    is small enough to densify (up to 2**25 entries), else sparse products over blocks of
    items; then one exact top-K selection per block.

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> model = ItemKNN(n_neighbors=5).fit(block_dataset(), show_progress=False)
    >>> model.similarity_.shape
    (24, 24)
    """

    name: ClassVar[str] = "itemknn"
    Config: ClassVar[type[ModelConfig]] = ItemKNNConfig
    _state_fields: ClassVar[tuple[str, ...]] = ("similarity_",)

    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        cfg = self.config
        assert isinstance(cfg, ItemKNNConfig)
        start = time.perf_counter()
        values = _interaction_values(data, cfg.similarity, type(self).__name__)
        item_vectors = sp.csr_matrix(values.T)  # (n_items, n_users)
        stats, mean_length = _feature_stats(item_vectors, cfg.similarity)
        weighted = _weigh(item_vectors, cfg.similarity, stats, mean_length, cfg.bm25_k1, cfg.bm25_b)
        norms = None if cfg.similarity == "bm25" else _row_norms(weighted)
        n_items = weighted.shape[0]
        k = min(cfg.n_neighbors, max(n_items - 1, 1))
        block = max(1, _SIM_BLOCK_BYTES // (4 * max(n_items, 1)))
        small = data.n_users * n_items <= _DENSE_GRAM_ENTRIES
        workers = cfg.num_threads or os.cpu_count() or 1
        # Threads come from our own pool over row chunks (numpy and scipy release the GIL
        # in the heavy steps), with single-threaded BLAS inside: BLAS thread pools on top
        # of busy cores slow the products down rather than up.
        with threadpool_limits(1, "blas"):
            gram = _dense_gram(weighted) if small and n_items <= block else None
            dense = weighted.T.toarray() if small and gram is None else None
            source = _DotRows(gram, dense, weighted)
            step = max(1, min(block, -(-n_items // workers)))
            chunks = [(lo, min(lo + step, n_items)) for lo in range(0, n_items, step)]
            select = partial(
                _select_chunk, source=source, norms=norms, shrinkage=cfg.shrinkage, k=k
            )
            counts, cols, vals = [], [], []
            with ThreadPoolExecutor(workers) as pool:
                results = pool.map(select, chunks)
                for count, c, v in tqdm(
                    results,
                    total=len(chunks),
                    desc="itemknn similarity",
                    disable=not show_progress,
                ):
                    counts.append(count)
                    cols.append(c)
                    vals.append(v)
        indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
        self.similarity_: sp.csr_matrix | None = sp.csr_matrix(
            (np.concatenate(vals), np.concatenate(cols), indptr),
            shape=(n_items, n_items),
            dtype=np.float32,
        )
        self.similarity_.sort_indices()
        logger.debug(
            "itemknn similarity=%s n_items=%d nnz=%d elapsed=%.3fs",
            cfg.similarity,
            n_items,
            self.similarity_.nnz,
            time.perf_counter() - start,
        )

    def _score_history(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        assert self.similarity_ is not None and self.item_popularity_ is not None
        h = sp.csr_matrix(histories, dtype=np.float32, copy=True)
        h.eliminate_zeros()
        h.data[:] = 1.0
        scores = np.asarray((h @ self.similarity_).toarray(), dtype=np.float32)
        silent = ~scores.any(axis=1)
        if silent.any():  # no neighbour of any item: the cold-start answer
            scores[silent] = self.item_popularity_
        return scores

    def similar_items(
        self, item_idx: NDArray[np.int64] | list[int], k: int = 10
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The ``k`` nearest neighbours of each item (never the item itself)."""
        check_is_fitted(self)
        assert self.similarity_ is not None
        idx = np.atleast_1d(np.asarray(item_idx, dtype=np.int64))
        block = np.full((len(idx), self.n_items), -np.inf, np.float32)
        ok = (idx >= 0) & (idx < self.n_items)
        sub = self.similarity_[idx[ok]]
        r = np.repeat(np.flatnonzero(ok), np.diff(sub.indptr))
        block[r, sub.indices] = sub.data
        return topk(block, k)


# ============================================================================ UserKNN
class UserKNNConfig(_KNNConfig):
    """Hyperparameters of :class:`UserKNN`; see :class:`_KNNConfig` for each field.

    Defaults: 50 neighbours, cosine, shrinkage 50, chosen by :func:`recsys.tuning.tune` on
    a validation split of the ML-100K training data (``benchmarks/topn_classical.py``).
    """

    n_neighbors: int = Field(default=50, ge=1)
    shrinkage: float = Field(default=50.0, ge=0.0)


class UserKNN(HistoryFoldIn):
    """User-KNN: the score of item ``j`` sums ``sim(u, v)`` over the neighbours ``v`` holding ``j``.

    Learned state: ``user_vectors_`` (the weighted ``(n_users, n_items) float32`` CSR
    vectors of the training users, ratings-based for pearson/adjusted cosine),
    ``user_norms_`` ``(n_users,) float32``, ``item_stats_`` ``(n_items,) float32`` (idf
    for tfidf/bm25, mean rating for adjusted cosine, else 0) and ``mean_length_``
    ``(1,) float32`` (BM25's mean history length).

    Scoring a block of users computes that block's similarity rows against every
    training user (one sparse product, a dense ``(block, n_users)`` array), keeps the
    ``n_neighbors`` strongest positive ones, and multiplies the resulting sparse
    neighbour matrix by the binary user-item matrix. No users x users matrix is stored.

    A known user is never their own neighbour. A fold-in row is anonymous, so a training
    user's own history finds that user among its neighbours (as the most similar one);
    since the user's own items are the seen ones, this only takes one of the
    ``n_neighbors`` slots. For pearson/adjusted cosine the history values are read as
    ratings. A user with no positive similarity to anyone gets the popularity scores.

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> model = UserKNN(n_neighbors=5).fit(block_dataset(), show_progress=False)
    >>> model.user_vectors_.shape
    (30, 24)
    """

    name: ClassVar[str] = "userknn"
    Config: ClassVar[type[ModelConfig]] = UserKNNConfig
    _state_fields: ClassVar[tuple[str, ...]] = (
        "user_vectors_",
        "user_norms_",
        "item_stats_",
        "mean_length_",
    )

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.user_vectors_: sp.csr_matrix | None = None
        self.user_norms_: NDArray[np.float32] | None = None
        self.item_stats_: NDArray[np.float32] | None = None
        self.mean_length_: NDArray[np.float32] | None = None

    def _transposed_vectors(self) -> sp.csr_matrix:
        """``user_vectors_.T`` in CSR, built once per fitted state: the right operand of
        every query's similarity product (scipy would convert it on each call)."""
        vectors = self.user_vectors_
        assert vectors is not None
        return self._derived("_vectors_t", vectors, lambda: sp.csr_matrix(vectors.T))

    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        cfg = self.config
        assert isinstance(cfg, UserKNNConfig)
        values = _interaction_values(data, cfg.similarity, type(self).__name__)
        stats, mean_length = _feature_stats(values, cfg.similarity)
        vectors = _weigh(values, cfg.similarity, stats, mean_length, cfg.bm25_k1, cfg.bm25_b)
        self.user_vectors_ = vectors
        self.user_norms_ = _row_norms(vectors)
        self.item_stats_ = stats
        self.mean_length_ = mean_length

    def _block_size(self) -> int:
        # Each scored user needs a dense row of scores and one of similarities.
        return max(1, _SIM_BLOCK_BYTES // (4 * max(1, self.n_items + self.n_users)))

    def _neighbour_scores(
        self,
        queries: sp.csr_matrix,
        query_norms: NDArray[np.float32],
        self_idx: NDArray[np.int64] | None,
    ) -> NDArray[np.float32]:
        cfg = self.config
        assert isinstance(cfg, UserKNNConfig)
        assert self.user_vectors_ is not None and self.user_norms_ is not None
        assert self.user_items_ is not None and self.item_popularity_ is not None
        dots = np.asarray((queries @ self._transposed_vectors()).toarray(), np.float32)
        normalised = cfg.similarity != "bm25"
        sims = _to_similarity(
            dots,
            query_norms if normalised else None,
            self.user_norms_ if normalised else None,
            cfg.shrinkage,
        )
        rows, cols, vals = _top_neighbours(sims, min(cfg.n_neighbors, self.n_users), self_idx)
        neighbours = sp.csr_matrix((vals, (rows, cols)), shape=(queries.shape[0], self.n_users))
        scores = np.asarray((neighbours @ self.user_items_).toarray(), np.float32)
        silent = ~scores.any(axis=1)
        if silent.any():  # nobody similar: the cold-start answer
            scores[silent] = self.item_popularity_
        return scores

    def _score_users(self, user_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        assert self.user_vectors_ is not None and self.user_norms_ is not None
        return self._neighbour_scores(
            csr_rows(self.user_vectors_, user_idx), self.user_norms_[user_idx], user_idx
        )

    def _score_history(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        cfg = self.config
        assert isinstance(cfg, UserKNNConfig)
        assert self.item_stats_ is not None and self.mean_length_ is not None
        queries = _weigh(
            histories,
            cfg.similarity,
            self.item_stats_,
            self.mean_length_,
            cfg.bm25_k1,
            cfg.bm25_b,
        )
        return self._neighbour_scores(queries, _row_norms(queries), None)
