"""Item-based neighbourhood collaborative filtering.

Sarwar et al., "Item-based collaborative filtering recommendation algorithms", WWW 2001;
Deshpande and Karypis, "Item-based top-N recommendation algorithms", TOIS 2004.
The item-item similarity is computed in sparse blocks and pruned to the ``n_neighbors``
strongest neighbours per item, so no dense ``n_items x n_items`` (let alone users x users)
matrix is ever held.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field
from tqdm.auto import tqdm

from recsys.models.base import HistoryFoldIn, ModelConfig, check_is_fitted, topk
from recsys.types import TrainingData

__all__ = ["ItemKNN", "ItemKNNConfig"]

_SIM_BLOCK = 2048  # items per block of the similarity computation


class ItemKNNConfig(ModelConfig):
    """Hyperparameters of :class:`ItemKNN`.

    Attributes
    ----------
    n_neighbors
        Neighbours kept per item (top-K pruning).
    similarity
        ``"cosine"`` on the binary user-item matrix.
    shrinkage
        Shrinks similarities of items with few co-occurrences:
        ``sim = dot / (|i| |j| + shrinkage)``.
    """

    n_neighbors: int = Field(default=50, ge=1)
    similarity: Literal["cosine"] = "cosine"
    shrinkage: float = Field(default=0.0, ge=0.0)


class ItemKNN(HistoryFoldIn):
    """Item-KNN: a user's score for item ``j`` is the sum of ``sim(i, j)`` over their items.

    Learned state: ``similarity_``, a sparse ``(n_items, n_items) float32`` CSR matrix
    whose row ``i`` holds item ``i``'s ``n_neighbors`` neighbours. Fold-in is direct:
    any history vector times ``similarity_``.

    Stability: provisional
    """

    name: ClassVar[str] = "itemknn"
    Config: ClassVar[type[ModelConfig]] = ItemKNNConfig
    _state_fields: ClassVar[tuple[str, ...]] = ("similarity_",)

    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        cfg = self.config
        assert isinstance(cfg, ItemKNNConfig)
        x = sp.csc_matrix(data.user_items, dtype=np.float32)  # (n_users, n_items)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0), dtype=np.float32).ravel())
        xt = sp.csr_matrix(x.T)
        n_items = x.shape[1]
        k = min(cfg.n_neighbors, max(n_items - 1, 1))
        rows, cols, vals = [], [], []
        starts = range(0, n_items, _SIM_BLOCK)
        for start in tqdm(starts, desc="itemknn similarity", disable=not show_progress):
            stop = min(start + _SIM_BLOCK, n_items)
            dots = (xt[start:stop] @ x).toarray()  # (block, n_items) co-occurrence counts
            denom = np.outer(norms[start:stop], norms) + np.float32(cfg.shrinkage)
            with np.errstate(divide="ignore", invalid="ignore"):
                sim = np.where(denom > 0, dots / denom, 0.0).astype(np.float32)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0  # no self-similarity
            sim[sim <= 0] = -np.inf
            nb, nb_sim = topk(sim, k)
            keep = nb >= 0
            rows.append(np.repeat(np.arange(start, stop), keep.sum(axis=1)))
            cols.append(nb[keep])
            vals.append(nb_sim[keep])
        self.similarity_ = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_items, n_items),
            dtype=np.float32,
        )
        self.similarity_.sort_indices()

    def _score_history(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        assert self.similarity_ is not None
        return np.asarray((histories @ self.similarity_).toarray(), dtype=np.float32)

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
