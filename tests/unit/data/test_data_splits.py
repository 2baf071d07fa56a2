"""Splits: the public protocols reproduced exactly, determinism, no leakage, reports."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd
import pytest

from recsys.data import (
    Split,
    leave_last_k_out,
    load_dataset,
    random_split,
    split_dataset,
    temporal_user_split,
    time_cutoff_split,
)
from recsys.errors import ConfigError, DataError


def _sha(arr: np.ndarray) -> str:
    """The checksum of /work/shared/peers/classical/protocol.py (``_sha``)."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


def _toy() -> pd.DataFrame:
    """The protocol's self-test frame: user 1 with 10 events (tie at t=9 broken by item
    id), user 2 with 3 events at the same time, user 3 with a single event."""
    return pd.DataFrame(
        {
            "user_id": [1] * 10 + [2, 2, 2] + [3],
            "item_id": [10, 11, 12, 13, 14, 15, 16, 17, 19, 18, 30, 31, 29, 40],
            "rating": np.ones(14, dtype=np.float32),
            "timestamp": np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 5, 5, 5, 1], np.int64),
        }
    )


# ------------------------------------------------------------------------- protocols
def test_temporal_split_reproduces_protocol_toy() -> None:
    s = temporal_user_split(_toy(), test_frac=0.2)
    # floor(0.2*10)=2 -> user 1's last two by (timestamp, item): 18 and 19 (both t=9);
    # user 2: max(1, floor(0.6))=1 -> item 31 (largest id among equal timestamps);
    # user 3: single interaction stays in train
    assert sorted(zip(s.test["user_id"], s.test["item_id"], strict=True)) == [
        (1, 18),
        (1, 19),
        (2, 31),
    ]
    assert 40 in s.train["item_id"].tolist()
    assert len(s.train) == 11
    # rows sorted by (user, timestamp, item)
    assert s.test["item_id"].tolist() == [18, 19, 31]
    assert s.train["item_id"].tolist() == [10, 11, 12, 13, 14, 15, 16, 17, 29, 30, 40]


def test_temporal_split_floor_is_robust_to_float_error() -> None:
    # 0.2 * 15 = 2.9999999999999996 in floating point; the protocol adds 1e-9 -> 3
    df = pd.DataFrame({"user_id": [1] * 15, "item_id": range(15), "timestamp": range(15)})
    assert len(temporal_user_split(df).test) == 3


def test_random_split_reproduces_protocol_toy() -> None:
    df = _toy().assign(rating=np.arange(14.0))
    s = random_split(df, test_frac=0.2, seed=42)
    perm = np.random.default_rng(42).permutation(14)
    assert len(s.train) == 11 and len(s.test) == 3
    assert s.train["rating"].tolist() == perm[:11].astype(float).tolist()
    assert s.test["rating"].tolist() == perm[11:].astype(float).tolist()


@pytest.mark.realdata
def test_protocols_on_bundled_ml100k_match_published_checksums() -> None:
    df = load_dataset("ml-100k").interactions
    # rating protocol: published train_rows_sha 17de048316ee12f3, mean 3.5289625
    rows = df.assign(row=np.arange(len(df), dtype=np.int64))
    r = random_split(rows, test_frac=0.2, seed=42)
    assert (r.report["n_train"], r.report["n_test"]) == (80_000, 20_000)
    assert _sha(np.sort(r.train["row"].to_numpy())) == "17de048316ee12f3"
    assert r.report["test_users_not_in_train"] == 0
    assert r.report["test_items_not_in_train"] == 34
    assert abs(float(r.train["rating"].astype(np.float64).mean()) - 3.5289625) < 1e-9
    # top-N protocol: published split_sha 20b00b9169271630, 80367 / 19633
    t = temporal_user_split(df, test_frac=0.2)
    assert (len(t.train), len(t.test)) == (80_367, 19_633)
    users, items = np.sort(df["user_id"].unique()), np.sort(df["item_id"].unique())
    u = np.searchsorted(users, t.test["user_id"].to_numpy())
    i = np.searchsorted(items, t.test["item_id"].to_numpy())
    assert _sha(np.stack([u, i]).astype(np.int64)) == "20b00b9169271630"
    assert t.report["test_rows_item_not_in_train"] == 87
    assert t.report["test_items_not_in_train"] == 70


# --------------------------------------------------------------------- determinism
def _frame(rng: np.random.Generator, n: int = 2000, string_ids: bool = False) -> pd.DataFrame:
    users = rng.integers(0, 60, n)
    items = rng.integers(0, 200, n)
    df = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "rating": rng.integers(1, 6, n).astype(np.float32),
            "timestamp": rng.integers(1_000, 1_500, n).astype(np.int64),  # many ties
        }
    )
    if string_ids:
        df["user_id"] = [f"u{v:03d}" for v in users]
        df["item_id"] = [f"i{v}" for v in items]
    return df


def test_random_split_deterministic_by_seed(rng: np.random.Generator) -> None:
    df = _frame(rng)
    a, b = random_split(df, seed=7), random_split(df, seed=7)
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.test, b.test)
    c = random_split(df, seed=8)
    assert not a.test.equals(c.test)
    assert len(a.train) + len(a.test) == len(df)


@pytest.mark.parametrize("string_ids", [False, True])
def test_temporal_split_no_leakage(rng: np.random.Generator, string_ids: bool) -> None:
    key = ["user_id", "item_id", "timestamp"]
    df = _frame(rng, string_ids=string_ids).drop_duplicates(key).reset_index(drop=True)
    s = temporal_user_split(df, test_frac=0.3)
    assert len(s.train) + len(s.test) == len(df)
    # every test row of a user is not earlier than any of that user's train rows
    last_train = s.train.groupby("user_id")["timestamp"].max()
    first_test = s.test.groupby("user_id")["timestamp"].min()
    joined = pd.concat([last_train, first_test], axis=1, keys=["tr", "te"]).dropna()
    assert len(joined) > 0 and (joined["te"] >= joined["tr"]).all()
    # no (user, item, timestamp) row on both sides
    assert len(s.train.merge(s.test, on=key)) == 0
    # per user counts follow the rule
    n_u = df.groupby("user_id").size()
    n_test = s.test.groupby("user_id").size().reindex(n_u.index, fill_value=0)
    expected = np.where(n_u < 2, 0, np.maximum(1, np.floor(n_u * 0.3 + 1e-9)))
    assert (n_test.to_numpy() == expected).all()
    pd.testing.assert_frame_equal(s.test, temporal_user_split(df, test_frac=0.3).test)


def test_temporal_split_is_independent_of_row_order(rng: np.random.Generator) -> None:
    df = _frame(rng).drop_duplicates(["user_id", "item_id", "timestamp"])
    shuffled = df.sample(frac=1.0, random_state=3)
    a, b = temporal_user_split(df), temporal_user_split(shuffled)
    pd.testing.assert_frame_equal(a.test, b.test)


def test_leave_last_k_out() -> None:
    s = leave_last_k_out(_toy(), k=2)
    assert sorted(zip(s.test["user_id"], s.test["item_id"], strict=True)) == [
        (1, 18),
        (1, 19),
        (2, 30),
        (2, 31),
    ]
    assert s.train["user_id"].tolist().count(3) == 1  # too few interactions: all train
    with pytest.raises(ConfigError):
        leave_last_k_out(_toy(), k=0)


def test_time_cutoff_split() -> None:
    df = _toy()
    s = time_cutoff_split(df, 5)
    assert (s.train["timestamp"] < 5).all() and (s.test["timestamp"] >= 5).all()
    assert len(s.train) + len(s.test) == len(df)
    iso = time_cutoff_split(
        df.assign(timestamp=df["timestamp"] + 1_577_836_800), "2020-01-01T00:00:05Z"
    )
    assert iso.test["item_id"].tolist() == s.test["item_id"].tolist()
    assert iso.report["parameters"]["cutoff_seconds"] == 1_577_836_805
    with pytest.raises(ConfigError, match="cutoff"):
        time_cutoff_split(df, "not a date")


def test_report_counts_cold_users_and_items(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "c"],
            "item_id": ["x", "y", "x", "z"],
            "timestamp": [1, 2, 1, 9],
        }
    )
    with caplog.at_level(logging.WARNING):
        s = time_cutoff_split(df, 5)
    rep = s.report
    assert rep["n_train"] == 3 and rep["n_test"] == 1 and rep["n_test_users"] == 1
    assert rep["test_users_not_in_train"] == 1 and rep["examples_users_not_in_train"] == ["c"]
    assert rep["test_items_not_in_train"] == 1 and rep["examples_items_not_in_train"] == ["z"]
    assert rep["method"] == "cutoff" and rep["parameters"]["cutoff"] == 5
    assert "occur only in test" in caplog.text
    assert isinstance(s, Split) and "cutoff" in repr(s)


# ------------------------------------------------------------------------- dispatch
def test_split_dataset_dispatch_and_errors() -> None:
    df = _toy()
    assert split_dataset(df, "random", test_frac=0.2, seed=42).test.equals(
        random_split(df, 0.2, 42).test
    )
    assert split_dataset(df, "temporal").report["method"] == "temporal"
    assert split_dataset(df, "leave_last", k=1).report["parameters"] == {"k": 1}
    assert split_dataset(df, "cutoff", cutoff=5).report["n_test"] == 9
    with pytest.raises(ConfigError, match=r"unknown split method 'bogus'.*random, temporal"):
        split_dataset(df, "bogus")
    with pytest.raises(ConfigError, match="does not take 'seed'"):
        split_dataset(df, "temporal", seed=1)
    with pytest.raises(ConfigError, match="needs 'cutoff'"):
        split_dataset(df, "cutoff")
    with pytest.raises(ConfigError, match="test_frac"):
        split_dataset(df, "random", test_frac=1.5)


def test_temporal_splits_need_timestamps() -> None:
    df = _toy().drop(columns="timestamp")
    for method, params in (("temporal", {}), ("leave-last", {}), ("cutoff", {"cutoff": 1})):
        with pytest.raises(DataError, match="needs a 'timestamp' column"):
            split_dataset(df, method, **params)
    assert len(split_dataset(df, "random").train) == 11  # random needs none


def test_temporal_split_parses_iso_timestamps_and_rejects_bad_ones() -> None:
    df = _toy()
    iso = df.assign(
        timestamp=pd.to_datetime(df["timestamp"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    a, b = temporal_user_split(df), temporal_user_split(iso)
    assert a.test["item_id"].tolist() == b.test["item_id"].tolist()
    bad = iso.copy()
    bad.loc[3, "timestamp"] = "garbage"
    with pytest.raises(DataError, match="unparseable timestamps at rows 4"):
        temporal_user_split(bad)
