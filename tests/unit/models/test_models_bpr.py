"""BPR: the shared contract, faithfulness to implicit, the bias column and fold-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import implicit.cpu.bpr
import implicit.gpu
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError
from recsys.models import BPR, MODEL_REGISTRY
from recsys.protocols import EmbeddingModel, FoldIn, Recommender
from recsys.testing import RecommenderContract
from recsys.testing.datasets import block_dataset, block_labels
from recsys.types import TrainingData

PARAMS: dict[str, Any] = {
    "embedding_dim": 8,
    "epochs": 100,
    "learning_rate": 0.05,
    "num_threads": 1,
    "seed": 0,
}


class TestBPRContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    # Fold-in re-optimises the user vector from zero with item factors fixed, so it lands
    # near, not on, the vector SGD trained jointly with the items.
    fold_in_min_overlap = 0.8

    def make_model(self) -> Recommender:
        return BPR(**PARAMS)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return block_dataset(seed=0)


@pytest.fixture(scope="module")
def model(data: TrainingData) -> BPR:
    return BPR(**PARAMS).fit(data, show_progress=False)


def test_registered_under_bpr() -> None:
    assert MODEL_REGISTRY["bpr"] is BPR


def test_factors_equal_implicit_called_directly(model: BPR, data: TrainingData) -> None:
    peer = implicit.cpu.bpr.BayesianPersonalizedRanking(
        factors=8, learning_rate=0.05, regularization=0.01, iterations=100, num_threads=1,
        random_state=0,
    )  # fmt: skip
    peer.fit(data.user_items, show_progress=False)
    np.testing.assert_array_equal(model.user_factors, peer.user_factors)
    np.testing.assert_array_equal(model.item_factors, peer.item_factors)


def test_bias_column_makes_inner_product_the_score(model: BPR, data: TrainingData) -> None:
    assert isinstance(model, EmbeddingModel)
    users, items = model.user_factors, model.item_factors
    assert users.shape == (data.n_users, 9) and items.shape == (data.n_items, 9)
    np.testing.assert_array_equal(users[:, -1], 1.0)
    u, i = np.meshgrid(np.arange(data.n_users), np.arange(data.n_items), indexing="ij")
    np.testing.assert_allclose(
        model.score(u.ravel(), i.ravel()), (users @ items.T).ravel(), rtol=1e-5, atol=1e-6
    )


def test_fold_in_depends_only_on_the_users_own_history(model: BPR, data: TrainingData) -> None:
    hist = data.user_items
    together = model.fold_in(hist)
    reversed_batch = model.fold_in(hist[::-1])[::-1]
    alone = np.vstack([model.fold_in(hist[[u]]) for u in (0, 7, 29)])
    np.testing.assert_allclose(reversed_batch, together, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone, together[[0, 7, 29]], rtol=1e-5, atol=1e-6)
    assert isinstance(model, FoldIn)
    np.testing.assert_array_equal(together[:, -1], 1.0)


def test_fold_in_places_a_new_user_in_their_block(model: BPR, data: TrainingData) -> None:
    _, item_block = block_labels(data)
    own = np.flatnonzero(item_block == 2)
    history = sp.csr_matrix((np.ones(3), (np.zeros(3, int), own[:3])), shape=(1, data.n_items))
    items, _ = model.recommend_for_history(history, k=len(own) - 3)
    assert set(items[0].tolist()) == set(own[3:].tolist())


def test_fold_in_ignores_history_values(model: BPR, data: TrainingData) -> None:
    hist = data.user_items[:5]
    scaled = hist * 4.0
    np.testing.assert_array_equal(model.fold_in(scaled), model.fold_in(hist))


def test_fold_in_rejects_wrong_shapes(model: BPR, data: TrainingData) -> None:
    with pytest.raises(DataError, match="columns"):
        model.fold_in(sp.csr_matrix((1, data.n_items + 1), dtype=np.float32))
    with pytest.raises(DataError, match="sparse"):
        model.fold_in(np.ones((1, data.n_items)))  # type: ignore[arg-type]


def test_user_without_interactions_gets_popularity(data: TrainingData) -> None:
    frame = pd.DataFrame(
        {"user_id": ["a", "a", "b", "b", "c"], "item_id": [1, 2, 1, 3, 1], "rating": 1.0}
    )
    base = TrainingData.from_frame(frame)
    users = base.user_map.extend(["lonely"])  # in the vocabulary, no interaction
    with_lonely = TrainingData.from_frame(frame, user_map=users, item_map=base.item_map)
    fitted = BPR(embedding_dim=4, epochs=5, num_threads=1).fit(with_lonely, show_progress=False)
    items, scores = fitted.recommend([3], k=3)
    np.testing.assert_array_equal(items, [[0, 1, 2]])  # item 1 (3 users) first, ties by index
    np.testing.assert_array_equal(scores, [[3, 1, 1]])


def test_saved_state_is_plain_arrays(model: BPR, tmp_path: Path) -> None:
    model.save(tmp_path)
    with np.load(tmp_path / "state.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["user_factors_"], model.user_factors)
        np.testing.assert_array_equal(npz["item_factors_"], model.item_factors)
    loaded = BPR.load(tmp_path)
    assert model.user_items_ is not None
    hist = sp.csr_matrix(model.user_items_[:4])
    np.testing.assert_array_equal(loaded.fold_in(hist), model.fold_in(hist))


@pytest.mark.parametrize(
    "params",
    [
        {"factors": 0},
        {"n_factors": 64},
        {"learning_rate": 0.0},
        {"embedding_dim": 0},
        {"device": "tpu"},
    ],
)
def test_invalid_hyperparameters_raise(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        BPR(**params)  # type: ignore[arg-type]


@pytest.mark.skipif(implicit.gpu.HAS_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_config_error(data: TrainingData) -> None:
    with pytest.raises(ConfigError, match="CUDA"):
        BPR(device="cuda", epochs=1).fit(data, show_progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not implicit.gpu.HAS_CUDA, reason="implicit has no CUDA extension here")
def test_cuda_training_gives_cpu_arrays_and_learns_blocks(data: TrainingData) -> None:
    model = BPR(embedding_dim=8, epochs=200, learning_rate=0.05, device="cuda", seed=0)
    model.fit(data, show_progress=False)
    assert isinstance(model.item_factors, np.ndarray)
    assert model.item_factors.shape[0] == data.n_items
    user_block, item_block = block_labels(data)
    items, _ = model.recommend(np.arange(data.n_users), k=2)
    assert np.mean(item_block[items] == user_block[:, None]) >= 0.8
