"""The feature store's online activity views, computed out of core with ``dask.dataframe``.

:meth:`recsys.features.FeatureStore.build` holds the whole interaction log in memory.
For a parquet log larger than memory, :func:`build_activity_views` computes the same
latest-state views — ``user_activity`` and ``item_activity``, exactly the frames
:meth:`FeatureStore.online_user_features` and :meth:`FeatureStore.online_item_features`
return for every user and item — by streaming the log through Dask:

* per-user and per-item totals (events, rating sum and count, last time) are tree
  reductions of ``groupby`` aggregations: memory is bounded by a partition plus the
  number of users or items, never by the number of events;
* a user's last ``sequence_length`` items are a tree reduction too: each partition keeps
  its last ``N`` events per user, ordered by ``(time, arrival)`` where arrival is
  ``(partition, row)``, and merging keeps the last ``N`` of the union, which is the
  store's order (ties in time broken by row order);
* the log is read once: every reduction is computed in one ``dask.compute``.

Only the per-entity results (one row per user or item) come back to the driver, so it
needs memory for the vocabularies and views, not for the log. With a
``distributed.Client`` active the work runs on its cluster; otherwise on Dask's default
local scheduler.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from recsys.errors import ConfigError, DataError, format_examples
from recsys.types import IdMap

__all__ = ["ActivityViews", "build_activity_views"]

logger = logging.getLogger(__name__)

_NO_TIME = np.iinfo(np.int64).min


@dataclass(frozen=True)
class ActivityViews:
    """The ``user_activity`` and ``item_activity`` views of a log, built out of core.

    Stability: provisional

    Attributes
    ----------
    user_activity
        One row per user in vocabulary order: ``user_id``, ``user_idx`` (int64),
        ``user_count`` (int32), ``user_mean_rating`` (float32, NaN when none rated),
        ``user_seconds_since_last`` (float32), ``user_last_timestamp`` (Int64) and
        ``user_recent_items`` (int64 item indices, oldest first, at most
        ``sequence_length``) — the columns of the ``user_activity`` feature view.
    item_activity
        One row per item (interacted or catalogue): ``item_id``, ``item_idx``,
        ``item_count`` (the popularity), ``item_mean_rating``, ``item_seconds_since_last``,
        ``item_last_timestamp`` — the ``item_activity`` view.
    user_map, item_map
        The vocabularies (sorted ids, as the feature store and ``TrainingData`` build them).
    n_interactions
        Events in the log.
    latest_timestamp
        The latest event time, or ``None`` when the log has no ``timestamp`` column.
    """

    user_activity: pd.DataFrame
    item_activity: pd.DataFrame
    user_map: IdMap
    item_map: IdMap
    n_interactions: int
    latest_timestamp: int | None

    def save(self, path: Path | str) -> None:
        """Write ``user_activity.parquet``, ``item_activity.parquet`` and ``views.json``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.user_activity.to_parquet(root / "user_activity.parquet", index=False)
        self.item_activity.to_parquet(root / "item_activity.parquet", index=False)
        meta = {
            "n_interactions": self.n_interactions,
            "latest_timestamp": self.latest_timestamp,
            "n_users": len(self.user_map),
            "n_items": len(self.item_map),
        }
        (root / "views.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------- partitions
def _prepare(part: pd.DataFrame, has_rating: bool, has_time: bool, number: int) -> pd.DataFrame:
    """One partition in the reduction's terms (numeric rating/time columns plus arrival)."""
    n = len(part)
    out = pd.DataFrame(
        {
            "user_id": part["user_id"],
            "item_id": part["item_id"],
            "_one": np.ones(n, np.int64),
            "_part": np.full(n, number, np.int64),
            "_row": np.arange(n, dtype=np.int64),
        },
        index=part.index,
    )
    if has_rating:
        rating = part["rating"].to_numpy(dtype=np.float64, na_value=np.nan)
        rated = ~np.isnan(rating)
        out["_rating"] = np.where(rated, rating, 0.0)
        out["_rated"] = rated.astype(np.int64)
    else:
        out["_rating"] = np.zeros(n, np.float64)
        out["_rated"] = np.zeros(n, np.int64)
    if has_time:
        col = part["timestamp"]
        if pd.api.types.is_datetime64_any_dtype(col):
            stamp = pd.to_datetime(col, utc=True)
            seconds = (stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
            out["_time"] = np.asarray(seconds, dtype=np.int64)
        else:
            out["_time"] = col.to_numpy(dtype=np.int64)
    else:  # row order is time: arrival alone orders events
        out["_time"] = np.zeros(n, np.int64)
    return out


def _prepare_partition(
    part: pd.DataFrame,
    has_rating: bool,
    has_time: bool,
    partition_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    number = 0 if partition_info is None else int(partition_info["number"])
    return _prepare(part, has_rating, has_time, number)


_ORDER = ["user_id", "_time", "_part", "_row"]


def _last_events(frame: pd.DataFrame, length: int) -> pd.DataFrame:
    """Each user's last ``length`` events by ``(time, partition, row)``, in that order."""
    ordered = frame.sort_values(_ORDER, kind="stable")
    return ordered.groupby("user_id", sort=False, observed=True).tail(length)


# ---------------------------------------------------------------------------- the build
def _read(source: Any, columns: Sequence[str] | None = None) -> Any:
    import dask.dataframe as dd

    if isinstance(source, dd.DataFrame):
        return source
    if isinstance(source, list | tuple):
        paths: Any = [str(p) for p in source]
    else:
        paths = str(source)
    try:
        return dd.read_parquet(paths, columns=list(columns) if columns else None)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the parquet log {source}: {exc}") from exc


def _check_log(frame: Any) -> tuple[bool, bool]:
    cols = list(frame.columns)
    missing = [c for c in ("user_id", "item_id") if c not in cols]
    if missing:
        raise DataError(
            f"interaction log lacks columns {format_examples(missing)} (has "
            f"{format_examples([str(c) for c in cols])}); the interaction contract is "
            "user_id, item_id, optional rating and timestamp"
        )
    has_rating = "rating" in cols
    if has_rating:
        dtype = frame.dtypes["rating"]
        if not (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)):
            raise DataError(f"interaction log: column 'rating' has dtype {dtype}, expected numbers")
    has_time = "timestamp" in cols
    if has_time:
        dtype = frame.dtypes["timestamp"]
        api = pd.api.types
        if not (api.is_integer_dtype(dtype) or api.is_datetime64_any_dtype(dtype)):
            raise DataError(
                f"interaction log: column 'timestamp' has dtype {dtype}, expected int64 Unix "
                "seconds or datetimes; normalise it with the recsys.data readers first"
            )
    return has_rating, has_time


def _ids(index: pd.Index) -> NDArray[Any]:
    arr = index.to_numpy()
    return arr if arr.dtype.kind in "iufb" else np.asarray(arr, dtype=object)


def build_activity_views(
    source: str | Path | Sequence[str | Path] | Any,
    *,
    items: pd.DataFrame | None = None,
    sequence_length: int = 20,
    now: float | None = None,
    split_every: int | None = 8,
) -> ActivityViews:
    """Latest-state user and item activity views of a parquet log, computed out of core.

    Gives the frames a :class:`recsys.features.FeatureStore` built from the same log
    (in the same row order) returns from ``online_user_features(store.user_map.ids)`` and
    ``online_item_features(store.item_map.ids)``.

    Parameters
    ----------
    source
        A parquet file, directory or glob, a list of them (read in order: the order is
        the arrival order that breaks ties in time), or a ``dask.dataframe.DataFrame``.
        Columns: ``user_id``, ``item_id``, optional ``rating`` (numbers, NaN = unrated)
        and ``timestamp`` (int64 Unix seconds or datetimes); others are not read.
    items
        Catalogue with an ``item_id`` column: its items join the item vocabulary even
        without interactions (count 0), as in :meth:`FeatureStore.build`.
    sequence_length
        ``N``: recent items kept per user.
    now
        Reference time of ``*_seconds_since_last``; default the latest timestamp.
    split_every
        Fan-in of the tree reductions.

    Returns
    -------
    ActivityViews

    Raises
    ------
    DataError
        Missing columns or ids, non-numeric ratings, timestamps that are not integers or
        datetimes, an unreadable log.
    ConfigError
        ``sequence_length < 1``.
    """
    import dask

    if sequence_length < 1:
        raise ConfigError(f"sequence_length must be >= 1, got {sequence_length}")
    started = time.perf_counter()
    frame = _read(source)
    has_rating, has_time = _check_log(frame)
    wanted = ["user_id", "item_id"] + (["rating"] if has_rating else [])
    frame = frame[wanted + (["timestamp"] if has_time else [])]
    meta = _prepare(frame._meta, has_rating, has_time, 0)
    log = frame.map_partitions(
        _prepare_partition, has_rating, has_time, meta=meta, enforce_metadata=False
    )
    totals = {"_one": "sum", "_rating": "sum", "_rated": "sum", "_time": "max"}
    user_tot = log.groupby("user_id").agg(totals, split_every=split_every)
    item_tot = log.groupby("item_id").agg(totals, split_every=split_every)
    recent = log[["user_id", "item_id", "_time", "_part", "_row"]].reduction(
        chunk=_last_events,
        combine=_last_events,
        aggregate=_last_events,
        chunk_kwargs={"length": sequence_length},
        combine_kwargs={"length": sequence_length},
        aggregate_kwargs={"length": sequence_length},
        meta=meta[["user_id", "item_id", "_time", "_part", "_row"]],
        split_every=split_every,
    )
    user_tot, item_tot, recent, null_users, null_items = dask.compute(
        user_tot,
        item_tot,
        recent,
        frame["user_id"].isna().sum(),
        frame["item_id"].isna().sum(),
    )
    for column, bad in (("user_id", int(null_users)), ("item_id", int(null_items))):
        if bad:
            raise DataError(
                f"interaction log: {bad} rows have a missing {column}; drop or fill them"
            )

    user_map = IdMap.from_values(_ids(user_tot.index))
    item_values = _ids(item_tot.index)
    if items is not None and "item_id" in items:
        catalogue = items["item_id"].dropna().to_numpy()
        item_values = np.concatenate([item_values, np.asarray(catalogue, item_values.dtype)])
    item_map = IdMap.from_values(item_values)
    n_events = int(user_tot["_one"].sum())
    latest = int(user_tot["_time"].max()) if has_time and n_events else None
    ref = None if not has_time else (float(now) if now is not None else latest)

    user_view = _activity_frame("user", user_map, user_tot, has_time, ref)
    user_view["user_recent_items"] = _recent_column(recent, user_map, item_map)
    item_view = _activity_frame("item", item_map, item_tot, has_time, ref)
    logger.info(
        "built activity views out of core n_interactions=%d n_users=%d n_items=%d "
        "partitions=%d elapsed=%.2fs",
        n_events,
        len(user_map),
        len(item_map),
        frame.npartitions,
        time.perf_counter() - started,
    )
    return ActivityViews(user_view, item_view, user_map, item_map, n_events, latest)


def _activity_frame(
    prefix: str, vocab: IdMap, totals: pd.DataFrame, has_time: bool, ref: float | None
) -> pd.DataFrame:
    """The view columns of every id of ``vocab`` from its reduced totals (0 when absent)."""
    pos = pd.Index(_ids(totals.index)).get_indexer(vocab.ids)
    found = pos >= 0
    take = np.where(found, pos, 0)

    def column(name: str, fill: Any, dtype: Any) -> NDArray[Any]:
        values = totals[name].to_numpy()[take] if len(totals) else np.zeros(len(take))
        return np.where(found, values, fill).astype(dtype)

    count = column("_one", 0, np.int64)
    rated = column("_rated", 0, np.int64)
    rating_sum = column("_rating", 0.0, np.float64)
    last = column("_time", _NO_TIME, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(rated > 0, rating_sum / np.maximum(rated, 1), np.nan).astype(np.float32)
    has_last = found & (count > 0) & has_time
    if ref is None:
        since = np.full(len(vocab), np.nan, np.float32)
    else:
        since = np.where(has_last, ref - last.astype(np.float64), np.nan).astype(np.float32)
    last_ts = pd.array(np.where(has_last, last, 0), dtype="Int64")
    last_ts[~has_last] = pd.NA
    return pd.DataFrame(
        {
            f"{prefix}_id": vocab.ids,
            f"{prefix}_idx": np.arange(len(vocab), dtype=np.int64),
            f"{prefix}_count": count.astype(np.int32),
            f"{prefix}_mean_rating": mean,
            f"{prefix}_seconds_since_last": since,
            f"{prefix}_last_timestamp": last_ts,
        }
    )


def _recent_column(recent: pd.DataFrame, user_map: IdMap, item_map: IdMap) -> NDArray[Any]:
    """``(n_users,)`` object array of int64 item-index arrays, oldest first."""
    users = user_map.to_index(_ids(pd.Index(recent["user_id"])))
    items = item_map.to_index(_ids(pd.Index(recent["item_id"])))
    order = np.lexsort(
        (recent["_row"].to_numpy(), recent["_part"].to_numpy(), recent["_time"].to_numpy(), users)
    )
    users, items = users[order], items[order]
    counts = np.bincount(users, minlength=len(user_map))
    out = np.empty(len(user_map), dtype=object)
    for u, chunk in enumerate(np.split(items.astype(np.int64), np.cumsum(counts)[:-1])):
        out[u] = chunk
    return out
