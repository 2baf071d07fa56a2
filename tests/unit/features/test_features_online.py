"""Online read: latest state, unknown users, and append == rebuild on old + new data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import ConfigError, DataError
from recsys.features import ITEM_ACTIVITY_VIEW, USER_ACTIVITY_VIEW, FeatureStore


def log_frame(rows: list[tuple[object, object, float, int]]) -> pd.DataFrame:
    users, items, ratings, times = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype=object),
            "item_id": np.asarray(items, np.int64),
            "rating": np.asarray(ratings, np.float32),
            "timestamp": np.asarray(times, np.int64),
        }
    )


OLD = log_frame(
    [("u1", 10, 4.0, 100), ("u1", 11, 2.0, 200), ("u2", 10, 5.0, 150), ("u1", 12, 3.0, 200)]
)
NEW = log_frame(
    [
        ("u1", 13, 1.0, 250),
        ("u3", 14, 5.0, 260),  # new user and new item
        ("u2", 11, np.nan, 120),  # late event (older than u2's latest), unrated
        ("u1", 10, 5.0, 200),  # ties with two old events of u1 at t=200
    ]
)


def test_online_user_state_by_hand() -> None:
    store = FeatureStore.build(OLD, sequence_length=2, show_progress=False)
    f = store.online_user_features(["u1", "u2"], now=260)
    USER_ACTIVITY_VIEW.schema.check(f)
    assert f["user_count"].tolist() == [3, 1]
    np.testing.assert_allclose(f["user_mean_rating"], [3.0, 5.0])
    assert f["user_last_timestamp"].tolist() == [200, 150]
    np.testing.assert_array_equal(f["user_seconds_since_last"], [60.0, 110.0])
    # last 2 items of u1 oldest first: 11 then 12 (tie at t=200 in row order)
    assert store.item_map.to_ids(f["user_recent_items"][0]).tolist() == [11, 12]
    assert store.user_sequence("u1").tolist() == store.item_map.to_index([11, 12]).tolist()
    # default "now" is the latest timestamp the store has seen
    default = store.online_user_features(["u1"])
    assert default["user_seconds_since_last"][0] == 0.0


def test_online_item_state_by_hand() -> None:
    store = FeatureStore.build(OLD, show_progress=False)
    f = store.online_item_features([10, 12], now=300)
    ITEM_ACTIVITY_VIEW.schema.check(f)
    assert f["item_count"].tolist() == [2, 1]
    np.testing.assert_allclose(f["item_mean_rating"], [4.5, 3.0])
    np.testing.assert_array_equal(f["item_seconds_since_last"], [150.0, 100.0])


def test_activity_arrays_are_the_online_frames_by_index() -> None:
    # the rankers' index-based read: the numbers of the online frames, after an append
    store = FeatureStore.build(OLD, show_progress=False)
    store.append(NEW)
    for entity, frame, ids in (
        ("user", store.online_user_features, ["u1", "u2", "u3", "nobody"]),
        ("item", store.online_item_features, [10, 11, 14, 999]),
    ):
        f = frame(ids)
        idx = f[f"{entity}_idx"].to_numpy()
        assert idx[-1] == -1  # an unknown key
        a = store.activity_arrays(entity, idx)  # type: ignore[arg-type]
        assert a["count"].tolist() == f[f"{entity}_count"].tolist()
        np.testing.assert_array_equal(a["mean_rating"], f[f"{entity}_mean_rating"])
        last = f[f"{entity}_last_timestamp"].to_numpy(dtype=np.float64, na_value=np.nan)
        np.testing.assert_array_equal(a["last_timestamp"], last)
        assert np.isnan(a["last_timestamp"][-1]) and a["count"][-1] == 0


def test_unknown_users_and_items_get_the_default_state() -> None:
    store = FeatureStore.build(OLD, sequence_length=3, show_progress=False)
    f = store.online_user_features(["nobody", "u1"])
    assert f["user_idx"][0] == -1
    assert f["user_count"][0] == 0
    assert np.isnan(f["user_mean_rating"][0]) and np.isnan(f["user_seconds_since_last"][0])
    assert f["user_last_timestamp"].isna().tolist() == [True, False]
    assert len(f["user_recent_items"][0]) == 0
    assert store.user_sequence("nobody").tolist() == [-1, -1, -1]
    assert store.user_sequences(["nobody", "u2"], length=2).tolist() == [[-1, -1], [0, -1]]
    g = store.online_item_features([999])
    assert g["item_idx"][0] == -1 and g["item_count"][0] == 0
    USER_ACTIVITY_VIEW.schema.check(f)
    USER_ACTIVITY_VIEW.schema.check(store.online_user_features(["nobody"]))


def _online(
    store: FeatureStore, users: list[object], items: list[object]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Online frames with indices replaced by ids (append and rebuild index new ids apart)."""
    u = store.online_user_features(users, now=1000).drop(columns="user_idx")
    u["user_recent_items"] = [store.item_map.to_ids(s).tolist() for s in u["user_recent_items"]]
    i = store.online_item_features(items, now=1000).drop(columns="item_idx")
    return u, i


def assert_append_equals_rebuild(old: pd.DataFrame, new: pd.DataFrame, length: int) -> None:
    appended = FeatureStore.build(old, sequence_length=length, show_progress=False)
    appended.append(new)
    rebuilt = FeatureStore.build(
        pd.concat([old, new], ignore_index=True), sequence_length=length, show_progress=False
    )
    users = [*sorted(set(old["user_id"]) | set(new["user_id"])), "ghost"]
    items = [*sorted(set(old["item_id"]) | set(new["item_id"])), -5]
    ua, ia = _online(appended, users, items)
    ur, ir = _online(rebuilt, users, items)
    pd.testing.assert_frame_equal(ua, ur, rtol=1e-6)
    pd.testing.assert_frame_equal(ia, ir, rtol=1e-6)
    assert appended.latest_timestamp == rebuilt.latest_timestamp


def test_append_equals_rebuild_by_hand() -> None:
    assert_append_equals_rebuild(OLD, NEW, length=2)
    store = FeatureStore.build(OLD, sequence_length=2, show_progress=False)
    store.append(NEW)
    assert store.n_appended == 4 and store.n_interactions == 4
    # u1: ..., 11@200, 12@200, 10@200 (appended ties come after), 13@250
    recent = store.online_user_features(["u1"])["user_recent_items"][0]
    assert store.item_map.to_ids(recent).tolist() == [10, 13]
    # the new user and item are appended at the end of the vocabularies
    assert store.user_map.to_index(["u3"]).tolist() == [2]
    assert store.item_map.to_index([14]).tolist() == [4]


def test_append_in_several_batches_and_without_timestamps() -> None:
    both = pd.concat([OLD, NEW], ignore_index=True)
    store = FeatureStore.build(both.iloc[:3], sequence_length=3, show_progress=False)
    for start in (3, 5, 7):
        store.append(both.iloc[start : start + 2])
    rebuilt = FeatureStore.build(both, sequence_length=3, show_progress=False)
    a, b = _online(store, ["u1", "u2", "u3"], [10, 11])
    c, d = _online(rebuilt, ["u1", "u2", "u3"], [10, 11])
    pd.testing.assert_frame_equal(a, c, rtol=1e-6)
    pd.testing.assert_frame_equal(b, d, rtol=1e-6)
    no_time = both.drop(columns="timestamp")
    assert_append_equals_rebuild(no_time.iloc[:5], no_time.iloc[5:], length=3)


def test_append_validates_events() -> None:
    store = FeatureStore.build(OLD, show_progress=False)
    with pytest.raises(DataError, match="timestamp"):
        store.append(NEW.drop(columns="timestamp"))
    with pytest.raises(DataError, match="item_id"):
        store.append(NEW.drop(columns="item_id"))
    bad = NEW.copy()
    bad.loc[1, "user_id"] = None
    with pytest.raises(DataError, match="missing user_id"):
        store.append(bad)
    with pytest.raises(ConfigError, match="sequence length"):
        store.user_sequences(["u1"], length=99)
    store.append(NEW.iloc[:0])
    assert store.n_appended == 0


@st.composite
def split_logs(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = draw(st.integers(1, 30))
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "c", "d"]),
                st.integers(0, 5),
                st.sampled_from([1.0, 2.0, 3.5, 5.0, np.nan]),
                st.integers(0, 6),
            ),
            min_size=n,
            max_size=n,
        )
    )
    cut = draw(st.integers(1, n))
    frame = log_frame(rows)
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


@settings(max_examples=10, deadline=None)
@given(split_logs(), st.integers(1, 4))
def test_append_equals_rebuild_property(parts: tuple[pd.DataFrame, pd.DataFrame], n: int) -> None:
    old, new = parts
    assert_append_equals_rebuild(old, new, length=n)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(split_logs(), st.integers(1, 4))
def test_append_equals_rebuild_many_logs(parts: tuple[pd.DataFrame, pd.DataFrame], n: int) -> None:
    old, new = parts
    assert_append_equals_rebuild(old, new, length=n)


def test_empty_store_serves_defaults_and_takes_events() -> None:
    store = FeatureStore.build(OLD.iloc[:0], sequence_length=2, show_progress=False)
    assert store.n_interactions == 0 and store.offline_features().shape == (0, 8)
    assert store.online_user_features(["u1"])["user_count"].tolist() == [0]
    assert store.user_sequence("u1").tolist() == [-1, -1]
    store.append(OLD)
    assert_frames = _online(store, ["u1", "u2"], [10, 11, 12])
    rebuilt = _online(
        FeatureStore.build(OLD, sequence_length=2, show_progress=False),
        ["u1", "u2"],
        [10, 11, 12],
    )
    for got, want in zip(assert_frames, rebuilt, strict=True):
        pd.testing.assert_frame_equal(got, want)


def test_failed_append_leaves_the_store_unchanged() -> None:
    store = FeatureStore.build(OLD, show_progress=False)
    before = _online(store, ["u1", "zz"], [10])
    bad = pd.DataFrame(
        {"user_id": ["zz"], "item_id": ["not-an-int"], "rating": [1.0], "timestamp": [5]}
    )
    with pytest.raises(DataError, match="id types"):
        store.append(bad)
    assert len(store.user_map) == 2 and len(store.item_map) == 3
    after = _online(store, ["u1", "zz"], [10])
    for got, want in zip(after, before, strict=True):
        pd.testing.assert_frame_equal(got, want)
