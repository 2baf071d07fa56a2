"""ALS: the shared contract, faithfulness to implicit and the exact least-squares fold-in."""

from __future__ import annotations

import implicit.cpu.als
import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError
from recsys.models import ALS, MODEL_REGISTRY, ALSConfig
from recsys.protocols import EmbeddingModel, Recommender
from recsys.testing import RecommenderContract
from recsys.testing.datasets import block_dataset, block_labels
from recsys.types import TrainingData


class TestALSContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    # Training's conjugate-gradient sweeps are inexact and end with an item update, so the
    # exact fold-in solve lands close to, not on, a training user's stored vector.
    fold_in_min_overlap = 0.9

    def make_model(self) -> Recommender:
        # reg is ML-100K-sized by default (10); 30 users with 4 items each need far less
        return ALS(embedding_dim=4, reg=0.01, num_threads=1, seed=0)


class TestALSConfidenceContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    fold_in_min_overlap = 0.9

    def make_model(self) -> Recommender:
        return ALS(embedding_dim=4, alpha=5.0, reg=0.1, num_threads=1, seed=0)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return block_dataset(seed=0, noise=0.25)


@pytest.fixture(scope="module", params=[1.0, 4.0])
def model(request: pytest.FixtureRequest, data: TrainingData) -> ALS:
    return ALS(embedding_dim=6, alpha=request.param, reg=0.05, epochs=10, num_threads=1).fit(
        data, show_progress=False
    )


def test_registered_under_als() -> None:
    assert MODEL_REGISTRY["als"] is ALS


def test_factors_equal_implicit_called_directly(model: ALS, data: TrainingData) -> None:
    cfg = model.config
    assert isinstance(cfg, ALSConfig)
    peer = implicit.cpu.als.AlternatingLeastSquares(
        factors=6, regularization=0.05, alpha=cfg.alpha, iterations=10, num_threads=1,
        random_state=cfg.seed,
    )  # fmt: skip
    peer.fit(data.user_items, show_progress=False)
    np.testing.assert_array_equal(model.user_factors, peer.user_factors)
    np.testing.assert_array_equal(model.item_factors, peer.item_factors)


def test_fold_in_solves_the_normal_equations(model: ALS, data: TrainingData) -> None:
    """x_u = (Y^T Y + (alpha - 1) Y_u^T Y_u + reg I)^-1 alpha Y_u^T 1 (Hu et al. eq. 4)."""
    cfg = model.config
    assert isinstance(cfg, ALSConfig)
    alpha, reg = cfg.alpha, cfg.reg
    y = model.item_factors.astype(np.float64)
    hist = data.user_items
    got = model.fold_in(hist)
    for u in (0, 11, 29):
        yu = y[hist[u].indices]
        system = y.T @ y + (alpha - 1.0) * yu.T @ yu + reg * np.eye(y.shape[1])
        expected = np.linalg.solve(system, alpha * yu.sum(axis=0))
        np.testing.assert_allclose(got[u], expected, rtol=1e-4, atol=1e-6)


def test_fold_in_matches_implicit_recalculate_user(model: ALS, data: TrainingData) -> None:
    cfg = model.config
    assert isinstance(cfg, ALSConfig)
    peer = implicit.cpu.als.AlternatingLeastSquares(
        factors=6, regularization=cfg.reg, alpha=cfg.alpha, num_threads=1
    )
    peer.user_factors = model.user_factors.copy()
    peer.item_factors = model.item_factors.copy()
    users = np.arange(data.n_users)
    expected = peer.recalculate_user(users, data.user_items)
    np.testing.assert_allclose(model.fold_in(data.user_items), expected, rtol=1e-3, atol=1e-5)


def test_fold_in_batch_equals_single(model: ALS, data: TrainingData) -> None:
    hist = data.user_items
    together = model.fold_in(hist)
    alone = np.vstack([model.fold_in(hist[[u]]) for u in (3, 17)])
    np.testing.assert_allclose(alone, together[[3, 17]], rtol=1e-5, atol=1e-7)


def test_fold_in_of_own_history_is_close_to_stored_vector(model: ALS, data: TrainingData) -> None:
    folded = model.fold_in(data.user_items)
    stored = model.user_factors
    cos = np.sum(folded * stored, axis=1) / (
        np.linalg.norm(folded, axis=1) * np.linalg.norm(stored, axis=1)
    )
    assert np.median(cos) > 0.95


def test_fold_in_empty_row_is_zero_vector(model: ALS, data: TrainingData) -> None:
    empty = sp.csr_matrix((2, data.n_items), dtype=np.float32)
    np.testing.assert_array_equal(model.fold_in(empty), 0.0)


def test_embeddings_are_the_scores(model: ALS, data: TrainingData) -> None:
    assert isinstance(model, EmbeddingModel)
    assert model.user_factors.shape == (data.n_users, 6)
    u = np.repeat(np.arange(data.n_users), data.n_items)
    i = np.tile(np.arange(data.n_items), data.n_users)
    expected = (model.user_factors @ model.item_factors.T).ravel()
    np.testing.assert_allclose(model.score(u, i), expected, rtol=1e-5, atol=1e-6)


def test_recommends_within_block() -> None:
    clean = block_dataset(seed=1)
    model = ALS(embedding_dim=3, reg=0.01, num_threads=1, seed=0).fit(clean, show_progress=False)
    user_block, item_block = block_labels(clean)
    items, _ = model.recommend(np.arange(clean.n_users), k=2)
    assert np.mean(item_block[items] == user_block[:, None]) >= 0.9


def test_fold_in_rejects_wrong_width(model: ALS, data: TrainingData) -> None:
    with pytest.raises(DataError, match="columns"):
        model.recommend_for_history(sp.csr_matrix((1, data.n_items - 1)), k=3)


@pytest.mark.parametrize(
    "params", [{"alpha": 0.0}, {"reg": -1.0}, {"epochs": 0}, {"iterations": 3}]
)
def test_invalid_hyperparameters_raise(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ALS(**params)  # type: ignore[arg-type]
