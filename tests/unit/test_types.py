"""IdMap (verbatim ids, unknown -> -1, persistence) and TrainingData (the training view)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.typing import ArrayLike

from recsys.errors import ArtifactError, ConfigError, DataError, DataWarning
from recsys.serving.ids import IdCodec
from recsys.testing import block_dataset, block_frame, block_labels
from recsys.types import IdMap, TrainingData, as_index_array, coerce_id, warn_if_all_unknown


# ---------------------------------------------------------------------------- IdMap
def test_string_ids_are_kept_verbatim() -> None:
    m = IdMap(["007", "7", "a"])
    np.testing.assert_array_equal(m.to_index(["7", "007", "a"]), [1, 0, 2])
    assert m.to_ids([0]).tolist() == ["007"]
    assert m.ids.dtype == object and isinstance(m.ids[0], str)


def test_int_ids_stay_ints_and_canonical_strings_find_them() -> None:
    # issue 14: one id rule on every path; "10" finds 10, "010" never becomes 10
    m = IdMap([10, 20, 30])
    assert m.ids.dtype == np.int64
    np.testing.assert_array_equal(m.to_index([30, 10]), [2, 0])
    np.testing.assert_array_equal(
        m.to_index(["10", "010", "+10", " 10", "10.0"]), [0, -1, -1, -1, -1]
    )


# ------------------------------------------------------------ the one id rule (issue 14)
def _object(values: list[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


RAW_IDS = ["196", 196, "007", "7", 7, "newcomer", "-5", "-0", "0", 0, "9" * 19, "9" * 30, "a/b"]


@pytest.mark.parametrize(
    ("vocab", "expected"),
    [
        # integer vocabulary: canonical decimal strings find the integer, nothing else does
        (np.array([7, 196, 0, -5], np.int64), [1, 1, -1, 0, 0, -1, 3, -1, 2, 2, -1, -1, -1]),
        # string vocabulary: strings verbatim, an integer finds its decimal string
        (_object(["196", "007", "7", "0", "a/b"]), [0, 0, 1, 2, 2, -1, -1, -1, 3, 3, -1, -1, 4]),
    ],
)
def test_to_index_follows_the_id_rule_for_any_input_form(
    vocab: np.ndarray, expected: list[int]
) -> None:
    m = IdMap(vocab)
    # the same answer whether ids come as one object array, one by one, as all-string
    # arrays (CSV text) or as the scalar rule the HTTP layer uses
    np.testing.assert_array_equal(m.to_index(_object(RAW_IDS)), expected)
    assert [int(m.to_index([raw])[0]) for raw in RAW_IDS] == expected
    strings = [i for i, raw in enumerate(RAW_IDS) if isinstance(raw, str)]
    np.testing.assert_array_equal(
        m.to_index(np.array([RAW_IDS[i] for i in strings])), [expected[i] for i in strings]
    )
    codec = IdCodec(m.ids)
    assert codec.indices(RAW_IDS).tolist() == expected


def test_integer_arrays_against_a_string_vocabulary() -> None:
    m = IdMap(["1", "2", "010"])
    np.testing.assert_array_equal(m.to_index(np.array([2, 10, 1], np.int64)), [1, -1, 0])


def test_coerce_gives_the_vocabulary_form() -> None:
    m = IdMap([7, 196])
    coerced = m.coerce(["196", "500"])
    assert coerced.dtype == np.int64 and coerced.tolist() == [196, 500]
    mixed = m.coerce(["196", "newcomer", "007"])
    assert mixed.dtype == object and mixed.tolist() == [196, "newcomer", "007"]
    assert coerce_id("196", "int") == 196 and coerce_id("007", "int") == "007"
    assert coerce_id(7, "str") == "7" and coerce_id(np.int64(7), "str") == "7"
    assert IdMap(["a"]).coerce(np.array([7, 8])).tolist() == ["7", "8"]


def test_extend_appends_in_the_vocabulary_form_and_refuses_misfits() -> None:
    m = IdMap([7, 196])
    ext = m.extend(["500", "196", 7, "500"])
    assert ext.ids.dtype == np.int64 and ext.ids.tolist() == [7, 196, 500]
    assert m.extend(["7"]) is m
    with pytest.raises(DataError, match="'newcomer'"):
        m.extend(["newcomer", "196"])
    loose = m.extend(["newcomer"], strict=False)
    assert loose.kind == "mixed"
    np.testing.assert_array_equal(loose.to_index(["196", "newcomer", 7]), [1, 2, 0])
    assert IdMap(["a"]).extend([5]).ids.tolist() == ["a", "5"]


def test_kind() -> None:
    assert IdMap([1, 2]).kind == "int"
    assert IdMap(["1", "2"]).kind == "str"
    assert IdMap(_object([1, "x"])).kind == "mixed"
    assert IdMap(_object([1, 2])).kind == "int"


def test_warn_if_all_unknown_names_source_and_ids(caplog: pytest.LogCaptureFixture) -> None:
    m = IdMap([7, 196])
    ids = np.array(["007", "newcomer"], dtype=object)
    with pytest.warns(DataWarning, match=r"users\.csv: none of the 2 user_id.*'007'"):
        assert warn_if_all_unknown(m.to_index(ids), ids, m, source="users.csv", column="user_id")
    assert "users.csv" in caplog.text
    one_known = np.array(["196", "newcomer"], dtype=object)
    assert not warn_if_all_unknown(
        m.to_index(one_known), one_known, m, source="users.csv", column="user_id"
    )


def test_unknown_ids_map_to_minus_one() -> None:
    m = IdMap(["a", "b"])
    idx = m.to_index(["b", "zzz", "a", ""])
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, [1, -1, 0, -1])


def test_to_ids_out_of_range_raises_index_error() -> None:
    with pytest.raises(IndexError):
        IdMap(["a"]).to_ids([1])


def test_duplicate_ids_raise_data_error_naming_them() -> None:
    with pytest.raises(DataError, match="'x'"):
        IdMap(["x", "y", "x"])


def test_from_values_sorts_distinct_values() -> None:
    m = IdMap.from_values(["b", "a", "b", "c"])
    assert m.ids.tolist() == ["a", "b", "c"]
    assert IdMap.from_values([3, 1, 3]).ids.tolist() == [1, 3]


def test_extend_keeps_existing_indices() -> None:
    m = IdMap(["b", "a"])
    ext = m.extend(["c", "a", "d", "c"])
    assert ext.ids.tolist() == ["b", "a", "c", "d"]
    np.testing.assert_array_equal(ext.to_index(["b", "a"]), m.to_index(["b", "a"]))
    assert len(m) == 2, "extend must return a new map"


def test_equality() -> None:
    assert IdMap(["a", "b"]) == IdMap(["a", "b"])
    assert IdMap(["a", "b"]) != IdMap(["b", "a"])
    assert IdMap([1, 2]) != IdMap(["1", "2"])


@pytest.mark.parametrize(
    "ids", [["007", "a", "10"], [3, 1, 2], np.array([5, 900_000_000_000], np.int64)]
)
def test_save_load_preserves_ids_and_type(ids: ArrayLike, tmp_path: Path) -> None:
    m = IdMap(ids)
    m.save(tmp_path / "ids.parquet")
    loaded = IdMap.load(tmp_path / "ids.parquet")
    assert loaded == m
    assert type(loaded.ids[0]) is type(m.ids[0])
    assert loaded.ids.tolist() == m.ids.tolist()


def test_load_of_a_damaged_file_raises_artifact_error(tmp_path: Path) -> None:
    bad = tmp_path / "ids.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ArtifactError, match="cannot read id map"):
        IdMap.load(bad)
    with pytest.raises(ArtifactError):
        IdMap.load(tmp_path / "missing.parquet")


# ---------------------------------------------------------------------------- TrainingData
@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u2", "u2"],
            "item_id": ["007", "7", "007", "x"],
            "rating": [5.0, 3.0, 4.0, 1.0],
            "timestamp": np.array([30, 10, 20, 40], np.int64),
        }
    )


def test_from_frame_indexes_through_sorted_maps(frame: pd.DataFrame) -> None:
    data = TrainingData.from_frame(frame)
    assert data.user_map.ids.tolist() == ["u1", "u2"]
    assert data.item_map.ids.tolist() == ["007", "7", "x"]
    np.testing.assert_array_equal(data.user_idx, [1, 0, 1, 1])
    np.testing.assert_array_equal(data.item_idx, [0, 1, 0, 2])
    assert data.user_idx.dtype == np.int64 and data.item_idx.dtype == np.int64
    assert data.rating is not None and data.rating.dtype == np.float32
    np.testing.assert_array_equal(data.rating, [5, 3, 4, 1])
    assert data.timestamp is not None and data.timestamp.dtype == np.int64
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 3, 4)


def test_user_items_is_binary_csr_with_duplicates_once(frame: pd.DataFrame) -> None:
    m = TrainingData.from_frame(frame).user_items
    assert m.format == "csr" and m.dtype == np.float32 and m.shape == (2, 3)
    np.testing.assert_array_equal(m.toarray(), [[0, 1, 0], [1, 0, 1]])
    assert m.nnz == 3 and m.has_sorted_indices


def test_missing_ratings_or_timestamps_give_none(frame: pd.DataFrame) -> None:
    frame.loc[1, "rating"] = np.nan
    data = TrainingData.from_frame(frame.drop(columns="timestamp"))
    assert data.rating is None and data.timestamp is None


def test_catalogue_items_join_the_item_map(frame: pd.DataFrame) -> None:
    items = pd.DataFrame({"item_id": ["zz", "007"], "title": ["Z", "Bond"]})
    data = TrainingData.from_frame(frame, items=items)
    assert data.item_map.ids.tolist() == ["007", "7", "x", "zz"]
    assert data.user_items.shape == (2, 4)
    assert data.items is items


def test_given_maps_are_used_and_unknown_ids_raise(frame: pd.DataFrame) -> None:
    users = IdMap(["u2", "u1", "u9"])
    data = TrainingData.from_frame(frame, user_map=users)
    assert data.n_users == 3
    np.testing.assert_array_equal(data.user_idx, [0, 1, 0, 0])
    with pytest.raises(DataError, match="1 rows have a user_id not in the vocabulary"):
        TrainingData.from_frame(frame, user_map=IdMap(["u2"]))
    with pytest.raises(DataError, match="item_id not in the vocabulary"):
        TrainingData.from_frame(frame, item_map=IdMap(["007", "7"]))


def test_empty_frame_raises(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="empty"):
        TrainingData.from_frame(frame.iloc[:0])


def test_inconsistent_arrays_raise() -> None:
    users, items = IdMap(["a", "b"]), IdMap(["x"])
    idx = np.array([0, 1], np.int64)
    with pytest.raises(DataError, match="item_idx has 1 rows"):
        TrainingData(users, items, idx, np.array([0], np.int64))
    with pytest.raises(DataError, match="user_idx outside"):
        TrainingData(users, items, np.array([0, 2], np.int64), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="item_idx outside"):
        TrainingData(users, items, idx, np.array([0, -1], np.int64))
    with pytest.raises(DataError, match="rating has 3 rows"):
        TrainingData(users, items, idx, np.zeros(2, np.int64), rating=np.ones(3, np.float32))


def test_select_keeps_vocabularies_and_slices_columns(frame: pd.DataFrame) -> None:
    data = TrainingData.from_frame(frame)
    assert data.timestamp is not None
    part = data.select(data.timestamp >= 30)
    assert part.user_map == data.user_map and part.item_map == data.item_map
    np.testing.assert_array_equal(part.item_idx, [0, 2])
    assert part.rating is not None and part.timestamp is not None
    np.testing.assert_array_equal(part.rating, [5, 1])
    np.testing.assert_array_equal(part.timestamp, [30, 40])
    assert part.user_items.shape == data.user_items.shape


def test_as_index_array() -> None:
    out = as_index_array(3)
    assert out.dtype == np.int64 and out.tolist() == [3]
    assert as_index_array([1, 2]).tolist() == [1, 2]


# ---------------------------------------------------------------------------- block dataset
def test_block_frame_is_deterministic_and_in_the_file_contract() -> None:
    a, b = block_frame(seed=4), block_frame(seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(block_frame(seed=5))
    assert list(a.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert a["rating"].between(1, 5).all()
    assert a["timestamp"].is_monotonic_increasing and a["timestamp"].is_unique
    assert not a.duplicated(["user_id", "item_id"]).any()
    assert a["user_id"].iloc[0].startswith("u") and len(a["item_id"].iloc[0]) == 4
    plain = block_frame(with_ratings=False, with_timestamps=False)
    assert list(plain.columns) == ["user_id", "item_id"]


def test_block_dataset_users_stay_in_their_block() -> None:
    data = block_dataset(n_blocks=3, users_per_block=5, items_per_block=6, density=0.5)
    user_block, item_block = block_labels(data)
    np.testing.assert_array_equal(user_block, np.arange(15) // 5)
    np.testing.assert_array_equal(item_block, np.arange(18) // 6)
    rows, cols = data.user_items.nonzero()
    assert (user_block[rows] == item_block[cols]).all()
    assert (data.user_items.sum(axis=1) >= 3).all(), "each user sees density * items_per_block"
    assert (data.user_items.sum(axis=0) >= 1).all(), "every item has an interaction"
    assert data.user_map.ids[7] == "u07" and data.item_map.ids[13] == "i013"
    assert data.rating is not None and set(np.unique(data.rating)) <= {4.0, 5.0}


def test_block_dataset_noise_crosses_blocks_with_low_ratings() -> None:
    data = block_dataset(noise=0.5, seed=1)
    user_block, item_block = block_labels(data)
    outside = user_block[data.user_idx] != item_block[data.item_idx]
    assert outside.sum() == data.n_users * 2
    assert data.rating is not None
    assert (data.rating[outside] <= 2).all() and (data.rating[~outside] >= 4).all()


@pytest.mark.parametrize(
    "params",
    [{"items_per_block": 1}, {"density": 0.0}, {"noise": 1.0}, {"n_blocks": 1, "noise": 0.2}],
)
def test_block_dataset_rejects_bad_parameters(params: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        block_dataset(**params)  # type: ignore[arg-type]


def test_block_labels_needs_side_frames(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="block_dataset"):
        block_labels(TrainingData.from_frame(frame))
