"""Core value types: id vocabularies and the training view every model fits on.

External ids (``user_id``, ``item_id``) are opaque and kept verbatim; internal indices
(``user_idx``, ``item_idx``) are contiguous ``int64`` positions. Convert only through
:class:`IdMap`.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from recsys.errors import ArtifactError, DataError, DataWarning, format_examples

__all__ = ["IdKind", "IdMap", "TrainingData", "coerce_id", "id_kind", "warn_if_all_unknown"]

logger = logging.getLogger(__name__)


#: What a vocabulary holds: ``"int"`` (integer ids), ``"str"`` (string ids) or ``"mixed"``.
IdKind = Literal["int", "str", "mixed"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A canonical decimal integer: no sign on zero, no leading zeros, no spaces, no "+".
# "196" is canonical, "007", "-0", "+5", " 5", "1e3" and "196.0" are not.
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]{0,18}")
_CANONICAL_INT_ANCHORED = r"^(0|-?[1-9][0-9]{0,18})$"


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _canonical_int(text: str) -> int | None:
    """``int(text)`` when ``text`` is a canonical decimal integer within int64, else None."""
    if not _CANONICAL_INT.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def id_kind(ids: NDArray[Any]) -> IdKind:
    """The kind of a vocabulary's ids (see :meth:`IdMap.to_index` for what it changes).

    Parameters
    ----------
    ids
        A vocabulary's ids, shape ``(n,)``.

    Returns
    -------
    str
        ``"int"`` for an integer array (or an object array of Python ints), ``"str"`` for
        strings (and for an empty object array), ``"mixed"`` for anything else.
    """
    if ids.dtype.kind in "iu":
        return "int"
    if ids.dtype.kind in "US":
        return "str"
    if ids.dtype == object:
        inferred = pd.api.types.infer_dtype(ids, skipna=False)
        if inferred in ("string", "empty"):
            return "str"
        if inferred == "integer":
            return "int"
    return "mixed"


def coerce_id(raw: Any, kind: IdKind, contains: Callable[[Any], bool] | None = None) -> Any:
    """The id rule for one incoming id: its form in a vocabulary of ``kind``.

    This is the scalar form of :meth:`IdMap.coerce`, for callers that look ids up one at a
    time in their own table (the HTTP layer); both follow the same rule.

    Parameters
    ----------
    raw
        An id as it arrived: a string (HTTP path, CSV cell, JSON string) or an integer.
    kind
        The vocabulary's :func:`id_kind`.
    contains
        Membership test of the vocabulary; needed only for ``"mixed"`` vocabularies.

    Returns
    -------
    object
        * ``"int"``: integers as Python ``int``; a canonical decimal string (``"196"``)
          as the integer; every other string (``"007"``, ``"1e3"``, ``"abc"``) unchanged,
          so it is simply unknown.
        * ``"str"``: strings verbatim (``"007"`` stays ``"007"``); an integer as its
          decimal string (``7`` -> ``"7"``, never ``"007"``).
        * ``"mixed"``: the id itself when the vocabulary holds it, else its other form
          (canonical string <-> integer) when the vocabulary holds that, else unchanged.

    Examples
    --------
    >>> coerce_id("196", "int"), coerce_id("007", "int"), coerce_id(7, "str")
    (196, '007', '7')
    """
    if kind == "str":
        return str(int(raw)) if _is_int(raw) else raw
    if kind == "int":
        if _is_int(raw):
            return int(raw)
        if isinstance(raw, str):
            value = _canonical_int(raw)
            return raw if value is None else value
        return raw
    if contains is None:
        raise ValueError("coerce_id: a mixed vocabulary needs its membership test")
    if contains(raw):
        return raw
    other: Any = None
    if isinstance(raw, str):
        other = _canonical_int(raw)
    elif _is_int(raw):
        other = str(int(raw))
    return other if other is not None and contains(other) else raw


def _fits(value: Any, kind: IdKind) -> bool:
    if kind == "int":
        return _is_int(value)
    if kind == "str":
        return isinstance(value, str)
    return True


def _as_id_array(ids: ArrayLike) -> NDArray[Any]:
    values = np.atleast_1d(np.asarray(ids))
    if values.ndim != 1:
        values = values.reshape(-1)
    if values.dtype.kind in "US":
        values = values.astype(object)
    return values


def _object_array(values: Sequence[Any]) -> NDArray[Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


class IdMap:
    """Bidirectional map between external ids and contiguous indices ``0..n-1``.

    Ids are kept exactly as given: strings stay strings (``"007"`` stays ``"007"``),
    integers stay integers. Incoming ids are matched by one rule on every path (HTTP,
    batch, ``score``, ``evaluate``, ``finetune``; see :meth:`to_index`): string ids match
    verbatim and a canonical decimal string such as ``"196"`` finds the integer ``196`` of
    an integer vocabulary, while ``"007"`` never becomes ``7``. Lookups of unknown ids
    return ``-1`` rather than raising, so callers can route them to a cold-start path.

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
    >>> IdMap([7, 196]).to_index(["196", 7, "007"]).tolist()
    [1, 0, -1]
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

    @cached_property
    def kind(self) -> IdKind:
        """``"int"``, ``"str"`` or ``"mixed"``: which form incoming ids take (:func:`id_kind`)."""
        return id_kind(self._ids)

    def _contains(self, value: Any) -> bool:
        try:
            return value in self._index
        except TypeError:  # unhashable
            return False

    def coerce(self, ids: ArrayLike) -> NDArray[Any]:
        """Incoming ids in the vocabulary's form, by the rule of :func:`coerce_id`.

        Parameters
        ----------
        ids
            Raw ids, shape ``(n,)``: strings (from HTTP or CSV), integers, or a mix.

        Returns
        -------
        numpy.ndarray
            Shape ``(n,)``: ``int64`` when the vocabulary holds integers and every id
            converts; otherwise an ``object`` array in which ids that do not convert
            (``"007"``, ``"newcomer"`` for an integer vocabulary) are kept as they came.
        """
        values = _as_id_array(ids)
        kind = self.kind
        if kind == "int":
            if values.dtype != object:
                return values  # integers (or floats, compared by value)
            return self._ints_from_objects(values)
        if kind == "str":
            if values.dtype.kind in "iu":
                return values.astype(str).astype(object)
            if values.dtype != object:
                return values
            if pd.api.types.infer_dtype(values, skipna=False) in ("string", "empty"):
                return values
            return _object_array([coerce_id(v, "str") for v in values.tolist()])
        contains = self._contains
        return _object_array([coerce_id(v, "mixed", contains) for v in values.tolist()])

    @staticmethod
    def _ints_from_objects(values: NDArray[Any]) -> NDArray[Any]:
        """:meth:`coerce` for an integer vocabulary and an object array (fast paths first)."""
        inferred = pd.api.types.infer_dtype(values, skipna=False)
        if inferred == "integer":
            try:
                return values.astype(np.int64)
            except OverflowError:
                pass
        elif inferred == "string":
            text = pa.array(values, type=pa.string())
            ok = np.asarray(
                pc.match_substring_regex(text, _CANONICAL_INT_ANCHORED).to_numpy(
                    zero_copy_only=False
                ),
                dtype=bool,
            )
            if not ok.any():
                return values
            try:
                ints = pc.cast(pc.filter(text, pa.array(ok)), pa.int64())
            except (pa.ArrowInvalid, OverflowError):  # beyond int64: the slow path decides
                pass
            else:
                if ok.all():
                    return np.asarray(ints.to_numpy(zero_copy_only=False), dtype=np.int64)
                out = values.copy()
                out[ok] = ints.to_pylist()
                return out
        coerced = [coerce_id(v, "int") for v in values.tolist()]
        if all(_is_int(v) for v in coerced):
            return np.asarray(coerced, dtype=np.int64)
        return _object_array(coerced)

    def to_index(self, ids: ArrayLike) -> NDArray[np.int64]:
        """Indices of incoming ids; ``-1`` for ids not in the map.

        The one function that maps ids from outside (HTTP, users and pairs files, test
        and recommendation files, new interactions) to the vocabulary, by the rule of
        :func:`coerce_id`: string ids match verbatim; in an integer vocabulary a
        canonical decimal string (``"196"``) finds the integer (``196``) and any other
        string (``"007"``) is unknown; in a string vocabulary an integer ``7`` finds
        ``"7"`` (never ``"007"``).

        Parameters
        ----------
        ids
            Raw ids, shape ``(n,)`` (a scalar is taken as one id).

        Returns
        -------
        numpy.ndarray
            ``(n,) int64`` indices, ``-1`` where unknown.
        """
        values = _as_id_array(ids)
        if len(values) == 0:
            return np.empty(0, np.int64)
        return np.asarray(self._index.get_indexer(self.coerce(values)), dtype=np.int64)

    def to_ids(self, index: ArrayLike) -> NDArray[Any]:
        """External ids of indices; raises :class:`IndexError` for out-of-range indices."""
        return self._ids[np.asarray(index, dtype=np.int64)]

    def extend(self, ids: ArrayLike, *, strict: bool = True) -> IdMap:
        """A map with the unseen ``ids`` appended at the end (existing indices unchanged).

        Ids are matched and appended in the vocabulary's form (:meth:`coerce`), so the
        string ``"500"`` joins an integer vocabulary as ``500``.

        Parameters
        ----------
        ids
            Raw ids, shape ``(n,)``.
        strict
            Refuse ids that cannot take the vocabulary's type (``"newcomer"`` for an
            integer vocabulary), which could not be saved. ``False`` lets the map become
            a ``mixed`` one (for in-memory uses such as evaluation).

        Returns
        -------
        IdMap
            The extended map (``self`` when nothing is new). An empty map takes the ids
            as they are.

        Raises
        ------
        DataError
            With ``strict``, ids that cannot join the vocabulary (at most 5 named).
        """
        raw = np.asarray(pd.unique(pd.Series(_as_id_array(ids))))
        if len(self) == 0:
            return IdMap(raw) if len(raw) else self
        new = self.coerce(raw)
        new = np.asarray(pd.unique(pd.Series(new, dtype=new.dtype)))
        new = new[self.to_index(new) < 0]
        if len(new) == 0:
            return self
        kind = self.kind
        if kind == "int" and new.dtype.kind in "iu":
            return IdMap(np.concatenate([self._ids, new.astype(self._ids.dtype)]))
        misfits = [v for v in new.tolist() if not _fits(v, kind)]
        if misfits and strict:
            raise DataError(
                f"{len(misfits)} ids cannot join a vocabulary of {kind} ids "
                f"({self._ids.dtype}), e.g. {format_examples(misfits)}; ids of one "
                "vocabulary must all be integers or all be strings"
            )
        return IdMap(_object_array([*self._ids.tolist(), *new.tolist()]))

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


def warn_if_all_unknown(
    idx: NDArray[np.int64],
    ids: ArrayLike,
    id_map: IdMap,
    *,
    source: str,
    column: str,
    vocabulary: str = "the artifact's vocabulary",
    consequence: str = "",
) -> bool:
    """Warn when not one of a non-empty input's ids is in the vocabulary.

    Such input is almost always a mismatch (the wrong file, another artifact, ids
    reformatted by a spreadsheet) rather than a batch of new users, so it is said loudly:
    a ``logging`` warning and a :class:`~recsys.errors.DataWarning`, both naming the
    source and a few ids.

    Parameters
    ----------
    idx
        ``(n,) int64`` indices of ``ids`` from :meth:`IdMap.to_index`.
    ids
        The ids as they came, shape ``(n,)``.
    id_map
        The vocabulary they were looked up in.
    source
        The file (or other input) they came from.
    column
        ``"user_id"`` or ``"item_id"``.
    vocabulary
        What ``id_map`` is, for the message.
    consequence
        What happens to them, e.g. ``"they get popularity lists"``.

    Returns
    -------
    bool
        Whether it warned.
    """
    if len(idx) == 0 or bool((np.asarray(idx) >= 0).any()):
        return False
    values = pd.unique(pd.Series(_as_id_array(ids)))
    message = (
        f"{source}: none of the {len(values)} {column} values is in {vocabulary} "
        f"({len(id_map)} {id_map.kind} ids, e.g. "
        f"{format_examples(id_map.ids[:3].tolist(), 3)}); unknown: "
        f"{format_examples(values.tolist())}" + (f"; {consequence}" if consequence else "")
    )
    logger.warning(message)
    warnings.warn(message, DataWarning, stacklevel=2)
    return True


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
