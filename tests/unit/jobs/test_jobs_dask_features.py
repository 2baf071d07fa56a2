"""Out-of-core activity views with dask.dataframe equal the pandas feature store's online views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from recsys.errors import ConfigError, DataError  # noqa: E402
from recsys.features import FeatureStore  # noqa: E402
from recsys.jobs.dask_features import build_activity_views  # noqa: E402


def _log(rng: np.random.Generator, n: int = 3000, *, string_ids: bool = True) -> pd.DataFrame:
    """A log with rating gaps, many equal timestamps per user and skewed popularity."""
    users = rng.integers(0, 120, n)
    items = np.minimum(rng.zipf(1.5, n), 200) - 1
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u:03d}" for u in users] if string_ids else users * 7 + 3,
            "item_id": [f"i{i:03d}" for i in items] if string_ids else items + 1000,
            "rating": rng.integers(1, 6, n).astype(np.float32),
            # coarse times: lots of ties inside a user, broken by row order
            "timestamp": 1_600_000_000 + rng.integers(0, 40, n).astype(np.int64) * 3600,
        }
    )
    frame.loc[rng.random(n) < 0.2, "rating"] = np.nan
    return frame


def _write_parts(frame: pd.DataFrame, root: Path, n_files: int) -> Path:
    """The log as ``n_files`` parquet files (several row groups each) in row order."""
    root.mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(frame)), n_files)):
        frame.iloc[part].to_parquet(root / f"part-{k:03d}.parquet", row_group_size=250)
    return root


def _expected(store: FeatureStore, now: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    users = store.online_user_features(store.user_map.ids, now=now)
    items = store.online_item_features(store.item_map.ids, now=now)
    return users, items


def _assert_views_equal(views: object, store: FeatureStore, now: float | None = None) -> None:
    users, items = _expected(store, now)
    got_users = views.user_activity  # type: ignore[attr-defined]
    got_items = views.item_activity  # type: ignore[attr-defined]
    assert list(got_users.columns) == list(users.columns)
    assert list(got_items.columns) == list(items.columns)
    recent_got = got_users.pop("user_recent_items")
    recent_exp = users.pop("user_recent_items")
    for a, b in zip(recent_got, recent_exp, strict=True):
        np.testing.assert_array_equal(a, b)
    # rating means: float64 sums in another order, then float32
    for got, exp in ((got_users, users), (got_items, items)):
        mean = next(c for c in got.columns if c.endswith("_mean_rating"))
        np.testing.assert_allclose(got.pop(mean), exp.pop(mean), rtol=1e-6, equal_nan=True)
        pd.testing.assert_frame_equal(got, exp)


def test_views_match_the_pandas_store(rng: np.random.Generator, tmp_path: Path) -> None:
    log = _log(rng)
    catalogue = pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(0, 260, 2)]})
    root = _write_parts(log, tmp_path / "log", n_files=4)
    views = build_activity_views(root, items=catalogue, sequence_length=5, split_every=2)
    assert dd.read_parquet(root).npartitions > 1
    store = FeatureStore.build(log, items=catalogue, sequence_length=5, show_progress=False)
    assert views.user_map == store.user_map and views.item_map == store.item_map
    assert views.n_interactions == len(log)
    assert views.latest_timestamp == store.latest_timestamp
    _assert_views_equal(views, store)
    counts = views.item_activity.set_index("item_id")["item_count"]
    assert (counts.loc[["i250", "i258"]] == 0).all()  # catalogue items nobody touched
    assert int(counts.sum()) == len(log)


def test_views_without_time_or_rating_and_with_integer_ids(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    log = _log(rng, 1500, string_ids=False).drop(columns=["timestamp", "rating"])
    files = [
        _write_parts(log.iloc[:700], tmp_path / "a", 2),
        _write_parts(log.iloc[700:], tmp_path / "b", 3),
    ]
    # a list of sources is read in order: that order is the arrival order
    paths = sorted(files[0].glob("*.parquet")) + sorted(files[1].glob("*.parquet"))
    views = build_activity_views(paths, sequence_length=3)
    store = FeatureStore.build(log, sequence_length=3, show_progress=False)
    assert views.latest_timestamp is None
    assert views.user_activity["user_id"].dtype == np.int64
    assert views.user_activity["user_mean_rating"].isna().all()
    assert views.user_activity["user_last_timestamp"].isna().all()
    _assert_views_equal(views, store)


def test_views_on_a_distributed_cluster_with_a_reference_time(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    log = _log(rng, 2000)
    root = _write_parts(log, tmp_path / "log", n_files=3)
    now = 1_600_500_000.0
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        views = build_activity_views(root, sequence_length=4, now=now)
    store = FeatureStore.build(log, sequence_length=4, show_progress=False)
    _assert_views_equal(views, store, now=now)


def test_save_writes_the_views(rng: np.random.Generator, tmp_path: Path) -> None:
    log = _log(rng, 400)
    views = build_activity_views(dd.from_pandas(log, npartitions=3), sequence_length=2)
    views.save(tmp_path / "views")
    back = pd.read_parquet(tmp_path / "views" / "item_activity.parquet")
    pd.testing.assert_frame_equal(back, views.item_activity, check_dtype=False)
    assert (tmp_path / "views" / "views.json").exists()


@pytest.mark.parametrize(
    ("frame", "error", "match"),
    [
        (pd.DataFrame({"user_id": ["a"], "rating": [1.0]}), DataError, "lacks columns 'item_id'"),
        (
            pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "y"]}),
            DataError,
            "1 rows have a missing user_id",
        ),
        (
            pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "timestamp": ["2020-01-01"]}),
            DataError,
            "column 'timestamp'",
        ),
        (
            pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "rating": ["good"]}),
            DataError,
            "column 'rating'",
        ),
    ],
)
def test_bad_logs_are_refused(tmp_path: Path, frame: pd.DataFrame, error: type, match: str) -> None:
    path = tmp_path / "log.parquet"
    frame.to_parquet(path)
    with pytest.raises(error, match=match):
        build_activity_views(path)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sequence_length"):
        build_activity_views(tmp_path, sequence_length=0)
    with pytest.raises(DataError, match="cannot read the parquet log"):
        build_activity_views(tmp_path / "nothing-here")
