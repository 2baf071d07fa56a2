"""Negatives for training CTR models on implicit feedback.

With implicit data every logged interaction is a positive; :class:`NegativeSampler` draws
items the user did not interact with, uniformly or in proportion to ``popularity **
exponent`` (Mikolov et al. 2013's unigram^0.75 trick, as in word2vec and YouTube DNN):
popular items are then also seen as negatives, so the model cannot score by popularity
alone.

A sampled negative ``(u, j)`` stands at the time ``t`` of the positive it was drawn for,
and its features must be what the store would have served at ``t``: the user's come from
the positive's row; the item's activity at ``t`` comes from :class:`ItemActivity`, which
applies the store's point-in-time definitions (rows strictly before ``t``) to arbitrary
``(item, t)`` pairs. A unit test checks that on logged rows it reproduces the store's
offline view exactly.

Stability: internal
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import DataError

__all__ = ["ItemActivity", "NegativeSampler"]

_MAX_ROUNDS = 20


class ItemActivity:
    """Point-in-time item activity for any ``(item, time)`` pair of a log.

    Parameters
    ----------
    items
        ``(n,) int64`` item index of each logged row.
    times
        ``(n,) int64`` time of each row (Unix seconds, or row order without timestamps).
    ratings
        ``(n,) float32`` ratings (NaN = unrated), or ``None``.
    n_items
        Vocabulary size.
    has_time
        Whether ``times`` are real timestamps; without them recency is NaN, as in the store.
    """

    def __init__(
        self,
        items: NDArray[np.int64],
        times: NDArray[np.int64],
        ratings: NDArray[np.float32] | None,
        n_items: int,
        *,
        has_time: bool,
    ) -> None:
        items = np.asarray(items, np.int64)
        times = np.asarray(times, np.int64)
        self._has_time = has_time
        self._t0 = int(times.min()) if len(times) else 0
        self._span = (int(times.max()) - self._t0 + 2) if len(times) else 2
        if n_items * self._span >= np.iinfo(np.int64).max:
            raise DataError("ItemActivity: the time range is too wide for the composite key")
        order = np.lexsort((times, items))
        self._times = times[order]
        self._keys = items[order] * self._span + (self._times - self._t0)
        self._offsets = np.zeros(n_items + 1, np.int64)
        np.cumsum(np.bincount(items, minlength=n_items), out=self._offsets[1:])
        r = (
            np.full(len(items), np.nan)
            if ratings is None
            else np.asarray(ratings, np.float64)[order]
        )
        rated = ~np.isnan(r)
        self._rating_cum = np.concatenate([[0.0], np.cumsum(np.where(rated, r, 0.0))])
        self._rated_cum = np.concatenate([[0], np.cumsum(rated)])

    def at(
        self, items: NDArray[np.int64], times: NDArray[np.int64]
    ) -> dict[str, NDArray[np.float32]]:
        """Activity of ``items[k]`` strictly before ``times[k]``.

        Returns
        -------
        dict
            ``item_count``, ``item_mean_rating`` (NaN when none rated) and
            ``item_seconds_since_last`` (NaN when no earlier row or no timestamps), each
            ``(m,) float32``, with the store's definitions.
        """
        items = np.asarray(items, np.int64)
        t = np.clip(np.asarray(times, np.int64), self._t0, self._t0 + self._span - 1)
        pos = np.searchsorted(self._keys, items * self._span + (t - self._t0), side="left")
        start = self._offsets[items]
        count = pos - start
        rated = self._rated_cum[pos] - self._rated_cum[start]
        total = self._rating_cum[pos] - self._rating_cum[start]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(rated > 0, total / np.maximum(rated, 1), np.nan)
        since = np.full(len(items), np.nan)
        if self._has_time:
            has = count > 0
            since[has] = np.asarray(times, np.int64)[has] - self._times[pos[has] - 1]
        return {
            "item_count": count.astype(np.float32),
            "item_mean_rating": mean.astype(np.float32),
            "item_seconds_since_last": since.astype(np.float32),
        }


class NegativeSampler:
    """Draws items a user has not interacted with.

    Parameters
    ----------
    user_items
        ``(n_users, n_items)`` CSR of the training interactions (the "seen" items).
    kind
        ``"uniform"`` over items with training interactions, or ``"popularity"``:
        probability proportional to ``count ** exponent``.
    exponent
        Popularity exponent (0 is uniform, 1 is proportional to popularity).
    """

    def __init__(self, user_items: sp.csr_matrix, *, kind: str, exponent: float) -> None:
        seen = sp.csr_matrix(user_items)
        self._n_items = seen.shape[1]
        counts = np.asarray((seen > 0).sum(axis=0), dtype=np.float64).ravel()
        eligible = counts > 0
        if not eligible.any():
            raise DataError("NegativeSampler: no item has a training interaction")
        weights = np.where(eligible, counts**exponent if kind == "popularity" else 1.0, 0.0)
        self._cdf = np.cumsum(weights / weights.sum())
        self._cdf[-1] = 1.0
        rows = np.repeat(np.arange(seen.shape[0], dtype=np.int64), np.diff(seen.indptr))
        self._seen = np.unique(rows * self._n_items + seen.indices.astype(np.int64))

    def _draw(self, n: int, rng: np.random.Generator) -> NDArray[np.int64]:
        idx = np.searchsorted(self._cdf, rng.random(n), side="right")
        return np.minimum(idx, self._n_items - 1).astype(np.int64)

    def _is_seen(self, users: NDArray[np.int64], items: NDArray[np.int64]) -> NDArray[np.bool_]:
        keys = users * self._n_items + items
        pos = np.searchsorted(self._seen, keys)
        pos = np.minimum(pos, len(self._seen) - 1)
        return self._seen[pos] == keys if len(self._seen) else np.zeros(len(keys), bool)

    def sample(self, users: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
        """One negative item per entry of ``users`` (``(m,) int64``).

        Items the user has seen are redrawn (up to 20 rounds; a user who has seen almost
        every item may keep a seen one, which only adds label noise).
        """
        users = np.asarray(users, np.int64)
        items = self._draw(len(users), rng)
        redo = np.flatnonzero(self._is_seen(users, items))
        for _ in range(_MAX_ROUNDS):
            if not len(redo):
                break
            items[redo] = self._draw(len(redo), rng)
            redo = redo[self._is_seen(users[redo], items[redo])]
        return items
