"""User and item attribute features: one encoded row per user or item index.

Numeric and boolean columns become ``float32`` (missing -> NaN); datetimes become Unix
seconds as ``float32``; every other column is categorical and becomes ``int32`` codes
``1..K`` in sorted order of the values' string form, with **0 reserved for unknown or
missing**. An item ``genres`` column (``|``-separated) becomes ``item_genres``, a list of
genre codes (``list<int32>``, codes ``1..G``). ``title`` and ``text`` are not attributes:
they go to the item documents.

Encoded columns are named ``<entity>_<column>`` (``age`` -> ``user_age``), unless the
column already starts with that prefix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import DataError, FeatureSchemaError, format_examples
from recsys.features.schema import FeatureSchema, dtype_name
from recsys.types import IdMap

__all__ = ["EncodedAttributes", "encode_attributes", "object_column"]

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("title", "text")
GENRES_COLUMN = "genres"
RESERVED = frozenset(
    {
        "user_id",
        "item_id",
        "user_idx",
        "item_idx",
        "user_count",
        "user_mean_rating",
        "user_seconds_since_last",
        "user_last_timestamp",
        "user_recent_items",
        "item_count",
        "item_mean_rating",
        "item_seconds_since_last",
        "item_last_timestamp",
    }
)


@dataclass
class EncodedAttributes:
    """Encoded attributes of one entity, row ``k`` = entity index ``k``.

    Stability: provisional

    Attributes
    ----------
    entity
        ``"user"`` or ``"item"``.
    frame
        One row per index (length = vocabulary size at build time), encoded columns only.
    vocabularies
        Categorical column -> its values; code ``k`` stands for ``vocabularies[col][k-1]``.
    """

    entity: str
    frame: pd.DataFrame
    vocabularies: dict[str, list[str]] = field(default_factory=dict)

    @property
    def schema(self) -> FeatureSchema:
        """The attribute view's schema (key ``<entity>_id``)."""
        return FeatureSchema(
            keys=(f"{self.entity}_id",),
            columns=tuple((str(c), dtype_name(self.frame[c])) for c in self.frame.columns),
        )

    def rows(self, idx: NDArray[np.int64]) -> pd.DataFrame:
        """Attribute rows of indices ``idx``; unknown (``-1`` or new) indices get defaults.

        Defaults are code 0 for categoricals, NaN for numeric columns and an empty list for
        list columns.
        """
        n = len(self.frame)
        ok = (idx >= 0) & (idx < n)
        safe = np.where(ok, idx, 0)
        out: dict[str, object] = {}
        for col in self.frame.columns:
            values = self.frame[col].to_numpy()
            if len(values) == 0:
                values = _default_column(self.frame[col].dtype, 1)
            taken = values[safe]
            if not ok.all():
                taken = taken.copy()
                if taken.dtype == object:
                    for j in np.flatnonzero(~ok).tolist():
                        taken[j] = np.empty(0, np.int32)
                elif taken.dtype.kind == "f":
                    taken[~ok] = np.nan
                else:
                    taken[~ok] = 0
            out[col] = taken
        return pd.DataFrame(out, index=pd.RangeIndex(len(idx)))

    def genre_matrix(self) -> sp.csr_matrix:
        """``(n_items, n_genres) float32`` multi-hot genres; column ``g - 1`` is code ``g``.

        Raises
        ------
        FeatureSchemaError
            If the items had no ``genres`` column.
        """
        col = f"{self.entity}_genres"
        if col not in self.frame:
            raise FeatureSchemaError(
                f"{self.entity} attributes have no {col!r} column; build the store with an "
                "items frame that has a '|'-separated 'genres' column"
            )
        lists = self.frame[col].to_numpy()
        lengths = np.fromiter((len(v) for v in lists), np.int64, count=len(lists))
        indptr = np.zeros(len(lists) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = (
            np.concatenate([np.asarray(v, np.int64) for v in lists]) - 1
            if indptr[-1]
            else np.empty(0, np.int64)
        )
        n_genres = len(self.vocabularies.get(col, []))
        return sp.csr_matrix(
            (np.ones(len(indices), np.float32), indices, indptr), shape=(len(lists), n_genres)
        )


def object_column(values: list[Any]) -> NDArray[np.object_]:
    """A 1-d object array holding ``values`` as they are (lists or arrays stay elements,
    even when they all have the same length)."""
    out = np.empty(len(values), dtype=object)
    for k, value in enumerate(values):
        out[k] = value
    return out


def _default_column(dtype: object, n: int) -> NDArray[np.generic]:
    if dtype is object or dtype == np.dtype(object):
        return object_column([np.empty(0, np.int32) for _ in range(n)])
    if np.dtype(str(dtype)).kind == "f":
        return np.full(n, np.nan, np.float32)
    return np.zeros(n, np.int32)


def _name(entity: str, column: str) -> str:
    return column if column.startswith(f"{entity}_") else f"{entity}_{column}"


def _categorical(values: pd.Series) -> tuple[NDArray[np.int32], list[str]]:
    missing = values.isna().to_numpy()
    text = values.astype(object).astype(str).to_numpy(dtype=object)
    vocab = sorted(set(text[~missing].tolist()))
    codes = pd.Index(vocab, dtype=object).get_indexer(text) + 1
    codes[missing] = 0
    return codes.astype(np.int32), vocab


def _genres(values: pd.Series) -> tuple[list[NDArray[np.int32]], list[str]]:
    split = [
        [] if not isinstance(v, str) else [g.strip() for g in v.split("|") if g.strip()]
        for v in values
    ]
    vocab = sorted({g for gs in split for g in gs})
    code = {g: k + 1 for k, g in enumerate(vocab)}
    return [np.asarray([code[g] for g in gs], np.int32) for gs in split], vocab


def encode_attributes(
    frame: pd.DataFrame | None, id_map: IdMap, *, entity: str
) -> EncodedAttributes:
    """Encode a users or items frame into one row per index of ``id_map``.

    Parameters
    ----------
    frame
        ``<entity>_id`` plus attribute columns, or ``None`` (no attributes).
    id_map
        The entity vocabulary; rows with ids outside it are ignored (logged at DEBUG),
        indices without a row get the defaults (code 0, NaN, empty list).
    entity
        ``"user"`` or ``"item"``.

    Returns
    -------
    EncodedAttributes

    Raises
    ------
    DataError
        If the id column is missing or an id appears twice.
    FeatureSchemaError
        If an encoded column name collides with an activity feature name.
    """
    n = len(id_map)
    id_col = f"{entity}_id"
    if frame is None:
        return EncodedAttributes(entity, pd.DataFrame(index=pd.RangeIndex(n)))
    if id_col not in frame:
        raise DataError(
            f"{entity}s frame has no {id_col!r} column (columns: "
            f"{format_examples(list(frame.columns))}); add it to join attributes by id"
        )
    ids = frame[id_col]
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(
            f"{entity}s frame: {len(dup)} duplicated {id_col} values, e.g. "
            f"{format_examples(dup.unique().tolist())}; keep one row per {entity}"
        )
    idx = id_map.to_index(ids.to_numpy())
    known = idx >= 0
    if not known.all():
        logger.debug("ignored %d %s attribute rows with unknown ids", int((~known).sum()), entity)
    idx = idx[known]
    columns: dict[str, object] = {}
    vocabularies: dict[str, list[str]] = {}
    for col in frame.columns:
        if col == id_col or (entity == "item" and col in TEXT_COLUMNS):
            continue
        name = _name(entity, str(col))
        if name in RESERVED:
            raise FeatureSchemaError(
                f"{entity}s frame column {col!r} would become {name!r}, which is a reserved "
                "feature name; rename the column"
            )
        values = frame[col][known]
        if entity == "item" and col == GENRES_COLUMN:
            lists, vocab = _genres(values)
            out = _default_column(object, n)
            for k, v in zip(idx.tolist(), lists, strict=True):
                out[k] = v
            columns[name], vocabularies[name] = out, vocab
        elif pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            num = np.full(n, np.nan, np.float32)
            num[idx] = values.to_numpy(dtype=np.float32, na_value=np.nan)
            columns[name] = num
        elif pd.api.types.is_datetime64_any_dtype(values):
            secs = np.full(n, np.nan, np.float32)
            stamp = pd.to_datetime(values, utc=True)
            epoch = (stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
            secs[idx] = epoch.to_numpy(dtype=np.float32, na_value=np.nan)
            columns[name] = secs
        else:
            codes, vocab = _categorical(values)
            cat = np.zeros(n, np.int32)
            cat[idx] = codes
            columns[name], vocabularies[name] = cat, vocab
    encoded = pd.DataFrame(columns, index=pd.RangeIndex(n))
    return EncodedAttributes(entity, encoded, vocabularies)
