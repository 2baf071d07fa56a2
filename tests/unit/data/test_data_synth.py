"""Synthetic generator: sizes, uniqueness, determinism, popularity shape, file round trip."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data import (
    generate_synthetic,
    random_split,
    read_interactions,
    read_items,
    read_users,
    temporal_user_split,
    write_dataset,
)
from recsys.data.synth import NEW_ITEM_START, SPAN, T0
from recsys.errors import ConfigError


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return generate_synthetic(2000, 1000, 50_000, seed=0).interactions


def test_sizes_types_and_uniqueness(small: pd.DataFrame) -> None:
    df = small
    assert len(df) == 50_000
    assert list(df.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert df.dtypes.to_dict() == {
        "user_id": np.int64,
        "item_id": np.int64,
        "rating": np.float32,
        "timestamp": np.int64,
    }
    assert df["user_id"].nunique() == 2000  # every user has interactions
    assert df["user_id"].between(1, 2000).all() and df["item_id"].between(1, 1000).all()
    assert not df.duplicated(["user_id", "item_id"]).any()
    assert set(df["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert df["timestamp"].between(T0, T0 + SPAN).all()


def test_rows_sorted_by_user_then_time(small: pd.DataFrame) -> None:
    df = small
    assert df["user_id"].is_monotonic_increasing
    assert (df.groupby("user_id")["timestamp"].diff().dropna() >= 0).all()


def test_popularity_and_activity_shape(small: pd.DataFrame) -> None:
    pop = small["item_id"].value_counts().to_numpy()
    top1pct = pop[:10].sum() / len(small)
    assert top1pct > 0.08  # 10 of 1000 items hold > 8x their uniform share
    act = small.groupby("user_id").size()
    assert act.max() > 8 * act.median()  # lognormal activity: a long tail of heavy users


def test_ratings_are_learnable(small: pd.DataFrame) -> None:
    s = random_split(small, seed=1)
    gm = float(s.train["rating"].mean())
    item_mean = s.train.groupby("item_id")["rating"].mean()
    pred = s.test["item_id"].map(item_mean).fillna(gm).to_numpy()
    truth = s.test["rating"].to_numpy(np.float64)
    rmse_item = np.sqrt(np.mean((truth - pred) ** 2))
    rmse_global = np.sqrt(np.mean((truth - gm) ** 2))
    assert rmse_item < rmse_global - 0.05
    assert 3.0 < gm < 4.0


def test_deterministic_by_seed() -> None:
    a = generate_synthetic(300, 200, 4000, seed=5)
    b = generate_synthetic(300, 200, 4000, seed=5)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert a.items is not None and b.items is not None
    pd.testing.assert_frame_equal(a.items, b.items)
    c = generate_synthetic(300, 200, 4000, seed=6)
    assert not a.interactions.equals(c.interactions)


def test_items_and_users_frames() -> None:
    ds = generate_synthetic(200, 150, 3000, seed=2)
    items, users = ds.items, ds.users
    assert items is not None and users is not None
    assert len(items) == 150 and items["item_id"].is_unique
    assert {"title", "genres", "text"} <= set(items.columns)
    assert items["genres"].str.contains("|", regex=False).any()
    assert items["text"].str.split().str.len().min() >= 5
    assert len(users) == 200 and users["user_id"].is_unique
    # the first genre is the item's topic: items of one genre share vocabulary
    first = items["genres"].str.split("|").str[0]
    words = items.groupby(first)["text"].apply(lambda t: set(" ".join(t).split()))
    a, b = words.iloc[0], words.iloc[1]
    assert len(a & b) < len(a)
    assert generate_synthetic(50, 40, 300, with_items=False, with_users=False).items is None


def test_string_ids_and_iso_timestamps_round_trip(tmp_path: Path) -> None:
    ds = generate_synthetic(120, 80, 1500, seed=3, string_ids=True, iso_timestamps=True)
    inter = ds.interactions
    assert inter["user_id"].str.fullmatch(r"u\d{3}").all()
    assert inter["item_id"].str.fullmatch(r"i\d{3}").all()
    assert inter["timestamp"].str.endswith("Z").all()
    expected = generate_synthetic(120, 80, 1500, seed=3).interactions["timestamp"]
    for fmt in ("parquet", "csv"):
        paths = write_dataset(ds, tmp_path / fmt, fmt=fmt)  # type: ignore[arg-type]
        assert set(paths) == {"interactions", "items", "users"}
        back = read_interactions(paths["interactions"])
        assert back["user_id"].tolist() == inter["user_id"].tolist()
        assert back["item_id"].tolist() == inter["item_id"].tolist()
        assert back["timestamp"].dtype == np.int64
        assert back["timestamp"].tolist() == expected.tolist()
        items = read_items(paths["items"])
        assert items["item_id"].tolist() == ds.items["item_id"].tolist()  # type: ignore[index]
        assert read_users(paths["users"])["user_id"].iloc[0] == "u001"
        assert (tmp_path / fmt / "LICENSE.txt").is_file()


def test_new_items_appear_only_late() -> None:
    n_items = 400
    ds = generate_synthetic(500, n_items, 20_000, seed=4, new_item_frac=0.1)
    df = ds.interactions
    cut = T0 + NEW_ITEM_START * SPAN
    first_seen = df.groupby("item_id")["timestamp"].min()
    late_items = first_seen[first_seen >= cut].index
    assert 0.05 * n_items <= len(late_items) <= 0.2 * n_items
    # a temporal split leaves most of them cold (test only)
    s = temporal_user_split(df)
    assert s.report["test_items_not_in_train"] > 0
    base = generate_synthetic(500, n_items, 20_000, seed=4).interactions
    base_first = base.groupby("item_id")["timestamp"].min()
    assert (base_first >= cut).sum() < len(late_items)


def test_impossible_sizes_raise() -> None:
    with pytest.raises(ConfigError, match="do not fit"):
        generate_synthetic(3, 3, 10)
    with pytest.raises(ConfigError, match=">= 1"):
        generate_synthetic(0, 3, 1)
    with pytest.raises(ConfigError, match="new_item_frac"):
        generate_synthetic(10, 10, 20, new_item_frac=1.5)


def test_dense_corner_fills_exactly() -> None:
    # users that need the whole catalogue under a very skewed popularity never finish by
    # sampling with replacement; the exact fill path completes them
    df = generate_synthetic(
        5, 200, 1000, seed=1, min_per_user=200, max_per_user=200, zipf_exponent=4.0
    ).interactions
    assert len(df) == 1000 and not df.duplicated(["user_id", "item_id"]).any()
    assert (df.groupby("user_id").size() == 200).all()


def test_medium_scale_is_fast() -> None:
    t0 = time.perf_counter()
    df = generate_synthetic(20_000, 5_000, 1_000_000, seed=0).interactions
    assert len(df) == 1_000_000
    assert time.perf_counter() - t0 < 30


@pytest.mark.slow
def test_movielens_20m_scale() -> None:
    t0 = time.perf_counter()
    ds = generate_synthetic(138_000, 27_000, 20_000_000, seed=0, with_items=True)
    elapsed = time.perf_counter() - t0
    df = ds.interactions
    assert len(df) == 20_000_000 and df["user_id"].nunique() == 138_000
    assert elapsed < 120, f"took {elapsed:.0f}s"
