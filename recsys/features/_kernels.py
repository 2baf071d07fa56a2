"""Vectorised kernels of the feature store: id encoding, the (key, time) sort, point-in-time
activity features and the online state that ``append`` updates.

Internal, not part of the API. Everything here works on compact numpy arrays (``int32``
codes, ``float32`` ratings, ``int64`` times) and processes long arrays in chunks aligned to
whole key segments, so the memory beyond the outputs stays a few chunk-sized buffers.

Point-in-time rule: a row at time ``t`` sees only rows of the same key (user or item) with a
time strictly smaller than ``t``. Rows sharing a key and a timestamp form a *tie group*; no
member of a tie group sees another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from recsys.errors import DataError
from recsys.types import IdMap

logger = logging.getLogger(__name__)

CHUNK_ROWS = 1 << 18  # rows per chunk of the point-in-time kernel (about 20 MB of buffers)
NO_TIME = np.iinfo(np.int64).min  # "no event yet" in per-key last-time arrays
_I64_MAX = np.iinfo(np.int64).max


# ----------------------------------------------------------------------------- ids
def encode_ids(
    values: pd.Series, catalogue: pd.Series | None, *, column: str
) -> tuple[NDArray[np.int32], IdMap]:
    """Codes of ``values`` in a sorted vocabulary of ``values`` plus ``catalogue``.

    The vocabulary is the one :meth:`recsys.types.IdMap.from_values` builds from the
    concatenation of both (sorted distinct ids, or first-seen order when ids do not sort),
    so indices agree with :meth:`recsys.types.TrainingData.from_frame` on the same input.

    Parameters
    ----------
    values
        ``(n,)`` external ids of the interactions.
    catalogue
        Extra ids that must be in the vocabulary (catalogue items without interactions).
    column
        Column name for error messages.

    Returns
    -------
    codes : (n,) int32
    id_map : IdMap
    """
    codes, uniques = pd.factorize(values, sort=False, use_na_sentinel=True)
    if len(codes) and codes.min() < 0:
        bad = np.flatnonzero(codes < 0)
        raise DataError(
            f"interactions: {len(bad)} rows have a missing {column}, e.g. rows "
            f"{bad[:5].tolist()}; drop or fill them before building features"
        )
    ids = _as_id_array(uniques)
    if catalogue is not None and len(catalogue):
        cat = _as_id_array(pd.unique(catalogue.dropna()))
        extra = cat[pd.Index(ids).get_indexer(cat) < 0] if len(ids) else cat
        if len(extra):
            ids = np.concatenate([ids, extra])
    try:
        sorter = np.argsort(ids, kind="stable")
    except TypeError:  # ids of mixed types that do not compare: keep first-seen order
        sorter = None
    if sorter is not None and not bool((sorter == np.arange(len(ids))).all()):
        rank = np.empty(len(ids), np.int64)
        rank[sorter] = np.arange(len(ids))
        codes = rank[codes]
        ids = ids[sorter]
    if len(ids) >= np.iinfo(np.int32).max:
        raise DataError(f"interactions: {len(ids)} distinct {column}s exceed the int32 range")
    return codes.astype(np.int32), IdMap(ids)


def _as_id_array(values: Any) -> NDArray[Any]:
    """A numpy array of ids: numeric dtypes kept, strings and the rest as ``object``."""
    arr = np.asarray(values)
    return arr if arr.dtype.kind in "iufb" else np.asarray(values, dtype=object)


# ----------------------------------------------------------------------------- sorting
def segment_offsets(keys: NDArray[np.int32], n_keys: int) -> NDArray[np.int64]:
    """``(n_keys + 1,) int64`` offsets of each key's rows once sorted by key."""
    counts = np.bincount(keys, minlength=n_keys)
    offsets = np.zeros(n_keys + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def sort_by_key_time(
    keys: NDArray[np.int32], n_keys: int, times: NDArray[np.int64]
) -> NDArray[np.int32]:
    """Stable order of rows by ``(key, time)``; equal pairs keep their row order.

    Parameters
    ----------
    keys
        ``(n,) int32`` codes in ``0..n_keys-1``.
    n_keys
        Vocabulary size.
    times
        ``(n,) int64`` times.

    Returns
    -------
    (n,) int32
        Row numbers in sorted order.
    """
    n = len(keys)
    if n == 0:
        return np.empty(0, np.int32)
    if n >= np.iinfo(np.int32).max:
        raise DataError(f"interactions: {n} rows exceed the supported 2**31 - 1")
    t_min = int(times.min())
    span = int(times.max()) - t_min + 1
    if n_keys * span < _I64_MAX:
        # One int64 key (key * span + time) and the fast unstable argsort, then restore row
        # order inside runs of equal keys: about 3x faster than a stable sort or lexsort.
        composite = keys.astype(np.int64)
        composite *= span
        composite -= t_min  # in this order no intermediate leaves the int64 range
        composite += times
        order = np.argsort(composite)
        _stabilise(order, composite)
        del composite
    else:  # time range too wide for a composite key
        order = np.lexsort((times, keys))
    return order.astype(np.int32)


def _stabilise(order: NDArray[np.int64], key: NDArray[np.int64]) -> None:
    """Sort ``order`` in place by row number inside each run of equal ``key[order]``."""
    n = len(order)
    tied = np.zeros(n, dtype=bool)
    for a in range(0, n - 1, CHUNK_ROWS):
        b = min(a + CHUNK_ROWS, n - 1)
        ks = key[order[a : b + 1]]
        eq = ks[1:] == ks[:-1]
        tied[a:b] |= eq
        tied[a + 1 : b + 1] |= eq
    pos = np.flatnonzero(tied)
    if len(pos):
        rows = order[pos]
        order[pos] = rows[np.lexsort((rows, key[rows]))]


def chunk_bounds(offsets: NDArray[np.int64], target: int = CHUNK_ROWS) -> NDArray[np.int64]:
    """Chunk boundaries that fall on segment starts, about ``target`` rows apart.

    A segment longer than ``target`` gets a chunk of its own; returns ``(n_chunks + 1,)``
    positions starting at 0 and ending at ``offsets[-1]``.
    """
    n = int(offsets[-1])
    if n == 0:
        return np.zeros(1, np.int64)
    wanted = np.arange(0, n, target, dtype=np.int64)
    starts = offsets[np.searchsorted(offsets, wanted, side="left")]
    return np.unique(np.concatenate([starts, [0, n]]))


# ----------------------------------------------------------------------------- state
@dataclass
class ActivityState:
    """Per-key running totals: the latest activity of every user or item.

    Attributes
    ----------
    count : (n_keys,) int64
    rating_sum : (n_keys,) float64
        Sum of the non-missing ratings.
    rated : (n_keys,) int64
        Number of non-missing ratings.
    last_time : (n_keys,) int64
        Latest event time, :data:`NO_TIME` for keys without events.
    """

    count: NDArray[np.int64]
    rating_sum: NDArray[np.float64]
    rated: NDArray[np.int64]
    last_time: NDArray[np.int64]

    @classmethod
    def empty(cls, n_keys: int) -> ActivityState:
        """State of ``n_keys`` keys without events."""
        return cls(
            np.zeros(n_keys, np.int64),
            np.zeros(n_keys, np.float64),
            np.zeros(n_keys, np.int64),
            np.full(n_keys, NO_TIME, np.int64),
        )

    def __len__(self) -> int:
        return len(self.count)

    def grow(self, n_keys: int) -> None:
        """Extend to ``n_keys`` keys; the new ones start empty."""
        extra = n_keys - len(self)
        if extra > 0:
            pad = ActivityState.empty(extra)
            self.count = np.concatenate([self.count, pad.count])
            self.rating_sum = np.concatenate([self.rating_sum, pad.rating_sum])
            self.rated = np.concatenate([self.rated, pad.rated])
            self.last_time = np.concatenate([self.last_time, pad.last_time])

    def update(
        self,
        keys: NDArray[np.int64],
        times: NDArray[np.int64],
        ratings: NDArray[np.float32] | None,
    ) -> None:
        """Add events ``(keys[j], times[j], ratings[j])``; keys must already fit."""
        n = len(self)
        self.count += np.bincount(keys, minlength=n)
        if ratings is not None:
            ok = ~np.isnan(ratings)
            self.rating_sum += np.bincount(keys[ok], weights=ratings[ok], minlength=n)
            self.rated += np.bincount(keys[ok], minlength=n)
        np.maximum.at(self.last_time, keys, times)

    def mean_rating(self, idx: NDArray[np.int64]) -> NDArray[np.float32]:
        """``(len(idx),) float32`` mean rating; NaN for unrated keys and ``idx < 0``."""
        ok = idx >= 0
        rated = np.zeros(len(idx), np.int64)
        rated[ok] = self.rated[idx[ok]]
        total = np.zeros(len(idx), np.float64)
        total[ok] = self.rating_sum[idx[ok]]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(rated > 0, total / np.maximum(rated, 1), np.nan)
        return mean.astype(np.float32)


@dataclass
class RecentItems:
    """The last ``N`` items of every user with their times, right-aligned.

    Row ``u`` holds the user's most recent events in time order (ties in arrival order),
    newest in the last column; unused slots on the left hold item ``-1``.

    Attributes
    ----------
    items : (n_users, N) int32
    times : (n_users, N) int64
    """

    items: NDArray[np.int32]
    times: NDArray[np.int64]

    @property
    def length(self) -> int:
        """``N``, the number of items kept per user."""
        return int(self.items.shape[1])

    @classmethod
    def empty(cls, n_users: int, length: int) -> RecentItems:
        """No recent items for ``n_users`` users."""
        return cls(
            np.full((n_users, length), -1, np.int32), np.full((n_users, length), NO_TIME, np.int64)
        )

    def grow(self, n_users: int) -> None:
        """Extend to ``n_users`` rows; the new ones are empty."""
        extra = n_users - len(self.items)
        if extra > 0:
            pad = RecentItems.empty(extra, self.length)
            self.items = np.concatenate([self.items, pad.items])
            self.times = np.concatenate([self.times, pad.times])

    def merge(
        self, users: NDArray[np.int64], items: NDArray[np.int64], times: NDArray[np.int64]
    ) -> None:
        """Add events (in arrival order) and keep each user's ``N`` most recent.

        Kept old events precede new events of the same time, as in a rebuild on the
        concatenated log. Old events already dropped are older than all kept ones, so the
        result equals the last ``N`` of the user's full history.
        """
        if len(users) == 0:
            return
        n_len = self.length
        touched = np.unique(users)
        old_items = self.items[touched]
        valid = old_items >= 0
        old_u = np.broadcast_to(touched[:, None], old_items.shape)[valid]
        all_u = np.concatenate([old_u, users])
        all_i = np.concatenate([old_items[valid].astype(np.int64), items])
        all_t = np.concatenate([self.times[touched][valid], times])
        # stable by (user, time): old (time-ordered) events first, then new in arrival order
        local = np.searchsorted(touched, all_u).astype(np.int32)
        order = sort_by_key_time(local, len(touched), all_t)
        su, si, st = all_u[order], all_i[order], all_t[order]
        # rank from the end of each user's run: 0 = newest
        last = np.r_[su[1:] != su[:-1], True]
        end = np.flatnonzero(last)
        run_end = np.repeat(end, np.diff(np.r_[-1, end]))
        from_end = run_end - np.arange(len(su))
        keep = from_end < n_len
        self.items[touched] = -1
        self.times[touched] = NO_TIME
        rows, cols = su[keep], n_len - 1 - from_end[keep]
        self.items[rows, cols] = si[keep]
        self.times[rows, cols] = st[keep]

    def left_aligned(self, idx: NDArray[np.int64], length: int) -> NDArray[np.int64]:
        """``(len(idx), length) int64`` last ``length`` items, oldest first, ``-1`` padded at
        the end; rows with ``idx < 0`` are all ``-1``."""
        ok = idx >= 0
        block = np.full((len(idx), length), -1, np.int64)
        block[ok] = self.items[idx[ok], self.length - length :]
        n_valid = (block >= 0).sum(axis=1)
        cols = np.arange(length)[None, :] + (length - n_valid)[:, None]
        out = np.take_along_axis(block, np.minimum(cols, length - 1), axis=1)
        out[cols >= length] = -1
        return out


# ----------------------------------------------------------------------------- offline
@dataclass
class PointInTime:
    """Row-order point-in-time activity features of one entity (outputs of the kernel).

    Attributes
    ----------
    count : (n,) int32
        Events of the row's key strictly before the row's time.
    mean_rating : (n,) float32
        Their mean rating; NaN when none is rated.
    seconds_since_last : (n,) float32
        Row time minus the latest earlier event time; NaN when there is none (or the log
        has no timestamps).
    """

    count: NDArray[np.int32]
    mean_rating: NDArray[np.float32]
    seconds_since_last: NDArray[np.float32]


def point_in_time(
    order: NDArray[np.int32],
    offsets: NDArray[np.int64],
    times: NDArray[np.int64],
    ratings: NDArray[np.float32] | None,
    *,
    has_time: bool,
    progress: Callable[[int], Any] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[PointInTime, ActivityState]:
    """Point-in-time activity of every row, and each key's final totals.

    Parameters
    ----------
    order
        ``(n,) int32`` rows sorted by ``(key, time, row)`` (:func:`sort_by_key_time`).
    offsets
        ``(n_keys + 1,) int64`` key segments in ``order`` (:func:`segment_offsets`).
    times
        ``(n,) int64`` event times in row order.
    ratings
        ``(n,) float32`` ratings in row order (NaN = unrated), or ``None``.
    has_time
        Whether ``times`` are real timestamps (otherwise recency features are NaN).
    progress
        Called with the number of rows done after each chunk.
    chunk_rows
        Target rows per chunk (chunks hold whole key segments); the results do not
        depend on it.

    Returns
    -------
    PointInTime
        Features in row order.
    ActivityState
        Totals over all rows of each key (the online state after the whole log).
    """
    n = len(order)
    n_keys = len(offsets) - 1
    feats = PointInTime(np.empty(n, np.int32), np.empty(n, np.float32), np.empty(n, np.float32))
    state = ActivityState.empty(n_keys)
    has_nan = ratings is not None and bool(np.isnan(ratings).any())
    bounds = chunk_bounds(offsets, chunk_rows)
    seg_lo = 0
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        seg_hi = int(np.searchsorted(offsets, b, side="left"))
        seg = offsets[seg_lo : seg_hi + 1] - a  # local segment starts, last = chunk length
        lens = np.diff(seg)
        m = b - a
        rows = order[a:b]
        tc = times[rows]
        seg_start = np.repeat(seg[:-1], lens)
        new_group = np.empty(m, dtype=bool)
        new_group[0] = True
        np.not_equal(tc[1:], tc[:-1], out=new_group[1:])
        new_group[seg[:-1][lens > 0]] = True
        group_start = np.where(new_group, np.arange(m), 0)
        np.maximum.accumulate(group_start, out=group_start)
        count = group_start - seg_start
        feats.count[rows] = count
        seen = count > 0
        if has_time:
            prev = tc[np.maximum(group_start - 1, 0)]
            feats.seconds_since_last[rows] = np.where(seen, tc - prev, np.nan)
        else:
            feats.seconds_since_last[rows] = np.nan
        nonempty = lens > 0
        ends = seg[1:][nonempty]
        keys = np.arange(seg_lo, seg_hi)[nonempty]
        state.count[keys] = lens[nonempty]
        state.last_time[keys] = tc[ends - 1]
        if ratings is None:
            feats.mean_rating[rows] = np.nan
        else:
            rc = ratings[rows].astype(np.float64)
            cum = np.zeros(m + 1, np.float64)
            if has_nan:
                rated_mask = ~np.isnan(rc)
                rc[~rated_mask] = 0.0
                crated = np.zeros(m + 1, np.int64)
                np.cumsum(rated_mask, out=crated[1:])
                rated_before = crated[group_start] - crated[seg_start]
                state.rated[keys] = crated[ends] - crated[seg[:-1][nonempty]]
            else:
                rated_before = count
                state.rated[keys] = lens[nonempty]
            np.cumsum(rc, out=cum[1:])
            sums = cum[group_start] - cum[seg_start]
            with np.errstate(invalid="ignore", divide="ignore"):
                feats.mean_rating[rows] = np.where(
                    rated_before > 0, sums / np.maximum(rated_before, 1), np.nan
                )
            state.rating_sum[keys] = cum[ends] - cum[seg[:-1][nonempty]]
        seg_lo = seg_hi
        if progress is not None:
            progress(m)
    return feats, state


def recent_from_sorted(
    order: NDArray[np.int32],
    offsets: NDArray[np.int64],
    items: NDArray[np.int32],
    times: NDArray[np.int64],
    length: int,
) -> RecentItems:
    """The last ``length`` items of every user from the user-sorted order.

    Parameters
    ----------
    order, offsets
        Rows sorted by ``(user, time, row)`` and the user segments.
    items, times
        ``(n,)`` item codes and times in row order.
    length
        ``N``, items kept per user.
    """
    n_users = len(offsets) - 1
    pos = offsets[1:, None] - length + np.arange(length)[None, :]
    valid = pos >= offsets[:-1, None]
    safe = np.where(valid, pos, 0)
    if len(order):
        rows = order[safe]
        out_items = np.where(valid, items[rows], -1).astype(np.int32)
        out_times = np.where(valid, times[rows], NO_TIME)
    else:
        out_items = np.full((n_users, length), -1, np.int32)
        out_times = np.full((n_users, length), NO_TIME, np.int64)
    return RecentItems(out_items, out_times.astype(np.int64))
