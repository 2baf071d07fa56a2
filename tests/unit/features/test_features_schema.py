"""Feature views and the schema check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.errors import FeatureSchemaError
from recsys.features import (
    INTERACTION_VIEW,
    USER_ACTIVITY_VIEW,
    FeatureSchema,
    FeatureView,
    dtype_name,
)

SCHEMA = FeatureSchema(
    keys=("user_id",), columns=(("count", "int32"), ("mean", "float32"), ("seq", "list<int64>"))
)


def good_frame() -> pd.DataFrame:
    seq = np.empty(2, dtype=object)
    seq[0], seq[1] = np.array([1, 2]), np.array([], np.int64)
    return pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "count": np.array([1, 2], np.int32),
            "mean": np.array([1.0, np.nan], np.float32),
            "seq": seq,
        }
    )


def test_matching_frame_passes_in_any_column_order() -> None:
    frame = good_frame()
    SCHEMA.check(frame)
    SCHEMA.check(frame[["seq", "mean", "user_id", "count"]])
    assert FeatureSchema.from_frame(frame, keys=("user_id",)) == SCHEMA


def test_mismatch_lists_missing_unexpected_and_dtypes() -> None:
    frame = good_frame().drop(columns="mean").assign(extra=1, count=np.array([1, 2], np.int64))
    with pytest.raises(FeatureSchemaError) as err:
        SCHEMA.check(frame, what="user view")
    msg = str(err.value)
    assert msg.startswith("user view does not match")
    assert "missing columns: 'mean'" in msg
    assert "unexpected columns: 'extra'" in msg
    assert "count (int64, expected int32)" in msg


def test_at_most_five_columns_are_named() -> None:
    wide = FeatureSchema(keys=(), columns=tuple((f"c{k}", "float32") for k in range(8)))
    with pytest.raises(FeatureSchemaError, match=r"'c0', 'c1', 'c2', 'c3', 'c4' \(and 3 more\)"):
        wide.check(pd.DataFrame({"other": [1.0]}))


def test_dtype_names() -> None:
    assert dtype_name(pd.Series(["a"], dtype="str")) == "str"
    assert dtype_name(pd.Series([1], dtype="Int64")) == "Int64"
    assert dtype_name(good_frame()["seq"]) == "list<int64>"
    empty = np.empty(1, dtype=object)
    empty[0] = []
    assert dtype_name(pd.Series(empty)) == "list<empty>"
    tokens = np.empty(1, dtype=object)
    tokens[0] = ["a", "b"]
    assert dtype_name(pd.Series(tokens)) == "list<str>"


def test_views_round_trip_through_dicts_and_validate() -> None:
    for view in (INTERACTION_VIEW, USER_ACTIVITY_VIEW):
        assert FeatureView.from_dict(view.to_dict()) == view
    with pytest.raises(FeatureSchemaError, match="entity must be one of"):
        FeatureView("x", "session", 1, SCHEMA)  # type: ignore[arg-type]
    with pytest.raises(FeatureSchemaError, match="version must be >= 1"):
        FeatureView("x", "user", 0, SCHEMA)
    with pytest.raises(FeatureSchemaError, match="malformed"):
        FeatureView.from_dict({"name": "x"})
