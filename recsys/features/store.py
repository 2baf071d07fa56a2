"""The feature store: one set of feature definitions, read offline (point-in-time, for
training) and online (latest state, for serving).

Offline, every interaction row gets its user's and its item's activity computed only from
interactions **strictly before** the row's timestamp (rows of the same user or item at the
same second do not see each other), plus the user's behaviour sequence of the last ``N``
items before it, computed on demand. Online, the same definitions give the latest state of
a user or item; :meth:`FeatureStore.append` folds new events into it without a rebuild, and
gives the numbers a rebuild on the old plus new log would give.

Built for size: ids become ``int32`` codes, the log is sorted once per entity with a single
``int64`` composite key, and the point-in-time features come from chunked cumulative sums,
so building the store for 20M interactions needs well under 3x the memory of the raw
id/rating/time columns (see ``benchmarks/feature_store.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from tqdm.auto import tqdm

from recsys.errors import ArtifactError, ConfigError, DataError, FeatureSchemaError, format_examples
from recsys.features import _kernels as K
from recsys.features.attributes import EncodedAttributes, encode_attributes, object_column
from recsys.features.documents import build_item_documents
from recsys.features.fingerprint import FINGERPRINT_COLUMNS, fingerprint_arrays
from recsys.features.schema import (
    INTERACTION_VIEW,
    ITEM_DOCUMENTS_VIEW,
    STATIC_VIEWS,
    FeatureView,
)
from recsys.types import IdMap

__all__ = ["FORMAT_VERSION", "FeatureStore"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FORMAT = "recsys.feature_store"
_MANIFEST = "manifest.json"
_FILES = {
    "user_map": "user_map.parquet",
    "item_map": "item_map.parquet",
    "offline": "offline.parquet",
    "sequence_index": "sequence_index.parquet",
    "online_users": "online_users.parquet",
    "online_items": "online_items.parquet",
    "user_attributes": "user_attributes.parquet",
    "item_attributes": "item_attributes.parquet",
    "item_documents": "item_documents.parquet",
    "item_titles": "item_titles.parquet",
    "vocabularies": "vocabularies.json",
}
_STATE_COLUMNS = ("count", "rating_sum", "rated", "last_time")
_ATTRIBUTE_VERSION = 1


def _item_titles(item_map: IdMap, items: pd.DataFrame | None) -> list[str | None]:
    """Titles aligned to ``item_map`` (None where the items frame has none)."""
    if items is None or "title" not in items.columns or "item_id" not in items.columns:
        return [None] * len(item_map)
    titles: list[str | None] = [None] * len(item_map)
    idx = item_map.to_index(items["item_id"].to_numpy())
    for i, title in zip(idx.tolist(), items["title"].tolist(), strict=True):
        if i >= 0 and isinstance(title, str) and title:
            titles[i] = title
    return titles


def _as_1d(values: ArrayLike) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    return arr


def _check_id_columns(frame: pd.DataFrame, what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("user_id", "item_id") if c not in frame]
    if missing:
        raise DataError(
            f"{what} lacks columns {format_examples(missing)} (has "
            f"{format_examples([str(c) for c in frame.columns])}); the interaction contract "
            "is user_id, item_id, optional rating and timestamp"
        )


def _ratings(frame: pd.DataFrame, what: str) -> NDArray[np.float32] | None:
    if "rating" not in frame:
        return None
    col = frame["rating"]
    if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
        raise DataError(
            f"{what}: column 'rating' has dtype {col.dtype}, expected numbers; parse it with "
            "recsys.data readers or pd.to_numeric first"
        )
    if isinstance(col.dtype, np.dtype):  # plain numpy: no copy when already float32
        return col.to_numpy().astype(np.float32, copy=False)
    return col.to_numpy(dtype=np.float32, na_value=np.nan)  # nullable dtypes: NA -> NaN


def _timestamps(frame: pd.DataFrame, what: str) -> NDArray[np.int64] | None:
    if "timestamp" not in frame:
        return None
    col = frame["timestamp"]
    missing = col.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        raise DataError(
            f"{what}: {len(rows)} rows have no timestamp, e.g. rows {rows[:5].tolist()}; "
            "fill or drop them (or drop the column to use row order as time)"
        )
    if pd.api.types.is_datetime64_any_dtype(col):
        stamp = pd.to_datetime(col, utc=True)
        seconds = (stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        return np.asarray(seconds, dtype=np.int64)
    if pd.api.types.is_integer_dtype(col):
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(col):
        values = col.to_numpy(dtype=np.float64)
        if not np.array_equal(values, np.floor(values)):
            raise DataError(
                f"{what}: column 'timestamp' has fractional values; expected whole Unix seconds"
            )
        return values.astype(np.int64)
    raise DataError(
        f"{what}: column 'timestamp' has dtype {col.dtype}, expected int64 Unix seconds or "
        "datetimes; parse ISO-8601 strings with the recsys.data readers first"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_columns(actual: list[str], expected: tuple[str, ...], what: str) -> None:
    missing = [c for c in expected if c not in actual]
    unexpected = [c for c in actual if c not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing columns: {format_examples(missing)}")
        if unexpected:
            parts.append(f"unexpected columns: {format_examples(unexpected)}")
        raise FeatureSchemaError(
            f"{what} does not match the feature store format; {'; '.join(parts)}. "
            "Rebuild the store with this version of recsys."
        )


class FeatureStore:
    """User, item and interaction features with an offline and an online read.

    Build with :meth:`build` (or read with :meth:`load`), never with the constructor.

    Offline (training) read:

    * :meth:`offline_features` - one row per interaction, in input row order, with the
      point-in-time activity of the row's user and item (view
      ``interaction_point_in_time``);
    * :meth:`sequences` - the behaviour sequence of the last ``N`` items strictly before
      each row, left-aligned oldest -> newest, padded with ``-1``.

    Online (serving) read, the same definitions on the latest state:

    * :meth:`online_user_features`, :meth:`online_item_features`, :meth:`user_sequences`;
    * :meth:`append` folds new events in; unknown users and items get the empty state.

    And: :meth:`user_attributes` / :meth:`item_attributes` (encoded attribute columns),
    :meth:`item_documents` (tokens for content models), :meth:`save` / :meth:`load`.

    Indices (``user_idx``, ``item_idx``) are positions in :attr:`user_map` and
    :attr:`item_map`, which are the maps :meth:`recsys.types.TrainingData.from_frame`
    builds from the same interactions and items. ``append`` adds unseen ids at the end of
    the maps, so existing indices never change.

    Stability: provisional
    """

    def __init__(self) -> None:
        self._user_map = IdMap(np.empty(0, np.int64))
        self._item_map = IdMap(np.empty(0, np.int64))
        self._sequence_length = 20
        self._has_rating = False
        self._has_time = False
        self._fingerprint = ""
        self._n_build_users = 0
        # offline, row order (``_pos``) and user-sorted order (``_sorted_items``)
        self._pos = np.empty(0, np.int32)
        self._sorted_items = np.empty(0, np.int32)
        self._user_offsets = np.zeros(1, np.int64)
        empty = K.PointInTime(
            np.empty(0, np.int32), np.empty(0, np.float32), np.empty(0, np.float32)
        )
        self._user_pit = empty
        self._item_pit = empty
        # online
        self._user_state = K.ActivityState.empty(0)
        self._item_state = K.ActivityState.empty(0)
        self._recent = K.RecentItems.empty(0, self._sequence_length)
        self._max_time: int | None = None
        self._n_events = 0
        self._n_appended = 0
        # attributes and documents
        self._user_attrs = EncodedAttributes("user", pd.DataFrame())
        self._item_attrs = EncodedAttributes("item", pd.DataFrame())
        self._documents: list[list[str]] = []
        self._titles: list[str | None] = []

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        item_relations: pd.DataFrame | None = None,
        *,
        sequence_length: int = 20,
        show_progress: bool = True,
    ) -> FeatureStore:
        """Build every feature view from an interaction log and optional metadata.

        Parameters
        ----------
        interactions
            ``user_id``, ``item_id`` (ints or strings, kept as given), optional ``rating``
            (numbers; NaN = unrated) and ``timestamp`` (int64 Unix seconds or datetimes).
            Without ``timestamp`` the row order is the time order (every row its own
            instant) and the ``*_seconds_since_last`` features are NaN. Other columns are
            ignored.
        items
            ``item_id`` plus ``title``, ``genres`` (``|``-separated), ``text`` and other
            attribute columns. Its items join the item vocabulary even without
            interactions.
        users
            ``user_id`` plus attribute columns; users without interactions are ignored.
        item_relations
            Knowledge-graph triples ``item_id``, ``relation``, ``entity``, used as
            ``relation:entity`` document tokens.
        sequence_length
            ``N``: the longest behaviour sequence served offline and kept online.
        show_progress
            Show a progress bar over the rows.

        Returns
        -------
        FeatureStore

        Raises
        ------
        DataError
            Missing id columns, missing ids or timestamps, non-numeric ratings.
        ConfigError
            ``sequence_length < 1``.
        """
        if sequence_length < 1:
            raise ConfigError(f"FeatureStore: sequence_length must be >= 1, got {sequence_length}")
        _check_id_columns(interactions, "interactions")
        started = time.perf_counter()
        store = cls()
        store._sequence_length = int(sequence_length)
        n = len(interactions)
        ratings = _ratings(interactions, "interactions")
        stamps = _timestamps(interactions, "interactions")
        store._has_rating = ratings is not None
        store._has_time = stamps is not None
        store._fingerprint = fingerprint_arrays(
            n, interactions["user_id"], interactions["item_id"], ratings, stamps
        )
        times = stamps if stamps is not None else np.arange(n, dtype=np.int64)
        user_codes, store._user_map = K.encode_ids(interactions["user_id"], None, column="user_id")
        catalogue = items["item_id"] if items is not None and "item_id" in items else None
        item_codes, store._item_map = K.encode_ids(
            interactions["item_id"], catalogue, column="item_id"
        )
        n_users, n_items = len(store._user_map), len(store._item_map)
        store._n_build_users = n_users
        logger.debug(
            "encoded ids n=%d n_users=%d n_items=%d elapsed=%.2fs",
            n,
            n_users,
            n_items,
            time.perf_counter() - started,
        )
        with tqdm(
            total=2 * n, desc="features", unit="row", disable=not show_progress, leave=False
        ) as bar:
            store._build_user_side(user_codes, item_codes, times, ratings, bar.update)
            del user_codes
            order = K.sort_by_key_time(item_codes, n_items, times)
            offsets = K.segment_offsets(item_codes, n_items)
            del item_codes
            store._item_pit, store._item_state = K.point_in_time(
                order, offsets, times, ratings, has_time=store._has_time, progress=bar.update
            )
            del order
        store._max_time = int(times.max()) if (store._has_time and n) else None
        store._n_events = n
        store._user_attrs = encode_attributes(users, store._user_map, entity="user")
        store._item_attrs = encode_attributes(items, store._item_map, entity="item")
        store._documents = build_item_documents(store._item_map, items, item_relations)
        store._titles = _item_titles(store._item_map, items)
        logger.info(
            "built feature store n_interactions=%d n_users=%d n_items=%d "
            "sequence_length=%d elapsed=%.2fs",
            n,
            n_users,
            n_items,
            sequence_length,
            time.perf_counter() - started,
        )
        return store

    def _build_user_side(
        self,
        user_codes: NDArray[np.int32],
        item_codes: NDArray[np.int32],
        times: NDArray[np.int64],
        ratings: NDArray[np.float32] | None,
        progress: Callable[[int], Any],
    ) -> None:
        n_users = len(self._user_map)
        order = K.sort_by_key_time(user_codes, n_users, times)
        self._user_offsets = K.segment_offsets(user_codes, n_users)
        self._user_pit, self._user_state = K.point_in_time(
            order, self._user_offsets, times, ratings, has_time=self._has_time, progress=progress
        )
        self._recent = K.recent_from_sorted(
            order, self._user_offsets, item_codes, times, self._sequence_length
        )
        self._sorted_items = item_codes[order]
        self._pos = np.empty(len(order), order.dtype)
        self._pos[order] = np.arange(len(order), dtype=order.dtype)

    # ------------------------------------------------------------------ properties
    @property
    def user_map(self) -> IdMap:
        """The user vocabulary (grows with :meth:`append`)."""
        return self._user_map

    @property
    def item_map(self) -> IdMap:
        """The item vocabulary: interacted and catalogue items (grows with :meth:`append`)."""
        return self._item_map

    @property
    def sequence_length(self) -> int:
        """``N``, the longest behaviour sequence served."""
        return self._sequence_length

    @property
    def n_interactions(self) -> int:
        """Rows of the offline view (the log the store was built from)."""
        return len(self._pos)

    @property
    def n_appended(self) -> int:
        """Events folded into the online state by :meth:`append` since the build."""
        return self._n_appended

    @property
    def has_rating(self) -> bool:
        """Whether the log had a ``rating`` column."""
        return self._has_rating

    @property
    def has_timestamp(self) -> bool:
        """Whether the log had a ``timestamp`` column (else row order is time)."""
        return self._has_time

    @property
    def fingerprint(self) -> str:
        """sha256 of the build log's id/rating/time columns (see :mod:`.fingerprint`)."""
        return self._fingerprint

    @property
    def latest_timestamp(self) -> int | None:
        """The latest event time seen (build and appended), ``None`` without timestamps."""
        return self._max_time

    @property
    def views(self) -> dict[str, FeatureView]:
        """Every feature view of this store by name, with its schema and version."""
        out = {view.name: view for view in STATIC_VIEWS}
        for attrs in (self._user_attrs, self._item_attrs):
            view = FeatureView(
                name=f"{attrs.entity}_attributes",
                entity="user" if attrs.entity == "user" else "item",
                version=_ATTRIBUTE_VERSION,
                schema=attrs.schema,
                description=f"encoded {attrs.entity} attributes (categorical codes, 0=unknown)",
            )
            out[view.name] = view
        return out

    @staticmethod
    def fingerprint_of(interactions: pd.DataFrame) -> str:
        """The :attr:`fingerprint` a store built from ``interactions`` would have."""
        _check_id_columns(interactions, "interactions")
        return fingerprint_arrays(
            len(interactions),
            interactions["user_id"],
            interactions["item_id"],
            _ratings(interactions, "interactions"),
            _timestamps(interactions, "interactions"),
        )

    # ------------------------------------------------------------------ offline read
    def _row_user_idx(self, pos: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
        return np.searchsorted(self._user_offsets, pos, side="right").astype(np.int64) - 1

    def offline_features(self, *, attributes: bool = False) -> pd.DataFrame:
        """The point-in-time training view: one row per interaction of the build log.

        Row ``k`` (index ``k``) describes ``interactions.iloc[k]`` of :meth:`build`. The
        activity columns count only interactions strictly before the row's timestamp:

        ``user_idx``, ``item_idx`` (int32); ``user_count`` (int32), ``user_mean_rating``
        (float32, NaN when none rated), ``user_seconds_since_last`` (float32, NaN when no
        earlier event); the same three for the item (``item_count`` is the item's
        popularity so far).

        Parameters
        ----------
        attributes
            Also join the user and item attribute columns by index (scalar columns only;
            list columns such as ``item_genres`` stay in :meth:`item_attributes`). Without
            it the frame matches the ``interaction_point_in_time`` view exactly.

        Returns
        -------
        pandas.DataFrame
            ``n_interactions`` rows (a copy: changing it does not change the store).
        """
        columns = self._offline_columns()
        frame = pd.DataFrame(columns)  # a copy: edits to the frame never reach the store
        user_idx, item_idx = columns["user_idx"], columns["item_idx"]
        if attributes:
            for attrs, idx in ((self._user_attrs, user_idx), (self._item_attrs, item_idx)):
                scalar = [c for c in attrs.frame.columns if attrs.frame[c].dtype != object]
                for col in scalar:
                    frame[col] = attrs.frame[col].to_numpy()[idx]
        return frame

    def _sorted_users(self) -> NDArray[np.int32]:
        """``(n,) int32`` user index of every position of the user-sorted log."""
        counts = np.diff(self._user_offsets)
        return np.repeat(np.arange(len(counts), dtype=np.int32), counts)

    def _offline_columns(self) -> dict[str, NDArray[Any]]:
        """The ``interaction_point_in_time`` columns as arrays, in input row order."""
        return {
            "user_idx": self._sorted_users()[self._pos],
            "item_idx": self._sorted_items[self._pos],
            "user_count": self._user_pit.count,
            "user_mean_rating": self._user_pit.mean_rating,
            "user_seconds_since_last": self._user_pit.seconds_since_last,
            "item_count": self._item_pit.count,
            "item_mean_rating": self._item_pit.mean_rating,
            "item_seconds_since_last": self._item_pit.seconds_since_last,
        }

    def _check_length(self, length: int | None) -> int:
        n = self._sequence_length if length is None else int(length)
        if not 1 <= n <= self._sequence_length:
            raise ConfigError(
                f"FeatureStore: sequence length must be in 1..{self._sequence_length} (the "
                f"store's sequence_length), got {length}; rebuild with a larger sequence_length"
            )
        return n

    def sequences(self, rows: ArrayLike, length: int | None = None) -> NDArray[np.int64]:
        """Behaviour sequences of training rows: the user's items strictly before the row.

        Computed on demand from the user-sorted log (no ``n x N`` matrix is stored).

        Parameters
        ----------
        rows
            ``(m,)`` row numbers of the build log (positions in :meth:`offline_features`).
        length
            ``L <= sequence_length``; default ``sequence_length``.

        Returns
        -------
        (m, L) int64
            Item indices of the user's last ``L`` interactions before the row's timestamp,
            **left-aligned, oldest first**; slots after the last item hold ``-1``. Events at
            the same timestamp are ordered by row number.

        Raises
        ------
        DataError
            Row numbers outside ``0..n_interactions-1``.
        ConfigError
            ``length`` outside ``1..sequence_length``.
        """
        n_len = self._check_length(length)
        r = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        n = self.n_interactions
        bad = (r < 0) | (r >= n)
        if bad.any():
            raise DataError(
                f"FeatureStore.sequences: rows must be in 0..{n - 1}; got "
                f"{format_examples(r[bad].tolist())}"
            )
        pos = self._pos[r].astype(np.int64)
        start = self._user_offsets[self._row_user_idx(pos)]
        end = start + self._user_pit.count[r]
        begin = np.maximum(start, end - n_len)
        idx = begin[:, None] + np.arange(n_len)[None, :]
        valid = idx < end[:, None]
        out = self._sorted_items[np.where(valid, idx, 0)].astype(np.int64) if n else idx
        out[~valid] = -1
        return out

    # ------------------------------------------------------------------ attributes
    def user_attributes(self, user_ids: ArrayLike | None = None) -> pd.DataFrame:
        """Encoded user attributes (view ``user_attributes``).

        Parameters
        ----------
        user_ids
            External ids; default every user of :attr:`user_map`. Unknown users get the
            defaults (code 0 for categoricals, NaN for numbers).

        Returns
        -------
        pandas.DataFrame
            ``user_id`` then one column per attribute (``user_<column>``).
        """
        return self._attributes(self._user_attrs, self._user_map, user_ids)

    def item_attributes(self, item_ids: ArrayLike | None = None) -> pd.DataFrame:
        """Encoded item attributes (view ``item_attributes``), as :meth:`user_attributes`.

        ``item_genres`` holds each item's genre codes as an ``int32`` array (empty when
        unknown); :meth:`item_genre_matrix` gives them multi-hot.
        """
        return self._attributes(self._item_attrs, self._item_map, item_ids)

    @staticmethod
    def _attributes(attrs: EncodedAttributes, id_map: IdMap, ids: ArrayLike | None) -> pd.DataFrame:
        if ids is None:
            ext = id_map.ids
            idx = np.arange(len(id_map), dtype=np.int64)
        else:
            ext = _as_1d(ids)
            idx = id_map.to_index(ext)
        frame = attrs.rows(idx)
        frame.insert(0, f"{attrs.entity}_id", ext)
        return frame

    def item_genre_matrix(self) -> sp.csr_matrix:
        """``(n_items, n_genres) float32`` multi-hot genres; column ``g - 1`` = genre code
        ``g`` (names in ``vocabularies["item_genres"]``). Items added by :meth:`append`
        have empty rows.

        Raises
        ------
        FeatureSchemaError
            If the store was built without an items ``genres`` column.
        """
        m = self._item_attrs.genre_matrix()
        extra = len(self._item_map) - m.shape[0]
        if extra > 0:
            m = sp.csr_matrix(sp.vstack([m, sp.csr_matrix((extra, m.shape[1]), dtype=np.float32)]))
        return m

    @property
    def vocabularies(self) -> dict[str, list[str]]:
        """Categorical attribute column -> values; code ``k`` is ``values[k - 1]``."""
        return {**self._user_attrs.vocabularies, **self._item_attrs.vocabularies}

    # ------------------------------------------------------------------ documents
    def item_documents(self) -> pd.DataFrame:
        """Token documents of every item, for content models (view ``item_documents``).

        Returns
        -------
        pandas.DataFrame
            ``item_id`` and ``tokens`` (``list[str]``), one row per item of
            :attr:`item_map` in index order; see :mod:`recsys.features.documents` for the
            tokens (title and text words, ``genre:<g>``, ``<relation>:<entity>``).
        """
        docs = self._documents + [[] for _ in range(len(self._item_map) - len(self._documents))]
        tokens = object_column([list(doc) for doc in docs])  # copies: callers may edit them
        return pd.DataFrame({"item_id": self._item_map.ids, "tokens": tokens})

    def item_titles(self) -> list[str | None]:
        """Display titles of every item of :attr:`item_map` in index order (None if unknown).

        Raw titles as given in the items frame, for showing to people (serving's page);
        models read :meth:`item_documents` instead.
        """
        return self._titles + [None] * (len(self._item_map) - len(self._titles))

    # ------------------------------------------------------------------ online read
    def _now(self, now: float | None) -> float | None:
        if not self._has_time:
            return None
        if now is not None:
            return float(now)
        return None if self._max_time is None else float(self._max_time)

    def activity_arrays(
        self, entity: Literal["user", "item"], idx: ArrayLike
    ) -> dict[str, NDArray[Any]]:
        """Latest activity by *store index*, as plain arrays (the hot path of rankers).

        The numbers of :meth:`online_user_features` / :meth:`online_item_features`
        without the id lookup and the frame: ``count`` (int64), ``mean_rating``
        (float32, NaN unrated) and ``last_timestamp`` (float64 Unix seconds, NaN without
        events or timestamps). Indices ``< 0`` are unknown keys (count 0, NaN).
        """
        state = self._user_state if entity == "user" else self._item_state
        i = np.asarray(idx, np.int64)
        count, last, has_last = self._state_rows(state, i)
        return {
            "count": count,
            "mean_rating": state.mean_rating(i),
            "last_timestamp": np.where(has_last, last.astype(np.float64), np.nan),
        }

    def _state_rows(
        self, state: K.ActivityState, idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
        """Count, last time and whether there is one, of keys ``idx`` (``< 0``: none)."""
        ok = idx >= 0
        count = np.zeros(len(idx), np.int64)
        count[ok] = state.count[idx[ok]]
        last = np.full(len(idx), K.NO_TIME, np.int64)
        last[ok] = state.last_time[idx[ok]]
        return count, last, (last != K.NO_TIME) & self._has_time

    def _activity(
        self, state: K.ActivityState, idx: NDArray[np.int64], prefix: str, now: float | None
    ) -> dict[str, Any]:
        count, last, has_last = self._state_rows(state, idx)
        ref = self._now(now)
        if ref is None:
            since = np.full(len(idx), np.nan, np.float32)
        else:
            since = np.where(has_last, ref - last.astype(np.float64), np.nan).astype(np.float32)
        last_ts = pd.array(np.where(has_last, last, 0), dtype="Int64")
        last_ts[~has_last] = pd.NA
        return {
            f"{prefix}_idx": idx,
            f"{prefix}_count": count.astype(np.int32),
            f"{prefix}_mean_rating": state.mean_rating(idx),
            f"{prefix}_seconds_since_last": since,
            f"{prefix}_last_timestamp": last_ts,
        }

    def online_user_features(
        self, user_ids: ArrayLike, *, now: float | None = None
    ) -> pd.DataFrame:
        """Latest state of users (view ``user_activity``); unknown users get the default.

        Parameters
        ----------
        user_ids
            External ids (a scalar or a sequence).
        now
            Unix seconds for ``user_seconds_since_last``; default the latest timestamp the
            store has seen (pass the request time when serving). Ignored without timestamps.

        Returns
        -------
        pandas.DataFrame
            ``user_id``, ``user_idx`` (int64, -1 unknown), ``user_count`` (int32),
            ``user_mean_rating`` (float32), ``user_seconds_since_last`` (float32),
            ``user_last_timestamp`` (Int64, NA when none), ``user_recent_items`` (int64
            arrays of at most ``sequence_length`` item indices, oldest first). An unknown
            user has count 0, NaN mean and recency, NA last timestamp and no items.
        """
        ids = _as_1d(user_ids)
        idx = self._user_map.to_index(ids)
        cols = self._activity(self._user_state, idx, "user", now)
        seqs = self._recent.left_aligned(idx, self._sequence_length)
        recent = object_column([row[row >= 0] for row in seqs])
        return pd.DataFrame({"user_id": ids, **cols, "user_recent_items": recent})

    def online_item_features(
        self, item_ids: ArrayLike, *, now: float | None = None
    ) -> pd.DataFrame:
        """Latest state of items (view ``item_activity``); unknown items get the default.

        Parameters
        ----------
        item_ids
            External ids (a scalar or a sequence).
        now
            As in :meth:`online_user_features`.

        Returns
        -------
        pandas.DataFrame
            ``item_id``, ``item_idx`` (int64, -1 unknown), ``item_count`` (int32,
            popularity), ``item_mean_rating`` (float32), ``item_seconds_since_last``
            (float32), ``item_last_timestamp`` (Int64).
        """
        ids = _as_1d(item_ids)
        idx = self._item_map.to_index(ids)
        cols = self._activity(self._item_state, idx, "item", now)
        return pd.DataFrame({"item_id": ids, **cols})

    def user_sequences(self, user_ids: ArrayLike, length: int | None = None) -> NDArray[np.int64]:
        """Latest behaviour sequences of users, laid out as :meth:`sequences`.

        Parameters
        ----------
        user_ids
            ``(m,)`` external ids; unknown users get a row of ``-1``.
        length
            ``L <= sequence_length``; default ``sequence_length``.

        Returns
        -------
        (m, L) int64
            The user's last ``L`` item indices, left-aligned oldest first, ``-1`` padded.
        """
        n_len = self._check_length(length)
        idx = self._user_map.to_index(_as_1d(user_ids))
        return self._recent.left_aligned(idx, n_len)

    def user_sequence(self, user_id: object, length: int | None = None) -> NDArray[np.int64]:
        """``(L,) int64`` latest behaviour sequence of one user (see :meth:`user_sequences`)."""
        ids = np.empty(1, dtype=object)
        ids[0] = user_id
        return self.user_sequences(ids, length)[0]

    def append(self, events: pd.DataFrame) -> None:
        """Fold new interactions into the online state, without a rebuild.

        Afterwards the online read gives the same numbers as a store built on the old log
        followed by ``events`` (ties at one timestamp: old events first, then ``events`` in
        row order). The offline view is unchanged: it stays the build log's training view.

        Parameters
        ----------
        events
            ``user_id``, ``item_id``, ``rating`` (if the store has ratings; missing = NaN)
            and ``timestamp`` (required if the store has timestamps; without them events
            come after every known event, in row order). Unseen users and items are added
            to the vocabularies at the end.

        Raises
        ------
        DataError
            Missing columns, ids or timestamps, or ids of another type than the store's.
        """
        _check_id_columns(events, "events")
        m = len(events)
        if m == 0:
            return
        for col in ("user_id", "item_id"):
            missing = events[col].isna().to_numpy()
            if missing.any():
                rows = np.flatnonzero(missing)
                raise DataError(
                    f"events: {len(rows)} rows have a missing {col}, e.g. rows {rows[:5].tolist()}"
                )
        ratings = _ratings(events, "events") if self._has_rating else None
        if self._has_rating and ratings is None:
            ratings = np.full(m, np.nan, np.float32)
        if self._has_time:
            stamps = _timestamps(events, "events")
            if stamps is None:
                raise DataError(
                    "events: no 'timestamp' column, but the store was built with timestamps; "
                    "add the events' Unix seconds"
                )
            times = stamps
        else:
            times = self._n_events + np.arange(m, dtype=np.int64)
        try:  # both maps first, so a failure leaves the store unchanged
            user_map = self._user_map.extend(_as_1d(events["user_id"].to_numpy()))
            item_map = self._item_map.extend(_as_1d(events["item_id"].to_numpy()))
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"events: ids do not match the store's id types (users "
                f"{self._user_map.ids.dtype}, items {self._item_map.ids.dtype}): {exc}"
            ) from exc
        self._user_map, self._item_map = user_map, item_map
        users = self._user_map.to_index(_as_1d(events["user_id"].to_numpy()))
        items = self._item_map.to_index(_as_1d(events["item_id"].to_numpy()))
        self._user_state.grow(len(self._user_map))
        self._item_state.grow(len(self._item_map))
        self._recent.grow(len(self._user_map))
        self._user_state.update(users, times, ratings)
        self._item_state.update(items, times, ratings)
        self._recent.merge(users, items, times)
        if self._has_time:
            latest = int(times.max())
            self._max_time = latest if self._max_time is None else max(self._max_time, latest)
        self._n_events += m
        self._n_appended += m
        logger.debug(
            "appended events n=%d n_users=%d n_items=%d",
            m,
            len(self._user_map),
            len(self._item_map),
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path | str) -> None:
        """Write the store to directory ``path``: parquet files plus ``manifest.json``.

        The manifest records the format version, the sequence length, the fingerprint of
        the build log, every view with its version and schema, and for every file its row
        count and sha256. Nothing is pickled.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, Any]] = {}

        def write(key: str, table: pa.Table, view: str | None = None) -> None:
            target = path / _FILES[key]
            # no dictionary pages + zstd: about 2x faster to write than the defaults on the
            # high-cardinality numeric columns here, and smaller
            pq.write_table(table, target, compression="zstd", use_dictionary=False)
            files[_FILES[key]] = {"rows": table.num_rows, "view": view}

        self._user_map.save(path / _FILES["user_map"])
        files[_FILES["user_map"]] = {"rows": len(self._user_map), "view": None}
        self._item_map.save(path / _FILES["item_map"])
        files[_FILES["item_map"]] = {"rows": len(self._item_map), "view": None}
        # numpy -> arrow is zero-copy here (NaN stays a float value, not a null)
        write("offline", pa.table(self._offline_columns()), INTERACTION_VIEW.name)
        write("sequence_index", pa.table({"sorted_position": self._pos}))
        write("online_users", self._state_table(self._user_state, self._recent))
        write("online_items", self._state_table(self._item_state, None))
        for attrs in (self._user_attrs, self._item_attrs):
            table = pa.Table.from_pandas(attrs.frame, preserve_index=False)
            write(f"{attrs.entity}_attributes", table, f"{attrs.entity}_attributes")
            # parquet keeps no row count for a table without columns: record the frame's
            files[_FILES[f"{attrs.entity}_attributes"]]["frame_rows"] = len(attrs.frame)
        docs = pa.array(self._documents, type=pa.list_(pa.string()))
        write("item_documents", pa.table({"tokens": docs}), ITEM_DOCUMENTS_VIEW.name)
        write("item_titles", pa.table({"title": pa.array(self._titles, type=pa.string())}))
        (path / _FILES["vocabularies"]).write_text(
            json.dumps(self.vocabularies, indent=1, sort_keys=True) + "\n"
        )
        files[_FILES["vocabularies"]] = {"rows": len(self.vocabularies), "view": None}
        for name, entry in files.items():
            entry["sha256"] = _sha256(path / name)
        from recsys import __version__

        manifest = {
            "format": _FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "recsys_version": __version__,
            "sequence_length": self._sequence_length,
            "has_rating": self._has_rating,
            "has_timestamp": self._has_time,
            "fingerprint": {
                "algorithm": "sha256",
                "columns": [c for c in FINGERPRINT_COLUMNS],
                "value": self._fingerprint,
                "n_rows": self.n_interactions,
            },
            "n_interactions": self.n_interactions,
            "n_appended": self._n_appended,
            "n_events": self._n_events,
            "latest_timestamp": self._max_time,
            "n_users": len(self._user_map),
            "n_items": len(self._item_map),
            "n_build_users": self._n_build_users,
            "views": {name: view.to_dict() for name, view in self.views.items()},
            "files": files,
        }
        (path / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        logger.info("saved feature store path=%s n_interactions=%d", path, self.n_interactions)

    @staticmethod
    def _state_table(state: K.ActivityState, recent: K.RecentItems | None) -> pa.Table:
        cols: dict[str, pa.Array] = {
            "count": pa.array(state.count),
            "rating_sum": pa.array(state.rating_sum),
            "rated": pa.array(state.rated),
            "last_time": pa.array(state.last_time),
        }
        if recent is not None:
            n_len = recent.length
            cols["recent_items"] = pa.FixedSizeListArray.from_arrays(
                pa.array(recent.items.ravel()), n_len
            )
            cols["recent_times"] = pa.FixedSizeListArray.from_arrays(
                pa.array(recent.times.ravel()), n_len
            )
        return pa.table(cols)

    @classmethod
    def load(cls, path: Path | str, *, expected_fingerprint: str | None = None) -> FeatureStore:
        """Read a store written by :meth:`save`, verifying it first.

        Parameters
        ----------
        path
            The store directory.
        expected_fingerprint
            If given, refuse a store built from other data (compare with
            :meth:`fingerprint_of` of your interactions).

        Raises
        ------
        ArtifactError
            Missing or unreadable files, a checksum or row-count mismatch, an unknown format
            version, or a fingerprint other than ``expected_fingerprint``.
        FeatureSchemaError
            A view whose version or columns differ from this code's definitions, or a file
            whose columns differ from the recorded schema.
        """
        path = Path(path)
        try:
            manifest = json.loads((path / _MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"FeatureStore: cannot read {path / _MANIFEST}: {exc}") from exc
        if manifest.get("format") != _FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"FeatureStore: {path} holds format {manifest.get('format')!r} version "
                f"{manifest.get('format_version')!r}; this code reads {_FORMAT!r} version "
                f"{FORMAT_VERSION}. Rebuild the store."
            )
        fp = manifest.get("fingerprint", {}).get("value")
        if expected_fingerprint is not None and fp != expected_fingerprint:
            raise ArtifactError(
                f"FeatureStore: {path} was built from other interactions (fingerprint "
                f"{str(fp)[:12]}..., expected {expected_fingerprint[:12]}...); rebuild it "
                "from the current data"
            )
        files = manifest.get("files", {})
        for name in _FILES.values():
            entry = files.get(name)
            target = path / name
            if entry is None or not target.is_file():
                raise ArtifactError(f"FeatureStore: {path} lacks {name}; the store is incomplete")
            if _sha256(target) != entry.get("sha256"):
                raise ArtifactError(
                    f"FeatureStore: checksum mismatch for {target}; the file is damaged or was "
                    "modified after saving. Rebuild or restore the store."
                )
        views = {
            name: FeatureView.from_dict(data) for name, data in manifest.get("views", {}).items()
        }
        for view in STATIC_VIEWS:
            recorded = views.get(view.name)
            if recorded is None:
                raise FeatureSchemaError(
                    f"FeatureStore: {path} has no view {view.name!r}; rebuild the store"
                )
            if recorded.version != view.version or recorded.schema != view.schema:
                diff = view.schema.differences(
                    {**dict.fromkeys(recorded.schema.keys, "any"), **recorded.schema.dtypes}
                )
                raise FeatureSchemaError(
                    f"FeatureStore: {path} was built with view {view.name!r} version "
                    f"{recorded.version}; this code defines version {view.version}"
                    + (f" ({'; '.join(diff)})" if diff else "")
                    + ". Rebuild the store."
                )
        try:
            return cls._read(path, manifest, views)
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            if isinstance(exc, FeatureSchemaError):
                raise
            raise ArtifactError(f"FeatureStore: cannot read {path}: {exc}") from exc

    @classmethod
    def _read(
        cls, path: Path, manifest: dict[str, Any], views: dict[str, FeatureView]
    ) -> FeatureStore:
        store = cls()
        files = manifest["files"]

        def table(key: str) -> pa.Table:
            name = _FILES[key]
            t = pq.read_table(path / name)
            if t.num_rows != files[name]["rows"]:
                raise ArtifactError(
                    f"FeatureStore: {path / name} has {t.num_rows} rows, the manifest says "
                    f"{files[name]['rows']}"
                )
            return t

        store._sequence_length = int(manifest["sequence_length"])
        store._has_rating = bool(manifest["has_rating"])
        store._has_time = bool(manifest["has_timestamp"])
        store._fingerprint = str(manifest["fingerprint"]["value"])
        store._n_build_users = int(manifest["n_build_users"])
        store._n_events = int(manifest["n_events"])
        store._n_appended = int(manifest["n_appended"])
        latest = manifest["latest_timestamp"]
        store._max_time = None if latest is None else int(latest)
        store._user_map = IdMap.load(path / _FILES["user_map"])
        store._item_map = IdMap.load(path / _FILES["item_map"])

        offline_path = path / _FILES["offline"]
        parquet = pq.ParquetFile(offline_path)
        INTERACTION_VIEW.schema.check(
            parquet.schema_arrow.empty_table().to_pandas(), what=str(offline_path)
        )
        n = parquet.metadata.num_rows
        if n != files[_FILES["offline"]]["rows"]:
            raise ArtifactError(
                f"FeatureStore: {offline_path} has {n} rows, the manifest says "
                f"{files[_FILES['offline']]['rows']}"
            )

        def column(name: str) -> NDArray[Any]:
            # one column at a time keeps the load's extra memory to a single column
            return np.asarray(pq.read_table(offline_path, columns=[name]).column(name))

        pos_table = table("sequence_index")
        _check_columns(pos_table.column_names, ("sorted_position",), str(path / "sequence_index"))
        store._pos = np.asarray(pos_table.column("sorted_position"))
        del pos_table
        if len(store._pos) != n:
            raise ArtifactError(f"FeatureStore: {path}: sequence index and offline view differ")
        store._sorted_items = np.empty(n, np.int32)
        store._sorted_items[store._pos] = column("item_idx")
        store._user_offsets = K.segment_offsets(column("user_idx"), store._n_build_users)
        store._user_pit = K.PointInTime(
            column("user_count"), column("user_mean_rating"), column("user_seconds_since_last")
        )
        store._item_pit = K.PointInTime(
            column("item_count"), column("item_mean_rating"), column("item_seconds_since_last")
        )

        users = table("online_users")
        _check_columns(
            users.column_names,
            (*_STATE_COLUMNS, "recent_items", "recent_times"),
            str(path / _FILES["online_users"]),
        )
        store._user_state = cls._read_state(users)
        n_len = store._sequence_length
        store._recent = K.RecentItems(  # copies: the online state is updated in place
            cls._fixed_lists(users, "recent_items", n_len).astype(np.int32),
            cls._fixed_lists(users, "recent_times", n_len).astype(np.int64),
        )
        items = table("online_items")
        _check_columns(items.column_names, _STATE_COLUMNS, str(path / _FILES["online_items"]))
        store._item_state = cls._read_state(items)
        if len(store._user_state) != len(store._user_map) or len(store._item_state) != len(
            store._item_map
        ):
            raise ArtifactError(f"FeatureStore: {path}: online state and id maps differ in size")

        vocab = json.loads((path / _FILES["vocabularies"]).read_text())
        for entity in ("user", "item"):
            name = f"{entity}_attributes"
            frame = table(name).to_pandas()
            n_rows = files[_FILES[name]].get("frame_rows", files[_FILES[name]]["rows"])
            if frame.shape[1] == 0:
                frame = pd.DataFrame(index=pd.RangeIndex(n_rows))
            else:
                frame.index = pd.RangeIndex(n_rows)
            recorded = views.get(name)
            if recorded is None:
                raise FeatureSchemaError(f"FeatureStore: {path} has no view {name!r}")
            recorded.schema.check(frame.assign(**{f"{entity}_id": 0}), what=str(path / name))
            store._set_attrs(
                EncodedAttributes(
                    entity, frame, {k: v for k, v in vocab.items() if k in frame.columns}
                )
            )
        docs = table("item_documents")
        _check_columns(docs.column_names, ("tokens",), str(path / _FILES["item_documents"]))
        store._documents = docs.column("tokens").to_pylist()
        titles = table("item_titles")
        _check_columns(titles.column_names, ("title",), str(path / _FILES["item_titles"]))
        store._titles = titles.column("title").to_pylist()
        logger.info("loaded feature store path=%s n_interactions=%d", path, n)
        return store

    def _set_attrs(self, attrs: EncodedAttributes) -> None:
        if attrs.entity == "user":
            self._user_attrs = attrs
        else:
            self._item_attrs = attrs

    @staticmethod
    def _fixed_lists(table: pa.Table, column: str, width: int) -> NDArray[Any]:
        flat = table.column(column).combine_chunks().flatten().to_numpy()
        return np.asarray(flat).reshape(-1, width)

    @staticmethod
    def _read_state(table: pa.Table) -> K.ActivityState:
        return K.ActivityState(
            table.column("count").to_numpy().astype(np.int64),
            table.column("rating_sum").to_numpy().astype(np.float64),
            table.column("rated").to_numpy().astype(np.int64),
            table.column("last_time").to_numpy().astype(np.int64),
        )

    def __repr__(self) -> str:
        return (
            f"FeatureStore(n_interactions={self.n_interactions}, n_users={len(self._user_map)}, "
            f"n_items={len(self._item_map)}, sequence_length={self._sequence_length}, "
            f"n_appended={self._n_appended})"
        )
