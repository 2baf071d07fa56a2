"""DeepFM: the shared contract, features from the store (offline and online), labels and
negatives, unknown ids, the feature-schema check, persistence and fine-tuning.

The shared CTR machinery (encoder, sampling, warm start) is exercised here through
DeepFM; DIN's tests cover what differs (sequences, attention).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.errors import ArtifactError, ConfigError, DataError, DataWarning, FeatureSchemaError
from recsys.eval import roc_auc
from recsys.features import FeatureStore
from recsys.models import MODEL_REGISTRY, DeepFM, DeepFMConfig, get_model_class
from recsys.models._torch.ctr_features import ACTIVITY_COLUMNS
from recsys.models._torch.finetuning import compose_activity, compose_sequences
from recsys.models._torch.sampling import ItemActivity, NegativeSampler
from recsys.protocols import Recommender
from recsys.testing import RecommenderContract, block_dataset, block_frame
from recsys.types import TrainingData

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST: dict[str, Any] = {
    "embedding_dim": 8,
    "hidden_units": (16,),
    "epochs": 8,
    "batch_size": 32,
    "learning_rate": 0.01,
    "device": "cpu",
    "seed": 0,
}


class TestDeepFMContract(RecommenderContract):
    min_block_precision = 0.9

    def make_model(self) -> Recommender:
        return DeepFM(labels="implicit", **FAST)


# ---------------------------------------------------------------------- data helpers
def block_side_tables(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users with a categorical and a numeric attribute, items with genres and a year."""
    users = pd.DataFrame({"user_id": sorted(frame["user_id"].unique())})
    users["occupation"] = [f"job{k % 3}" for k in range(len(users))]
    users["age"] = np.arange(len(users), dtype=np.int64) % 50 + 18
    items = pd.DataFrame({"item_id": sorted(frame["item_id"].unique())})
    items["genres"] = [
        f"g{k % 4}|g{(k + 1) % 4}" if k % 5 else f"g{k % 4}" for k in range(len(items))
    ]
    items["release_year"] = 1990 + np.arange(len(items)) % 20
    return users, items


@pytest.fixture(scope="module")
def explicit() -> dict[str, Any]:
    """Block data with out-of-block noise: ratings 4-5 in block (click), 1-2 outside."""
    frame = block_frame(
        n_blocks=3, users_per_block=12, items_per_block=10, density=0.5, noise=0.6, seed=1
    )
    users, items = block_side_tables(frame)
    store = FeatureStore.build(frame, items=items, users=users, show_progress=False)
    data = TrainingData.from_frame(frame, items=items, users=users)
    order = np.random.default_rng(0).permutation(len(frame))  # timestamps run by user
    cut = int(0.8 * len(order))
    train_rows, test_rows = np.sort(order[:cut]), np.sort(order[cut:])
    mask = np.zeros(len(frame), bool)
    mask[train_rows] = True
    return {
        "frame": frame,
        "users": users,
        "items": items,
        "store": store,
        "data": data,
        "train": data.select(mask),
        "train_rows": train_rows,
        "test_rows": test_rows,
        "labels": (frame["rating"].to_numpy() >= 4).astype(np.float32),
    }


@pytest.fixture(scope="module")
def fitted(explicit: dict[str, Any]) -> DeepFM:
    model = DeepFM(**{**FAST, "validation_fraction": 0.0, "epochs": 20, "learning_rate": 0.03})
    return model.fit(
        explicit["train"],
        features=explicit["store"],
        rows=explicit["train_rows"],
        show_progress=False,
    )


# ---------------------------------------------------------------------- registry
def test_registered_and_configurable() -> None:
    assert MODEL_REGISTRY["deepfm"] is DeepFM and get_model_class("deepfm") is DeepFM
    cfg = DeepFMConfig(hidden_units=[32, 8])  # TOML gives lists
    assert cfg.hidden_units == (32, 8)
    with pytest.raises(ConfigError):
        DeepFM(labels="clicks")
    with pytest.raises(ConfigError):
        DeepFM(device="tpu")


def test_importing_the_models_does_not_import_torch() -> None:
    code = "import sys, recsys.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- quality
def test_learns_clicks_from_ratings(explicit: dict[str, Any], fitted: DeepFM) -> None:
    test_rows = explicit["test_rows"]
    probs = fitted.score_rows(explicit["store"], test_rows)
    assert probs.dtype == np.float32 and ((probs > 0) & (probs < 1)).all()
    assert roc_auc(explicit["labels"][test_rows], probs) > 0.9
    assert len(fitted.history_) == 20
    assert all("loss" in h and "train_seconds" in h for h in fitted.history_)


def test_score_is_the_latest_view_and_predict_proba_aliases_it(fitted: DeepFM) -> None:
    users = np.array([0, 5, 20, 35])
    items = np.array([1, 12, 3, 29])
    np.testing.assert_array_equal(fitted.score(users, items), fitted.predict_proba(users, items))
    # in-block pairs (user block == item block) score above out-of-block ones
    inside = fitted.score(np.arange(12), np.arange(12) % 10)
    outside = fitted.score(np.arange(12), 20 + np.arange(12) % 10)
    assert inside.mean() > outside.mean() + 0.3


def test_validation_drives_early_stopping(explicit: dict[str, Any]) -> None:
    data, store = explicit["data"], explicit["store"]
    val_rows = explicit["test_rows"]
    mask = np.zeros(data.n_interactions, bool)
    mask[val_rows] = True
    seen: list[int] = []
    model = DeepFM(**{**FAST, "epochs": 6, "patience": 2}).fit(
        explicit["train"],
        features=store,
        rows=explicit["train_rows"],
        validation=data.select(mask),
        validation_rows=val_rows,
        on_epoch=lambda e, m: seen.append(e),
        show_progress=False,
    )
    assert seen == [int(h["epoch"]) for h in model.history_]
    assert all("val_auc" in h and "val_gauc" in h for h in model.history_)
    best = max(h["val_auc"] for h in model.history_)
    assert model.history_[model.best_epoch_ - 1]["val_auc"] == best


def test_holdout_fraction_validates_without_explicit_validation(
    explicit: dict[str, Any],
) -> None:
    model = DeepFM(**{**FAST, "epochs": 2, "validation_fraction": 0.2})
    model.fit(
        explicit["train"],
        features=explicit["store"],
        rows=explicit["train_rows"],
        show_progress=False,
    )
    assert "val_auc" in model.history_[0]


def test_fits_without_a_store(explicit: dict[str, Any]) -> None:
    """Without features= the model builds the store from the data's frames itself."""
    model = DeepFM(**{**FAST, "epochs": 2}).fit(explicit["data"], show_progress=False)
    assert np.isfinite(model.score([0, 1], [0, 1])).all()
    assert {f.name for f in model.encoder_.fields} >= {"user_occupation", "item_genres"}


def test_all_one_labels_warn() -> None:
    data = block_dataset()  # every rating is 4 or 5
    with pytest.warns(DataWarning, match="every label"):
        DeepFM(**{**FAST, "epochs": 1}).fit(data, show_progress=False)


def test_rating_labels_need_ratings() -> None:
    frame = block_frame(with_ratings=False)
    data = TrainingData.from_frame(frame)
    with pytest.raises(DataError, match="rating"):
        DeepFM(labels="rating", **FAST).fit(data, show_progress=False)
    model = DeepFM(**{**FAST, "epochs": 2}).fit(data, show_progress=False)  # auto: implicit
    assert np.isfinite(model.score([0], [0])).all()


def test_cuda_device_is_refused_without_cuda(explicit: dict[str, Any]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA"):
        DeepFM(**{**FAST, "device": "cuda"}).fit(explicit["data"], show_progress=False)


# ---------------------------------------------------------------------- features
def test_encoder_reads_the_point_in_time_view(explicit: dict[str, Any], fitted: DeepFM) -> None:
    store, rows = explicit["store"], explicit["test_rows"][:7]
    enc = fitted.encoder_
    assert enc is not None and [d.name for d in enc.dense] == list(ACTIVITY_COLUMNS)
    inputs = enc.row_inputs(store, rows)
    off = store.offline_features().iloc[rows]
    expected = enc.dense_matrix({c: off[c].to_numpy() for c in ACTIVITY_COLUMNS}, len(rows))
    np.testing.assert_array_equal(inputs["dense"].numpy(), expected)
    count = next(d for d in enc.dense if d.name == "user_count")
    np.testing.assert_allclose(
        inputs["dense"].numpy()[:, 0],
        (np.log1p(off["user_count"].to_numpy()) - count.mean) / count.std,
        rtol=1e-5,
    )
    # the serving path reads the online view of the same definitions
    online = store.online_user_features(store.user_map.ids[:3])
    np.testing.assert_array_equal(enc.user_state[:3, 0], online["user_count"].to_numpy())


def test_unknown_category_values_and_ids_use_the_reserved_slot(
    explicit: dict[str, Any], fitted: DeepFM
) -> None:
    enc = fitted.encoder_
    assert enc is not None
    store = FeatureStore.build(
        explicit["frame"], items=explicit["items"], users=explicit["users"], show_progress=False
    )
    store.append(
        pd.DataFrame(
            {
                "user_id": ["newbie"],
                "item_id": ["brand-new"],
                "rating": [5.0],
                "timestamp": [2_000_000_000],
            }
        )
    )
    n_users, n_items = fitted.n_users, fitted.n_items
    copy = _copy(fitted)
    added = copy.refresh_features(store)
    assert added == (1, 1)
    assert copy.n_users == n_users + 1 and copy.n_items == n_items + 1
    uid = copy.encoder_.field("user_id")
    assert copy.encoder_.user_table[n_users, 0] == uid.offset  # unknown id slot
    got = copy.score([n_users, 0, n_users], [0, n_items, n_items])
    assert np.isfinite(got).all()
    assert np.isnan(copy.score([n_users + 1], [0])).all()
    # unknown values inside the table map to 0 as well, never to an index error
    assert (copy.encoder_.user_table[n_users] >= 0).all()


def _copy(model: DeepFM) -> DeepFM:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp))
        return DeepFM.load(Path(tmp))


def test_feature_schema_mismatch_lists_the_columns(
    explicit: dict[str, Any], fitted: DeepFM
) -> None:
    users = explicit["users"].drop(columns=["age"]).assign(shoe_size=40.0)
    other = FeatureStore.build(
        explicit["frame"], items=explicit["items"], users=users, show_progress=False
    )
    with pytest.raises(FeatureSchemaError) as err:
        fitted.score_rows(other, [0, 1])
    assert "user_age" in str(err.value) and "user_shoe_size" in str(err.value)
    with pytest.raises(FeatureSchemaError):
        _copy(fitted).refresh_features(other)
    with pytest.raises(FeatureSchemaError):
        fitted.check_features(other)
    fitted.check_features(explicit["store"])  # the fitted store passes
    assert "user_attributes" in fitted.feature_schema


def test_rows_must_match_the_store(explicit: dict[str, Any]) -> None:
    rows = explicit["train_rows"].copy()
    rows[[0, 1]] = rows[[1, 0]]
    with pytest.raises(DataError, match="other \\(user, item\\) pairs"):
        DeepFM(**FAST).fit(
            explicit["train"], features=explicit["store"], rows=rows[::-1], show_progress=False
        )
    with pytest.raises(DataError, match="rows"):
        DeepFM(**FAST).fit(
            explicit["train"], features=explicit["store"], rows=rows[:-1], show_progress=False
        )
    mask = np.zeros(explicit["data"].n_interactions, bool)
    mask[explicit["test_rows"]] = True
    with pytest.raises(DataError, match="validation_rows"):
        DeepFM(**FAST).fit(
            explicit["train"],
            features=explicit["store"],
            rows=explicit["train_rows"],
            validation=explicit["data"].select(mask),
            show_progress=False,
        )


def test_item_activity_reproduces_the_store(explicit: dict[str, Any]) -> None:
    """The negatives' point-in-time item features use the store's definitions."""
    frame, store = explicit["frame"], explicit["store"]
    data = explicit["data"]
    activity = ItemActivity(data.item_idx, data.timestamp, data.rating, data.n_items, has_time=True)
    got = activity.at(data.item_idx, data.timestamp)
    off = store.offline_features()
    for col in ("item_count", "item_mean_rating", "item_seconds_since_last"):
        np.testing.assert_allclose(got[col], off[col].to_numpy(), rtol=1e-6, equal_nan=True)
    assert len(frame) == len(off)


def test_negative_sampler_avoids_seen_items(rng: np.random.Generator) -> None:
    data = block_dataset()
    sampler = NegativeSampler(data.user_items, kind="popularity", exponent=0.75)
    users = np.repeat(np.arange(data.n_users), 50)
    items = sampler.sample(users, rng)
    seen = data.user_items
    assert not any(seen[u, i] for u, i in zip(users[:500], items[:500], strict=True))
    uniform = NegativeSampler(data.user_items, kind="uniform", exponent=0.75)
    assert len(np.unique(uniform.sample(users, rng))) > data.n_items // 2


def test_implicit_training_draws_fresh_negatives_every_epoch() -> None:
    data = block_dataset(seed=2)
    model = DeepFM(labels="implicit", negatives_per_positive=2, **{**FAST, "epochs": 3})
    batches: list[dict[str, torch.Tensor]] = []
    model._fit_options = {}
    from recsys.models._torch import trainer as trainer_module

    original = trainer_module.Trainer._epoch_rows

    def spy(self: Any, train: Any, epoch: int, device: Any) -> dict[str, torch.Tensor]:
        rows = original(self, train, epoch, device)
        batches.append(rows)
        return rows

    trainer_module.Trainer._epoch_rows = spy  # type: ignore[method-assign]
    try:
        model.fit(data, show_progress=False)
    finally:
        trainer_module.Trainer._epoch_rows = original  # type: ignore[method-assign]
    assert len(batches) == 3
    n = data.n_interactions
    for rows in batches:
        assert len(rows["label"]) == 3 * n and float(rows["label"].sum()) == n
    assert not torch.equal(batches[0]["item"][n:], batches[1]["item"][n:])


# ---------------------------------------------------------------------- persistence
def test_save_is_self_contained_and_safe(fitted: DeepFM, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "config.json",
        "features.safetensors",
        "history.json",
        "items.parquet",
        "users.parquet",
        "weights.safetensors",
    ]
    loaded = DeepFM.load(tmp_path)  # no store needed
    users, items = np.arange(10), np.arange(10)[::-1]
    np.testing.assert_array_equal(loaded.score(users, items), fitted.score(users, items))
    assert loaded.history_ == json.loads((tmp_path / "history.json").read_text())
    assert loaded.best_epoch_ == fitted.best_epoch_
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["params"]["device"] = "cuda"  # written on a GPU machine: still loads here
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    np.testing.assert_array_equal(
        DeepFM.load(tmp_path).score(users, items), fitted.score(users, items)
    )


def test_load_refuses_weights_of_another_shape(fitted: DeepFM, tmp_path: Path) -> None:
    fitted.save(tmp_path / "a")
    other = DeepFM(**{**FAST, "embedding_dim": 4, "epochs": 1}).fit(
        block_dataset(noise=0.5), show_progress=False
    )
    other.save(tmp_path / "b")
    (tmp_path / "a" / "weights.safetensors").write_bytes(
        (tmp_path / "b" / "weights.safetensors").read_bytes()
    )
    with pytest.raises(ArtifactError, match="does not fit"):
        DeepFM.load(tmp_path / "a")


def test_checkpoint_resume_through_fit(explicit: dict[str, Any], tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def crash(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise Stop

    kwargs = {"features": explicit["store"], "rows": explicit["train_rows"], "show_progress": False}
    params = {**FAST, "epochs": 4, "validation_fraction": 0.0}
    whole = DeepFM(**params).fit(explicit["train"], **kwargs)
    with pytest.raises(Stop):
        DeepFM(**params).fit(explicit["train"], checkpoint_dir=tmp_path, on_epoch=crash, **kwargs)
    resumed = DeepFM(**params).fit(
        explicit["train"], checkpoint_dir=tmp_path, resume=True, **kwargs
    )
    users, items = np.arange(20), np.arange(20)
    np.testing.assert_array_equal(resumed.score(users, items), whole.score(users, items))
    assert len(resumed.history_) == 4


# ---------------------------------------------------------------------- fine-tuning
def test_compose_activity_and_sequences() -> None:
    before = np.array([[2.0, 4.0, 100.0], [0.0, np.nan, np.nan]])
    count, mean, since = compose_activity(
        before,
        np.array([1, 0]),
        np.array([1.0, np.nan]),
        np.array([5.0, np.nan]),
        np.array([150, 200]),
    )
    np.testing.assert_array_equal(count, [3.0, 0.0])
    np.testing.assert_allclose(mean, [3.0, np.nan])
    np.testing.assert_allclose(since, [5.0, np.nan])
    seq = compose_sequences(
        np.array([[1, 2, -1], [-1, -1, -1]]), np.array([[3, 4, -1], [5, -1, -1]]), 3
    )
    np.testing.assert_array_equal(seq, [[2, 3, 4], [5, -1, -1]])


def test_finetune_adds_ids_and_keeps_old_rows(explicit: dict[str, Any], fitted: DeepFM) -> None:
    frame = explicit["frame"]
    new = frame.iloc[explicit["test_rows"]].copy()
    extra = pd.DataFrame(
        {
            "user_id": ["zz-new"],
            "item_id": [new["item_id"].iloc[0]],
            "rating": [5.0],
            "timestamp": [int(new["timestamp"].max()) + 10],
        }
    )
    new = pd.concat([new, extra], ignore_index=True)
    model = _copy(fitted)
    weight = model.module_.embedding_arch.embedding.weight.detach().clone()
    n_rows = weight.shape[0]
    n_users = model.n_users
    model.finetune(new, mode="top", epochs=1, show_progress=False)
    grown = model.module_.embedding_arch.embedding.weight.detach()
    assert grown.shape[0] == n_rows + 1  # one fresh row: the new user's id
    assert torch.equal(grown[:n_rows], weight)  # top mode: embeddings frozen
    assert model.n_users == n_users + 1 and model.user_map_.ids[-1] == "zz-new"
    assert np.isfinite(model.score([n_users], [0])).all()
    assert model.user_items_[n_users].nnz == 1
    assert model.history_[-1]["finetune"] == 1.0
    full = _copy(fitted).finetune(new, mode="full", epochs=1, show_progress=False)
    assert not torch.equal(full.module_.embedding_arch.embedding.weight.detach()[:n_rows], weight)
    with pytest.raises(ConfigError):
        _copy(fitted).finetune(new, mode="partial")  # type: ignore[arg-type]


def test_finetune_with_a_store_matches_the_composed_features(
    explicit: dict[str, Any],
) -> None:
    """Point-in-time features of new rows composed from the snapshot equal the store's."""
    from recsys.models._torch.finetuning import _composed_inputs

    frame, store = explicit["frame"], explicit["store"]
    order = np.argsort(frame["timestamp"].to_numpy(), kind="stable")
    old, new = order[: int(0.8 * len(order))], order[int(0.8 * len(order)) :]
    old_frame, new_frame = frame.iloc[old], frame.iloc[new].reset_index(drop=True)
    data = TrainingData.from_frame(frame, items=explicit["items"], users=explicit["users"])
    old_store = FeatureStore.build(
        old_frame, items=explicit["items"], users=explicit["users"], show_progress=False
    )
    model = DeepFM(**{**FAST, "epochs": 1, "validation_fraction": 0.0})
    old_data = TrainingData.from_frame(
        old_frame,
        user_map=data.user_map,
        item_map=data.item_map,
        items=explicit["items"],
        users=explicit["users"],
    )
    model.fit(old_data, features=old_store, show_progress=False)
    new_store = FeatureStore.build(new_frame, show_progress=False)
    users = data.user_map.to_index(new_frame["user_id"].to_numpy())
    items = data.item_map.to_index(new_frame["item_id"].to_numpy())
    composed = _composed_inputs(
        model.encoder_, new_store, users, items, new_frame["timestamp"].to_numpy(), False
    )
    direct = model.encoder_.row_inputs(store, new)
    np.testing.assert_allclose(
        composed["dense"].numpy(), direct["dense"].numpy(), rtol=1e-5, atol=1e-5
    )
