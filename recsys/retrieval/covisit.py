"""Sequential co-visitation: items that users took shortly after a given item.

The "people who watched this next watched" signal of session-based recommenders (the
co-visitation counts of Davidson et al., "The YouTube video recommendation system",
RecSys 2010, made directional and position-weighted). With every user's training
interactions in time order, item ``i`` at position ``t`` and item ``j`` at ``t + d``
(``1 <= d <= window``) add ``1 / d`` to ``weights[i, j]``. Rows are divided by
``sqrt(count_i)`` (a popular seed item would otherwise dominate every query), and only
the ``n_neighbors`` largest entries of each row are kept.

A query is the user's most recent items weighted by recency (:class:`Queries.recent
<recsys.retrieval.candidates.Queries>`); its scores are ``recent @ weights``. This is a
retrieval structure fitted from the training interactions, stored with the artifact's
indexes (``index/covisit/``).
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.artifacts import check_format_version
from recsys.errors import ArtifactError, ConfigError, DataError, NotFittedError
from recsys.models.base import topk
from recsys.types import TrainingData

__all__ = ["CoVisitation"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_BLOCK_BYTES = 64 * 1024 * 1024


class CoVisitation:
    """Directional, position-weighted item co-visitation counts.

    Stability: provisional

    Parameters
    ----------
    window
        Largest gap, in positions of a user's time-ordered history, between two items
        that count as co-visited.
    n_neighbors
        Entries kept per item (the largest).

    Attributes
    ----------
    weights_ : (n_items, n_items) CSR float32
        ``weights_[i, j]``: how strongly ``j`` follows ``i``.

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> cv = CoVisitation(window=3).fit(block_dataset())
    >>> cv.weights_.shape
    (24, 24)
    """

    def __init__(self, window: int = 20, n_neighbors: int = 200) -> None:
        if window < 1 or n_neighbors < 1:
            raise ConfigError(
                f"CoVisitation: window and n_neighbors must be >= 1, got {window} and {n_neighbors}"
            )
        self.window = int(window)
        self.n_neighbors = int(n_neighbors)
        self.weights_: sp.csr_matrix | None = None

    def __repr__(self) -> str:
        return f"CoVisitation(window={self.window}, n_neighbors={self.n_neighbors})"

    @property
    def n_items(self) -> int:
        """Items of the vocabulary."""
        return int(self._weights().shape[0])

    def _weights(self) -> sp.csr_matrix:
        if self.weights_ is None:
            raise NotFittedError("CoVisitation is not fitted; call fit() or load() first")
        return self.weights_

    def fit(self, data: TrainingData) -> Self:
        """Count co-visits in ``data`` (time order: timestamp, then item; else row order).

        Raises
        ------
        DataError
            If ``data`` is not :class:`~recsys.types.TrainingData` or is empty.
        """
        if not isinstance(data, TrainingData) or data.n_interactions == 0:
            raise DataError("CoVisitation.fit expects non-empty TrainingData")
        start = time.perf_counter()
        users, items = data.user_idx, data.item_idx
        if data.timestamp is not None:
            order = np.lexsort((items, data.timestamp, users))
        else:
            order = np.lexsort((np.arange(len(users)), users))
        u, i = users[order], items[order]
        n_items = data.n_items
        weights = sp.csr_matrix((n_items, n_items), dtype=np.float32)
        for gap in range(1, self.window + 1):
            same = u[:-gap] == u[gap:]
            if not same.any():
                break
            step = sp.csr_matrix(
                (
                    np.full(int(same.sum()), 1.0 / gap, np.float32),
                    (i[:-gap][same], i[gap:][same]),
                ),
                shape=(n_items, n_items),
            )
            weights = weights + step
        weights = sp.csr_matrix(weights, dtype=np.float32)
        weights.setdiag(0.0)  # an item repeated by a user is no recommendation for itself
        weights.eliminate_zeros()
        count = np.bincount(i, minlength=n_items).astype(np.float32)
        scale = 1.0 / np.sqrt(np.maximum(count, 1.0))
        weights = sp.csr_matrix(sp.diags(scale) @ weights, dtype=np.float32)
        self.weights_ = _prune_rows(weights, self.n_neighbors)
        logger.info(
            "fitted co-visitation n_items=%d window=%d nnz=%d elapsed=%.2fs",
            n_items,
            self.window,
            self.weights_.nnz,
            time.perf_counter() - start,
        )
        return self

    def score(self, recent: sp.csr_matrix) -> NDArray[np.float32]:
        """Dense ``(n, n_items) float32`` scores of recency-weighted seed rows."""
        w = self._weights()
        r = sp.csr_matrix(recent, dtype=np.float32)
        if r.shape[1] != w.shape[0]:
            raise DataError(
                f"CoVisitation.score: seeds have {r.shape[1]} columns, the model has "
                f"{w.shape[0]} items"
            )
        return np.asarray((r @ w).toarray(), dtype=np.float32)

    def recommend(
        self, recent: sp.csr_matrix, k: int, *, exclude: sp.csr_matrix | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` co-visited items per seed row; only items with a positive score.

        Parameters
        ----------
        recent : (n, n_items) sparse
            Recency-weighted seed items.
        k
            Items per row.
        exclude : (n, n_items) sparse, optional
            Items never proposed (e.g. the user's seen items).

        Returns
        -------
        items : (n, k) int64 (``-1`` padded) and scores : (n, k) float32 (NaN padded).
        """
        if k < 1:
            raise ConfigError(f"CoVisitation.recommend: k must be >= 1, got {k}")
        r = sp.csr_matrix(recent, dtype=np.float32)
        n = r.shape[0]
        items = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), np.nan, np.float32)
        step = max(1, _BLOCK_BYTES // (4 * max(1, self.n_items)))
        for lo in range(0, n, step):
            block = self.score(r[lo : lo + step])
            block[block <= 0] = -np.inf
            if exclude is not None:
                ex = sp.csr_matrix(exclude[lo : lo + step])
                rows = np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr))
                block[rows, ex.indices] = -np.inf
            items[lo : lo + step], scores[lo : lo + step] = topk(block, k)
        return items, scores

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write ``covisit.npz`` (CSR arrays, no pickle) and ``covisit.json``."""
        w = self._weights()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(
            path / "covisit.npz",
            data=w.data,
            indices=w.indices,
            indptr=w.indptr,
            shape=np.asarray(w.shape, np.int64),
        )
        meta = {
            "format_version": _FORMAT_VERSION,
            "window": self.window,
            "n_neighbors": self.n_neighbors,
        }
        (path / "covisit.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> CoVisitation:
        """Read a model written by :meth:`save`.

        Raises
        ------
        ArtifactError
            Missing, unreadable or other-version files.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "covisit.json").read_text())
            with np.load(path / "covisit.npz", allow_pickle=False) as npz:
                shape = tuple(int(s) for s in npz["shape"])
                weights = sp.csr_matrix(
                    (npz["data"], npz["indices"], npz["indptr"]), shape=shape, dtype=np.float32
                )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"CoVisitation: cannot read {path}: {exc}") from exc
        check_format_version(meta, _FORMAT_VERSION, "CoVisitation", path)
        model = cls(int(meta["window"]), int(meta["n_neighbors"]))
        model.weights_ = weights
        return model


def _prune_rows(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of every row (ties to the lower column)."""
    m = sp.csr_matrix(matrix)
    m.sort_indices()
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((m.indices, -m.data, rows))
    within = np.arange(m.nnz) - m.indptr[rows[order]]
    keep = np.sort(order[within < k])
    out = sp.csr_matrix(
        (m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape, dtype=np.float32
    )
    out.sort_indices()
    return out
