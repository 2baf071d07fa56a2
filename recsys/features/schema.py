"""Named, versioned feature views and the schema check that guards them.

A :class:`FeatureView` is the single definition of a group of features: which entity it
describes (``"user"``, ``"item"`` or ``"interaction"``), its key columns, its feature
columns with their dtypes, and a version that is bumped whenever the meaning of a column
changes. The offline (training) and online (serving) reads of the
:class:`~recsys.features.store.FeatureStore` both return frames of the same views, so a
model records the :class:`FeatureSchema` it was fitted on and checks it at load and at
request time.

Dtype names are strings: numpy names (``"int32"``, ``"float32"``), ``"Int64"`` for
nullable integers, ``"list<int32>"`` / ``"list<str>"`` for list columns and ``"any"`` for
columns whose dtype follows the input (external ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from recsys.errors import FeatureSchemaError, format_examples

__all__ = [
    "INTERACTION_VIEW",
    "ITEM_ACTIVITY_VIEW",
    "ITEM_DOCUMENTS_VIEW",
    "STATIC_VIEWS",
    "USER_ACTIVITY_VIEW",
    "Entity",
    "FeatureSchema",
    "FeatureView",
    "dtype_name",
]

Entity = Literal["user", "item", "interaction"]
_ENTITIES: tuple[str, ...] = ("user", "item", "interaction")


def dtype_name(column: pd.Series) -> str:
    """The schema dtype name of a frame column.

    Parameters
    ----------
    column
        A pandas column.

    Returns
    -------
    str
        ``str(dtype)`` for ordinary columns (``"int32"``, ``"float32"``, ``"Int64"``),
        ``"str"`` for string columns of any backend, and ``"list<inner>"`` for object
        columns holding lists or 1-d arrays (``inner`` from the first non-empty element;
        ``"list<empty>"`` when every element is empty).
    """
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype) or str(dtype) == "str":
        return "str"
    if dtype == np.dtype(object):
        for value in column.head(1000):
            if isinstance(value, (list, tuple, np.ndarray)):
                if len(value) == 0:
                    continue
                arr = np.asarray(value)
                inner = "str" if arr.dtype.kind in "OUS" else str(arr.dtype)
                return f"list<{inner}>"
            if value is not None:
                return "str" if isinstance(value, str) else "object"
        has_lists = any(isinstance(v, (list, tuple, np.ndarray)) for v in column.head(1000))
        return "list<empty>" if has_lists else "object"
    return str(dtype)


def _compatible(expected: str, actual: str) -> bool:
    if expected == "any" or expected == actual:
        return True
    # a list column whose sampled rows are all empty cannot show its element type
    return expected.startswith("list<") and actual == "list<empty>"


@dataclass(frozen=True)
class FeatureSchema:
    """The columns and dtypes a frame of one feature view must have.

    Stability: stable

    Parameters
    ----------
    keys
        Key columns (e.g. ``("user_id",)``); their dtype is not checked (it follows the
        input ids).
    columns
        ``(name, dtype)`` pairs of the feature columns, in order.

    Examples
    --------
    >>> s = FeatureSchema(keys=("user_id",), columns=(("user_count", "int32"),))
    >>> s.names
    ('user_id', 'user_count')
    """

    keys: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Key columns then feature columns, in order."""
        return self.keys + tuple(name for name, _ in self.columns)

    @property
    def dtypes(self) -> dict[str, str]:
        """Feature column name -> dtype name."""
        return dict(self.columns)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, keys: tuple[str, ...] = ()) -> FeatureSchema:
        """The schema of an existing frame (``keys`` are taken as key columns)."""
        cols = tuple((str(c), dtype_name(frame[c])) for c in frame.columns if c not in keys)
        return cls(keys=tuple(keys), columns=cols)

    def differences(self, columns: Mapping[str, str]) -> list[str]:
        """Human-readable differences between this schema and ``columns``.

        Parameters
        ----------
        columns
            Column name -> dtype name of the thing checked (keys included; a key's dtype
            is ignored).

        Returns
        -------
        list[str]
            Empty when they match; otherwise parts such as ``"missing columns: 'a', 'b'"``,
            each listing at most 5 names.
        """
        expected = self.names
        missing = [c for c in expected if c not in columns]
        unexpected = [c for c in columns if c not in expected]
        wrong = [
            f"{name} ({columns[name]}, expected {dtype})"
            for name, dtype in self.columns
            if name in columns and not _compatible(dtype, columns[name])
        ]
        parts = []
        if missing:
            parts.append(f"missing columns: {format_examples(missing)}")
        if unexpected:
            parts.append(f"unexpected columns: {format_examples(unexpected)}")
        if wrong:
            parts.append(f"wrong dtypes: {', '.join(wrong[:5])}")
        return parts

    def check(self, frame: pd.DataFrame, *, what: str = "frame") -> None:
        """Raise unless ``frame`` has exactly this schema's columns with these dtypes.

        Parameters
        ----------
        frame
            The frame to check. Column order does not matter.
        what
            How to name the frame in the message (e.g. ``"user_activity view"``).

        Raises
        ------
        FeatureSchemaError
            Listing at most 5 missing columns, unexpected columns and dtype mismatches,
            with the fix (rebuild the features with the same definitions).
        """
        actual = {
            str(c): ("any" if c in self.keys else dtype_name(frame[c])) for c in frame.columns
        }
        parts = self.differences(actual)
        if parts:
            raise FeatureSchemaError(
                f"{what} does not match its feature schema; {'; '.join(parts)}. Rebuild the "
                "features with the same feature definitions the model was fitted on."
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"keys": [...], "columns": [[name, dtype], ...]}`` (a list, so
        the column order survives JSON writers that sort keys)."""
        return {"keys": list(self.keys), "columns": [[n, d] for n, d in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSchema:
        """Inverse of :meth:`to_dict`; raises :class:`FeatureSchemaError` if malformed."""
        try:
            keys = tuple(str(k) for k in data["keys"])
            raw = data["columns"]
            pairs = raw.items() if isinstance(raw, Mapping) else raw
            cols = tuple((str(k), str(v)) for k, v in pairs)
        except (KeyError, TypeError, ValueError) as exc:
            raise FeatureSchemaError(
                f"malformed feature schema {data!r}: expected keys 'keys' and 'columns'"
            ) from exc
        return cls(keys=keys, columns=cols)


@dataclass(frozen=True)
class FeatureView:
    """A named, versioned group of features about one entity.

    Stability: stable

    Parameters
    ----------
    name
        Unique view name, e.g. ``"user_activity"``.
    entity
        ``"user"``, ``"item"`` or ``"interaction"``.
    version
        Bumped whenever the meaning or dtype of a column changes; a store built with
        another version of a view is refused at load.
    schema
        Key and feature columns with dtypes.
    description
        One line on what the view holds.
    """

    name: str
    entity: Entity
    version: int
    schema: FeatureSchema
    description: str = ""

    def __post_init__(self) -> None:
        if self.entity not in _ENTITIES:
            raise FeatureSchemaError(
                f"FeatureView {self.name!r}: entity must be one of {_ENTITIES}, got {self.entity!r}"
            )
        if self.version < 1:
            raise FeatureSchemaError(
                f"FeatureView {self.name!r}: version must be >= 1, got {self.version}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (name, entity, version, description, keys, columns)."""
        return {
            "name": self.name,
            "entity": self.entity,
            "version": self.version,
            "description": self.description,
            **self.schema.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureView:
        """Inverse of :meth:`to_dict`; raises :class:`FeatureSchemaError` if malformed."""
        try:
            entity = str(data["entity"])
            if entity not in _ENTITIES:
                raise ValueError(entity)
            return cls(
                name=str(data["name"]),
                entity=entity,  # type: ignore[arg-type]
                version=int(data["version"]),
                schema=FeatureSchema.from_dict(data),
                description=str(data.get("description", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FeatureSchemaError(f"malformed feature view {data!r}: {exc}") from exc


# The activity features share their names between the offline and the online read: offline
# they describe the state strictly before the row's timestamp, online the latest state.
_USER_ACTIVITY_COLUMNS = (
    ("user_count", "int32"),
    ("user_mean_rating", "float32"),
    ("user_seconds_since_last", "float32"),
)
_ITEM_ACTIVITY_COLUMNS = (
    ("item_count", "int32"),
    ("item_mean_rating", "float32"),
    ("item_seconds_since_last", "float32"),
)

INTERACTION_VIEW = FeatureView(
    name="interaction_point_in_time",
    entity="interaction",
    version=1,
    schema=FeatureSchema(
        keys=(),
        columns=(
            ("user_idx", "int32"),
            ("item_idx", "int32"),
            *_USER_ACTIVITY_COLUMNS,
            *_ITEM_ACTIVITY_COLUMNS,
        ),
    ),
    description=(
        "one row per training interaction, in input row order: user and item activity "
        "computed only from interactions strictly before the row's timestamp"
    ),
)

USER_ACTIVITY_VIEW = FeatureView(
    name="user_activity",
    entity="user",
    version=1,
    schema=FeatureSchema(
        keys=("user_id",),
        columns=(
            ("user_idx", "int64"),
            *_USER_ACTIVITY_COLUMNS,
            ("user_last_timestamp", "Int64"),
            ("user_recent_items", "list<int64>"),
        ),
    ),
    description="latest user state: count, mean rating, recency, last N items (oldest first)",
)

ITEM_ACTIVITY_VIEW = FeatureView(
    name="item_activity",
    entity="item",
    version=1,
    schema=FeatureSchema(
        keys=("item_id",),
        columns=(
            ("item_idx", "int64"),
            *_ITEM_ACTIVITY_COLUMNS,
            ("item_last_timestamp", "Int64"),
        ),
    ),
    description="latest item state: popularity (count), mean rating, recency",
)

ITEM_DOCUMENTS_VIEW = FeatureView(
    name="item_documents",
    entity="item",
    version=1,
    schema=FeatureSchema(keys=("item_id",), columns=(("tokens", "list<str>"),)),
    description="lowercase tokens of title, genres (genre:x), text and kg relations (rel:entity)",
)

STATIC_VIEWS = (INTERACTION_VIEW, USER_ACTIVITY_VIEW, ITEM_ACTIVITY_VIEW, ITEM_DOCUMENTS_VIEW)
