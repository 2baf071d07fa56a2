"""Core value types: id vocabularies and the training view every model fits on.

External ids (``user_id``, ``item_id``) are opaque and kept verbatim; internal indices
(``user_idx``, ``item_idx``) are contiguous ``int64`` positions. Convert only through
:class:`IdMap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from recsys.errors import ArtifactError, DataError

__all__ = ["IdMap", "TrainingData"]


class IdMap:
    """Bidirectional map between external ids and contiguous indices ``0..n-1``.

    Ids are kept exactly as given: strings stay strings (``"007"`` stays ``"007"``),
    integers stay integers. Lookups of unknown ids return ``-1`` rather than raising,
    so callers can route them to a cold-start path.

    Stability: stable

    Parameters
    ----------
    ids
        Distinct external ids in index order.

    Examples
    --------
    >>> m = IdMap(["007", "a", "b"])
    >>> m.to_index(["a", "zzz"]).tolist()
    [1, -1]
    >>> m.to_ids([0]).tolist()
    ['007']
    """

    def __init__(self, ids: ArrayLike) -> None:
        arr = np.asarray(ids)
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        self._ids: NDArray[Any] = arr
        self._index = pd.Index(arr)
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()].unique()[:5].tolist()
            raise DataError(f"IdMap: ids must be unique; duplicated: {dup}")

    @classmethod
    def from_values(cls, values: ArrayLike) -> IdMap:
        """Build a map of the distinct values, in sorted order where the values sort.

        Sorting makes the map independent of row order, so the same data always gives
        the same indices.
        """
        uniq = np.asarray(pd.unique(pd.Series(np.asarray(values))))
        try:
            uniq = np.sort(uniq)
        except TypeError:  # mixed types that do not compare: keep first-seen order
            pass
        return cls(uniq)

    def __len__(self) -> int:
        return len(self._ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        return len(self) == len(other) and bool(np.array_equal(self._ids, other._ids))

    def __hash__(self) -> int:  # pragma: no cover - maps are not used as dict keys
        return hash((len(self), tuple(self._ids[:10].tolist())))

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)}, dtype={self._ids.dtype})"

    @property
    def ids(self) -> NDArray[Any]:
        """External ids in index order, shape ``(n,)``."""
        return self._ids

    def to_index(self, ids: ArrayLike) -> NDArray[np.int64]:
        """Indices of ``ids``; ``-1`` for ids not in the map. Shape as the input (1-d)."""
        values = np.asarray(ids)
        if values.dtype.kind in "US":
            values = values.astype(object)
        return self._index.get_indexer(values).astype(np.int64)

    def to_ids(self, index: ArrayLike) -> NDArray[Any]:
        """External ids of indices; raises :class:`IndexError` for out-of-range indices."""
        return self._ids[np.asarray(index, dtype=np.int64)]

    def extend(self, ids: ArrayLike) -> IdMap:
        """A new map with unseen ``ids`` appended at the end (existing indices unchanged)."""
        new = np.asarray(pd.unique(pd.Series(np.asarray(ids))))
        new = new[self.to_index(new) < 0]
        return IdMap(np.concatenate([self._ids, np.asarray(new, dtype=self._ids.dtype)]))

    def save(self, path: Path) -> None:
        """Write the map as a one-column parquet file (``id``), preserving the id type."""
        pq.write_table(pa.table({"id": pd.Series(self._ids)}), path)

    @classmethod
    def load(cls, path: Path) -> IdMap:
        """Read a map written by :meth:`save`."""
        try:
            col = pq.read_table(path).column("id").to_pandas()
        except (OSError, KeyError, pa.ArrowInvalid) as exc:
            raise ArtifactError(f"cannot read id map {path}: {exc}") from exc
        return cls(np.asarray(col.to_numpy()))


@dataclass(frozen=True)
class TrainingData:
    """The training view every model fits on: interactions as index arrays plus id maps.

    Stability: stable

    Attributes
    ----------
    user_map, item_map
        Vocabularies; ``n_users``/``n_items`` are their lengths, which may exceed the
        users/items that occur in the arrays (e.g. catalogue items with no interactions).
    user_idx, item_idx
        ``(n,) int64`` interaction indices.
    rating
        ``(n,) float32`` explicit ratings, or ``None`` for implicit data.
    timestamp
        ``(n,) int64`` Unix seconds, or ``None``.
    """

    user_map: IdMap
    item_map: IdMap
    user_idx: NDArray[np.int64]
    item_idx: NDArray[np.int64]
    rating: NDArray[np.float32] | None = None
    timestamp: NDArray[np.int64] | None = None
    items: pd.DataFrame | None = field(default=None, compare=False)
    users: pd.DataFrame | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        for name in ("item_idx", "rating", "timestamp"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise DataError(f"TrainingData: {name} has {len(arr)} rows, user_idx has {n}")
        if n and (self.user_idx.min() < 0 or self.user_idx.max() >= len(self.user_map)):
            raise DataError("TrainingData: user_idx outside 0..n_users-1")
        if n and (self.item_idx.min() < 0 or self.item_idx.max() >= len(self.item_map)):
            raise DataError("TrainingData: item_idx outside 0..n_items-1")

    @classmethod
    def from_frame(
        cls,
        interactions: pd.DataFrame,
        *,
        user_map: IdMap | None = None,
        item_map: IdMap | None = None,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
    ) -> TrainingData:
        """Build from a validated interactions frame (``user_id``, ``item_id``, ...).

        Parameters
        ----------
        interactions
            Columns ``user_id``, ``item_id`` and optionally ``rating`` and ``timestamp``
            (``int64`` Unix seconds, as produced by :func:`recsys.data.read_interactions`).
        user_map, item_map
            Existing vocabularies to index into. Rows with ids outside a given map raise
            :class:`DataError` (pass maps built from the same data, or none). Without
            maps, they are built from the frame; with ``items`` given, the item map also
            covers catalogue items with no interactions.
        """
        if interactions.empty:
            raise DataError("TrainingData: the interactions frame is empty; nothing to train on")
        if user_map is None:
            user_map = IdMap.from_values(interactions["user_id"])
        if item_map is None:
            values = interactions["item_id"]
            if items is not None and "item_id" in items:
                values = pd.concat([values, items["item_id"]], ignore_index=True)
            item_map = IdMap.from_values(values)
        u = user_map.to_index(interactions["user_id"].to_numpy())
        i = item_map.to_index(interactions["item_id"].to_numpy())
        for name, idx, col in (("user_id", u, "user_id"), ("item_id", i, "item_id")):
            if (idx < 0).any():
                bad = interactions[col].to_numpy()[idx < 0][:5].tolist()
                raise DataError(
                    f"TrainingData: {int((idx < 0).sum())} rows have a {name} not in the "
                    f"vocabulary, e.g. {bad}"
                )
        rating = (
            interactions["rating"].to_numpy(np.float32)
            if "rating" in interactions and interactions["rating"].notna().all()
            else None
        )
        ts = (
            interactions["timestamp"].to_numpy(np.int64)
            if "timestamp" in interactions and interactions["timestamp"].notna().all()
            else None
        )
        return cls(user_map, item_map, u, i, rating, ts, items=items, users=users)

    @property
    def n_users(self) -> int:
        """Number of users in the vocabulary."""
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        """Number of items in the vocabulary."""
        return len(self.item_map)

    @property
    def n_interactions(self) -> int:
        """Number of interaction rows."""
        return len(self.user_idx)

    @cached_property
    def user_items(self) -> sp.csr_matrix:
        """Binary ``(n_users, n_items) float32`` CSR matrix of interactions, built once.

        Repeated (user, item) pairs count once; indices are sorted within each row.
        """
        m = sp.csr_matrix(
            (np.ones(len(self.user_idx), np.float32), (self.user_idx, self.item_idx)),
            shape=(self.n_users, self.n_items),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        m.sort_indices()
        return m

    def select(self, mask: NDArray[np.bool_]) -> TrainingData:
        """Rows where ``mask`` is true, with the same vocabularies."""
        return TrainingData(
            self.user_map,
            self.item_map,
            self.user_idx[mask],
            self.item_idx[mask],
            None if self.rating is None else self.rating[mask],
            None if self.timestamp is None else self.timestamp[mask],
            items=self.items,
            users=self.users,
        )


def as_index_array(values: Sequence[int] | NDArray[np.integer[Any]] | int) -> NDArray[np.int64]:
    """Coerce a scalar or sequence of indices to a 1-d ``int64`` array."""
    return np.atleast_1d(np.asarray(values, dtype=np.int64))
