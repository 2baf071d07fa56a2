"""save/load round-trip, the manifest, fingerprints and refusal of damaged stores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.errors import ArtifactError, FeatureSchemaError
from recsys.features import FeatureStore


def make_inputs() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    interactions = pd.DataFrame(
        {
            "user_id": [3, 1, 3, 2, 1, 3],
            "item_id": ["m1", "m2", "m2", "m1", "m3", "m3"],
            "rating": np.array([4.0, 3.0, 5.0, 1.0, 2.0, np.nan], np.float32),
            "timestamp": np.array([10, 11, 12, 12, 13, 13], np.int64),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["m1", "m2", "m3", "m4"],
            "title": ["Heat (1995)", "Fargo", "Alien", "Brazil"],
            "genres": ["Action|Crime", "Crime|Drama", "Sci-Fi", None],
            "year": [1995, 1996, 1979, 1985],
        }
    )
    users = pd.DataFrame({"user_id": [1, 2, 3], "age": [25, 35, 45], "job": ["a", "b", "a"]})
    relations = pd.DataFrame(
        {
            "item_id": ["m1", "m1", "m2"],
            "relation": ["film.film.directed_by", "film.film.actor", "film.film.actor"],
            "entity": ["m.0bxtg", "m.02vxxgs", "m.0h5g_"],
        }
    )
    return interactions, items, users, relations


@pytest.fixture
def store() -> FeatureStore:
    interactions, items, users, relations = make_inputs()
    s = FeatureStore.build(
        interactions, items, users, relations, sequence_length=2, show_progress=False
    )
    s.append(
        pd.DataFrame(
            {
                "user_id": [9, 1],
                "item_id": ["m9", "m1"],
                "rating": [4.0, 5.0],
                "timestamp": [20, 21],
            }
        )
    )
    return s


def test_round_trip_is_equal(store: FeatureStore, tmp_path: Path) -> None:
    store.save(tmp_path)
    loaded = FeatureStore.load(tmp_path)
    assert loaded.user_map == store.user_map and loaded.item_map == store.item_map
    pd.testing.assert_frame_equal(
        loaded.offline_features(attributes=True), store.offline_features(attributes=True)
    )
    rows = np.arange(store.n_interactions)
    np.testing.assert_array_equal(loaded.sequences(rows), store.sequences(rows))
    users = [1, 2, 3, 9, 404]
    pd.testing.assert_frame_equal(
        loaded.online_user_features(users), store.online_user_features(users)
    )
    items = ["m1", "m4", "m9", "nope"]
    pd.testing.assert_frame_equal(
        loaded.online_item_features(items), store.online_item_features(items)
    )
    pd.testing.assert_frame_equal(loaded.user_attributes(), store.user_attributes())
    pd.testing.assert_frame_equal(loaded.item_attributes(), store.item_attributes())
    pd.testing.assert_frame_equal(loaded.item_documents(), store.item_documents())
    assert loaded.vocabularies == store.vocabularies
    assert loaded.fingerprint == store.fingerprint
    assert loaded.n_appended == 2 and loaded.latest_timestamp == 21
    # the loaded store keeps taking events like the original
    more = pd.DataFrame({"user_id": [2], "item_id": ["m3"], "rating": [1.0], "timestamp": [30]})
    store.append(more)
    loaded.append(more)
    pd.testing.assert_frame_equal(
        loaded.online_user_features(users), store.online_user_features(users)
    )


def test_manifest_records_schema_counts_and_fingerprint(
    store: FeatureStore, tmp_path: Path
) -> None:
    store.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["sequence_length"] == 2
    assert manifest["fingerprint"]["value"] == store.fingerprint
    assert manifest["fingerprint"]["n_rows"] == 6
    assert manifest["files"]["offline.parquet"]["rows"] == 6
    assert len(manifest["files"]["offline.parquet"]["sha256"]) == 64
    view = manifest["views"]["interaction_point_in_time"]
    assert view["version"] == 1
    assert ["user_mean_rating", "float32"] in view["columns"]
    assert manifest["views"]["item_attributes"]["columns"][0] == ["item_genres", "list<int32>"]


def test_fingerprint_changes_when_data_changes() -> None:
    interactions = make_inputs()[0]
    base = FeatureStore.fingerprint_of(interactions)
    assert base == FeatureStore.build(interactions, show_progress=False).fingerprint
    assert base == FeatureStore.fingerprint_of(interactions.copy())
    for column, row, value in (
        ("rating", 2, 4.5),
        ("timestamp", 0, 9),
        ("user_id", 5, 1),
        ("item_id", 1, "m4"),
    ):
        changed = interactions.copy()
        changed.loc[row, column] = value
        assert FeatureStore.fingerprint_of(changed) != base, column
    assert FeatureStore.fingerprint_of(interactions.iloc[:-1]) != base
    assert FeatureStore.fingerprint_of(interactions.drop(columns="rating")) != base
    # extra columns are not part of the fingerprint
    assert FeatureStore.fingerprint_of(interactions.assign(extra=1)) == base


def test_load_refuses_damaged_or_foreign_stores(store: FeatureStore, tmp_path: Path) -> None:
    store.save(tmp_path)
    with pytest.raises(ArtifactError, match="built from other interactions"):
        FeatureStore.load(tmp_path, expected_fingerprint="0" * 64)
    FeatureStore.load(tmp_path, expected_fingerprint=store.fingerprint)
    with (tmp_path / "online_users.parquet").open("ab") as fh:
        fh.write(b"junk")
    with pytest.raises(ArtifactError, match=r"checksum mismatch.*online_users"):
        FeatureStore.load(tmp_path)
    (tmp_path / "online_users.parquet").unlink()
    with pytest.raises(ArtifactError, match=r"lacks online_users\.parquet"):
        FeatureStore.load(tmp_path)
    with pytest.raises(ArtifactError, match="cannot read"):
        FeatureStore.load(tmp_path / "nowhere")


def test_load_refuses_other_view_versions(store: FeatureStore, tmp_path: Path) -> None:
    store.save(tmp_path)
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    view = manifest["views"]["user_activity"]
    view["version"] = 2
    view["columns"] = [c for c in view["columns"] if c[0] != "user_mean_rating"]
    view["columns"].append(["user_median_rating", "float32"])
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FeatureSchemaError) as err:
        FeatureStore.load(tmp_path)
    message = str(err.value)
    assert "'user_activity' version 2" in message
    assert "missing columns: 'user_mean_rating'" in message
    assert "unexpected columns: 'user_median_rating'" in message
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="version 99"):
        FeatureStore.load(tmp_path)


def test_load_refuses_a_file_that_does_not_match_its_recorded_schema(
    store: FeatureStore, tmp_path: Path
) -> None:
    store.save(tmp_path)
    # rewrite the user attributes with a renamed column and a consistent checksum/manifest
    path = tmp_path / "user_attributes.parquet"
    frame = pd.read_parquet(path).rename(columns={"user_age": "user_years"})
    frame.to_parquet(path, index=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"]["user_attributes.parquet"]["sha256"] = hashlib.sha256(
        path.read_bytes()
    ).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FeatureSchemaError, match=r"missing columns: 'user_age'.*user_years"):
        FeatureStore.load(tmp_path)


def test_round_trip_without_user_or_item_attributes(tmp_path: Path) -> None:
    """Regression: attribute views with no columns must keep their row count on load."""
    log = pd.DataFrame(
        {"user_id": ["a", "b", "b"], "item_id": [1, 2, 1], "timestamp": [10, 20, 30]}
    )
    built = FeatureStore.build(log, show_progress=False)
    built.save(tmp_path / "fs")
    loaded = FeatureStore.load(tmp_path / "fs")
    assert len(loaded.user_attributes()) == 2
    assert len(loaded.item_attributes()) == 2
    pd.testing.assert_frame_equal(
        loaded.online_user_features(["a", "b"]), built.online_user_features(["a", "b"])
    )


def test_item_titles_are_kept_and_saved(tmp_path: Path) -> None:
    log = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": [1, 2]})
    items = pd.DataFrame({"item_id": ["y", "x", "z"], "title": ["Why", "Ex", None]})
    built = FeatureStore.build(log, items=items, show_progress=False)
    expected = dict(zip(built.item_map.ids.tolist(), built.item_titles(), strict=True))
    assert expected == {"x": "Ex", "y": "Why", "z": None}
    built.save(tmp_path / "fs")
    assert FeatureStore.load(tmp_path / "fs").item_titles() == built.item_titles()
