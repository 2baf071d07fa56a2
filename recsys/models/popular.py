"""Most-popular baseline: every user gets the items with the most distinct users.

The floor every personalised model must beat, and the cold-start answer for unknown users.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.models.base import HistoryFoldIn, ModelConfig
from recsys.types import TrainingData

__all__ = ["Popular", "PopularConfig"]


class PopularConfig(ModelConfig):
    """Hyperparameters of :class:`Popular` (none beyond the seed)."""


class Popular(HistoryFoldIn):
    """Rank items by the number of distinct training users who interacted with them.

    Scores are those counts; every user, known or not, gets the same ranking (minus the
    items they have seen). Fold-in is trivial: the history only excludes items.

    Stability: stable
    """

    name: ClassVar[str] = "popular"
    Config: ClassVar[type[ModelConfig]] = PopularConfig
    _state_fields: ClassVar[tuple[str, ...]] = ()

    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        return None  # the base class already counts item popularity

    def _score_history(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        assert self.item_popularity_ is not None
        return np.broadcast_to(self.item_popularity_, (histories.shape[0], self.n_items)).copy()
