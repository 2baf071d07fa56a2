"""The model protocol every recommender answers, and small protocols for optional abilities.

Evaluation, the pipeline, the batch job and the server talk to models only through these,
so no caller special-cases a model. Implementations document only what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel

from recsys.types import TrainingData

__all__ = ["EmbeddingModel", "FoldIn", "Recommender", "SimilarItems"]


@runtime_checkable
class Recommender(Protocol):
    """A fitted-or-fittable recommender over a fixed user and item vocabulary.

    Indices are internal (``user_idx``/``item_idx``, see :class:`recsys.types.IdMap`).
    A ``user_idx`` of ``-1`` (or any index outside the training vocabulary) is an unknown
    user: it never raises; ``recommend`` answers with the model's cold-start list
    (popularity) and ``score`` answers NaN.
    """

    name: ClassVar[str]

    @property
    def config(self) -> BaseModel:
        """The model's frozen hyperparameters."""
        ...

    def fit(self, data: TrainingData, *, show_progress: bool = True) -> Self:
        """Learn from ``data``; returns ``self``."""
        ...

    def score(self, user_idx: ArrayLike, item_idx: ArrayLike) -> NDArray[np.float32]:
        """Scores of ``(user_idx[j], item_idx[j])`` pairs, shape ``(n,) float32``.

        Higher is better. Pairs with an unknown user or item score NaN.
        """
        ...

    def recommend(
        self, user_idx: ArrayLike, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items for each user, best first, batched over users.

        Returns
        -------
        items : (n_users, k) int64
            Item indices; ``-1`` pads rows with fewer than ``k`` eligible items.
        scores : (n_users, k) float32
            Their scores; NaN where ``items`` is ``-1``.
        """
        ...

    def save(self, path: Path) -> None:
        """Write the fitted model to directory ``path`` in safe formats (JSON + ``.npz``)."""
        ...

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save`; never unpickles."""
        ...


@runtime_checkable
class FoldIn(Protocol):
    """Models that recommend for an arbitrary interaction history without refitting."""

    def recommend_for_history(
        self, histories: sp.csr_matrix, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items for each row of a ``(n, n_items)`` history matrix.

        This is the fold-in path: new users and users with fresh events get a fresh
        representation from their item list alone.
        """
        ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """Models whose scores are inner products of user and item vectors (for FAISS)."""

    @property
    def user_factors(self) -> NDArray[np.float32]:
        """``(n_users, dim) float32``."""
        ...

    @property
    def item_factors(self) -> NDArray[np.float32]:
        """``(n_items, dim) float32``."""
        ...


@runtime_checkable
class SimilarItems(Protocol):
    """Models that can list the items most similar to given items."""

    def similar_items(
        self, item_idx: ArrayLike, k: int = 10
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """``(n, k)`` most similar items (excluding the item itself) and similarities."""
        ...
