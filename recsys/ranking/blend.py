"""The baseline the learned ranker must beat: a reciprocal-rank blend of the sources.

Reciprocal rank fusion (Cormack, Clarke and Buettcher, "Reciprocal rank fusion outperforms
Condorcet and individual rank learning methods", SIGIR 2009): a candidate scores
``sum_s w_s / (k + rank_s)`` over the sources ``s`` that proposed it, ``rank_s`` its
1-based rank there. It needs no training and no score calibration between sources.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from recsys.errors import ConfigError, DataError

__all__ = ["reciprocal_rank_blend"]


def reciprocal_rank_blend(
    source_ranks: NDArray[np.float32],
    k: float = 60.0,
    weights: NDArray[np.floating] | None = None,
) -> NDArray[np.float64]:
    """Reciprocal-rank fusion scores of candidates.

    Parameters
    ----------
    source_ranks : (n, n_sources) float
        1-based ranks, NaN where a source did not propose the candidate.
    k
        The fusion constant (60 in the paper): larger values flatten the rank discount.
    weights : (n_sources,), optional
        Per-source weights; default 1 each.

    Returns
    -------
    (n,) float64

    Examples
    --------
    >>> ranks = np.array([[1.0, np.nan], [2.0, 1.0]], np.float32)
    >>> reciprocal_rank_blend(ranks, k=1.0).round(3).tolist()
    [0.5, 0.833]
    """
    if k <= 0:
        raise ConfigError(f"reciprocal_rank_blend: k must be > 0, got {k}")
    r = np.asarray(source_ranks, np.float64)
    if r.ndim != 2:
        raise DataError(f"reciprocal_rank_blend: expected (n, n_sources) ranks, got {r.shape}")
    w = np.ones(r.shape[1]) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (r.shape[1],):
        raise DataError(f"reciprocal_rank_blend: {w.shape} weights for {r.shape[1]} sources")
    contrib = np.where(np.isnan(r), 0.0, w[None, :] / (k + np.nan_to_num(r, nan=1.0)))
    return np.asarray(contrib.sum(axis=1), np.float64)
