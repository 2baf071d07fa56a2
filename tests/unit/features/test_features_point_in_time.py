"""Offline point-in-time features and behaviour sequences on logs with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import ConfigError, DataError
from recsys.features import INTERACTION_VIEW, FeatureStore
from recsys.features import _kernels as K

NAN = np.nan


def tiny_log() -> pd.DataFrame:
    """Users A, B, C; items x, y, z; rows 2 and 3 tie for user A at t=200, rows 0 and 1
    tie for item x at t=100."""
    return pd.DataFrame(
        {
            "user_id": ["A", "B", "A", "A", "B", "A", "C"],
            "item_id": ["x", "x", "y", "z", "y", "x", "x"],
            "rating": np.array([4, 2, 2, 5, 3, 1, 3], np.float32),
            "timestamp": np.array([100, 100, 200, 200, 150, 300, 50], np.int64),
        }
    )


def test_hand_computed_features_with_ties() -> None:
    store = FeatureStore.build(tiny_log(), sequence_length=3, show_progress=False)
    f = store.offline_features()
    INTERACTION_VIEW.schema.check(f)
    assert f["user_count"].tolist() == [0, 0, 1, 1, 1, 3, 0]
    np.testing.assert_allclose(f["user_mean_rating"], [NAN, NAN, 4, 4, 2, 11 / 3, NAN], rtol=1e-6)
    np.testing.assert_array_equal(f["user_seconds_since_last"], [NAN, NAN, 100, 100, 50, 100, NAN])
    assert f["item_count"].tolist() == [1, 1, 1, 0, 0, 3, 0]
    np.testing.assert_allclose(f["item_mean_rating"], [3, 3, 3, NAN, NAN, 3, NAN], rtol=1e-6)
    np.testing.assert_array_equal(f["item_seconds_since_last"], [50, 50, 50, NAN, NAN, 200, NAN])
    # indices follow the sorted vocabularies, in input row order
    assert f["user_idx"].tolist() == [0, 1, 0, 0, 1, 0, 2]
    assert f["item_idx"].tolist() == [0, 0, 1, 2, 1, 0, 0]


def test_sequences_strictly_before_left_aligned_and_padded() -> None:
    store = FeatureStore.build(tiny_log(), sequence_length=3, show_progress=False)
    seqs = store.sequences(np.arange(7))
    assert seqs.dtype == np.int64 and seqs.shape == (7, 3)
    expected = [
        [-1, -1, -1],
        [-1, -1, -1],
        [0, -1, -1],  # the tied row 3 (item z) is not visible to row 2
        [0, -1, -1],
        [0, -1, -1],
        [0, 1, 2],  # oldest first; the tie at t=200 in row order (y before z)
        [-1, -1, -1],
    ]
    assert seqs.tolist() == expected
    assert store.sequences([5], length=2).tolist() == [[1, 2]]
    assert store.sequences(5, length=1).tolist() == [[2]]


def test_sequence_arguments_are_validated() -> None:
    store = FeatureStore.build(tiny_log(), sequence_length=3, show_progress=False)
    with pytest.raises(ConfigError, match=r"1\.\.3"):
        store.sequences([0], length=4)
    with pytest.raises(DataError, match=r"0\.\.6"):
        store.sequences([7, -1])


def test_without_timestamps_row_order_is_time() -> None:
    log = tiny_log().drop(columns="timestamp")
    f = FeatureStore.build(log, show_progress=False).offline_features()
    assert f["user_count"].tolist() == [0, 0, 1, 2, 1, 3, 0]
    assert f["item_count"].tolist() == [0, 1, 0, 0, 1, 2, 3]
    assert f["user_seconds_since_last"].isna().all()
    assert f["item_seconds_since_last"].isna().all()


def test_without_ratings_means_are_nan_and_unrated_rows_are_skipped() -> None:
    no_rating = FeatureStore.build(
        tiny_log().drop(columns="rating"), show_progress=False
    ).offline_features()
    assert no_rating["user_mean_rating"].isna().all()
    log = tiny_log()
    log.loc[0, "rating"] = np.nan  # A's first event is unrated
    f = FeatureStore.build(log, show_progress=False).offline_features()
    assert f["user_count"][5] == 3
    assert f["user_mean_rating"][5] == pytest.approx(3.5)  # (2 + 5) / 2
    assert np.isnan(f["user_mean_rating"][2])  # one earlier event, unrated


def test_datetime_timestamps_equal_unix_seconds() -> None:
    log = tiny_log()
    as_dt = log.assign(timestamp=pd.to_datetime(log["timestamp"], unit="s"))
    a = FeatureStore.build(log, show_progress=False)
    b = FeatureStore.build(as_dt, show_progress=False)
    pd.testing.assert_frame_equal(a.offline_features(), b.offline_features())
    assert a.fingerprint == b.fingerprint


def test_attributes_joined_by_index() -> None:
    users = pd.DataFrame({"user_id": ["A", "B"], "age": [30, 40], "gender": ["F", "M"]})
    store = FeatureStore.build(tiny_log(), users=users, show_progress=False)
    f = store.offline_features(attributes=True)
    assert f["user_age"].tolist()[:2] == [30.0, 40.0]
    assert np.isnan(f["user_age"][6])  # C has no attribute row
    assert f["user_gender"].tolist() == [1, 2, 1, 1, 2, 1, 0]


@pytest.mark.parametrize("bad", ["missing_column", "missing_id", "missing_time", "text_time"])
def test_bad_input_raises_data_error(bad: str) -> None:
    log = tiny_log()
    if bad == "missing_column":
        log = log.drop(columns="item_id")
    elif bad == "missing_id":
        log["user_id"] = log["user_id"].astype(object)
        log.loc[3, "user_id"] = None
    elif bad == "missing_time":
        log["timestamp"] = log["timestamp"].astype("float64")
        log.loc[2, "timestamp"] = np.nan
    else:
        log["timestamp"] = log["timestamp"].astype(str)
    with pytest.raises(DataError, match=r"item_id|user_id|timestamp"):
        FeatureStore.build(log, show_progress=False)


def test_chunking_does_not_change_results(rng: np.random.Generator) -> None:
    n, n_keys = 500, 13
    keys = rng.integers(0, n_keys, n).astype(np.int32)
    times = rng.integers(0, 20, n).astype(np.int64)
    ratings = rng.integers(1, 6, n).astype(np.float32)
    ratings[rng.random(n) < 0.1] = np.nan
    order = K.sort_by_key_time(keys, n_keys, times)
    assert np.array_equal(order, np.lexsort((times, keys)))
    offsets = K.segment_offsets(keys, n_keys)
    a, sa = K.point_in_time(order, offsets, times, ratings, has_time=True)
    b, sb = K.point_in_time(order, offsets, times, ratings, has_time=True, chunk_rows=7)
    for name in ("count", "mean_rating", "seconds_since_last"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("count", "rated", "last_time"):
        np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))
    np.testing.assert_allclose(sa.rating_sum, sb.rating_sum)


def test_sort_falls_back_when_time_range_is_huge() -> None:
    keys = np.array([1, 0, 1, 0], np.int32)
    times = np.array([2**62, -(2**62), 0, 5], np.int64)
    order = K.sort_by_key_time(keys, 2, times)
    assert order.tolist() == [1, 3, 2, 0]


# ----------------------------------------------------------------------------- property
@st.composite
def logs(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 40))
    users = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    items = draw(st.lists(st.sampled_from(["p", "q", "r", "s"]), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    ratings = draw(
        st.lists(st.sampled_from([1.0, 2.5, 3.0, 4.5, 5.0, np.nan]), min_size=n, max_size=n)
    )
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, np.int64),
            "item_id": pd.Series(items, dtype=object),
            "rating": np.asarray(ratings, np.float32),
            "timestamp": np.asarray(times, np.int64),
        }
    )


def _same(got: float, want: float) -> bool:
    if np.isnan(want):
        return bool(np.isnan(got))
    return abs(float(got) - want) <= 1e-6 * max(1.0, abs(want))


def _brute_force(
    keys: np.ndarray, t: np.ndarray, ratings: np.ndarray, row: int
) -> tuple[int, float, float]:
    before = (keys == keys[row]) & (t < t[row])  # strictly earlier: not the same instant
    r = ratings[before]
    r = r[~np.isnan(r)]
    mean = float(np.mean(r.astype(np.float64))) if len(r) else np.nan
    since = float(t[row] - t[before].max()) if before.any() else np.nan
    return int(before.sum()), mean, since


def _check_no_leak(log: pd.DataFrame) -> None:
    length = 3
    store = FeatureStore.build(log, sequence_length=length, show_progress=False)
    f = {c: v.to_numpy() for c, v in store.offline_features().items()}
    seqs = store.sequences(np.arange(len(log)))
    t = log["timestamp"].to_numpy()
    ratings = log["rating"].to_numpy()
    users = log["user_id"].to_numpy()
    items = log["item_id"].to_numpy()
    item_idx = store.item_map.to_index(items)
    for row in range(len(log)):
        for keys, prefix in ((users, "user"), (items, "item")):
            count, mean, since = _brute_force(keys, t, ratings, row)
            assert f[f"{prefix}_count"][row] == count, (prefix, row)
            assert _same(f[f"{prefix}_mean_rating"][row], mean), (prefix, row)
            assert _same(f[f"{prefix}_seconds_since_last"][row], since), (prefix, row)
        mine = np.flatnonzero((users == users[row]) & (t < t[row]))
        mine = mine[np.lexsort((mine, t[mine]))][-length:]  # by time, ties by row
        expected = item_idx[mine].tolist()
        assert seqs[row].tolist() == expected + [-1] * (length - len(expected))


@settings(max_examples=15, deadline=None)
@given(logs())
def test_no_feature_sees_the_future(log: pd.DataFrame) -> None:
    _check_no_leak(log)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(logs())
def test_no_feature_sees_the_future_many_logs(log: pd.DataFrame) -> None:
    _check_no_leak(log)


def test_offline_frame_is_a_copy() -> None:
    store = FeatureStore.build(tiny_log(), show_progress=False)
    frame = store.offline_features()
    frame.loc[0, "user_count"] = 99
    frame.loc[0, "item_mean_rating"] = -1.0
    again = store.offline_features()
    assert again["user_count"][0] == 0 and again["item_mean_rating"][0] == 3.0
