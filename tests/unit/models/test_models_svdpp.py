"""SVD++: the shared contract, the SGD kernel against autograd, and rating behaviour.

The contract runs on the block dataset with out-of-block noise: a rating model learns
blocks from the contrast between the high in-block and the low out-of-block ratings; on
the noise-free variant every rating is 4 or 5 and nothing separates the blocks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from numpy.typing import NDArray

from recsys.errors import ArtifactError, ConfigError, DataError, NotFittedError
from recsys.models import MODEL_REGISTRY, SVDPlusPlus, SVDPlusPlusConfig, get_model_class
from recsys.models._torch import resolve_device, seeded_generator
from recsys.models.svdpp import _STEP_BOUND, _ImplicitLists, _Params
from recsys.protocols import EmbeddingModel, FoldIn, Recommender
from recsys.testing import RecommenderContract, block_dataset
from recsys.types import TrainingData

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CONTRACT_PARAMS: dict[str, Any] = {
    "embedding_dim": 3,
    "epochs": 60,
    "batch_size": 32,
    "learning_rate": 0.03,
    "learning_rate_decay": 1.0,
    "reg": 0.2,
    "device": "cpu",
    "seed": 0,
}


class TestSVDPlusPlusContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    min_block_precision = 0.9  # measured 0.95
    # Fold-in from the item list alone drops p_u (and b_u), which the fitted model has;
    # measured 0.68 on this data. With the ratings it is 0.99, see
    # test_fold_in_with_ratings_reproduces_fitted.
    fold_in_min_overlap = 0.6

    def make_data(self) -> TrainingData:
        return block_dataset(noise=0.5, seed=0)

    def make_model(self) -> Recommender:
        return SVDPlusPlus(**CONTRACT_PARAMS)


# ---------------------------------------------------------------------- helpers
def synthetic_frame(
    rng: np.random.Generator, n_users: int = 150, n_items: int = 80, density: float = 0.3
) -> pd.DataFrame:
    """Integer ratings 1..5 from biases plus a rank-2 interaction plus noise."""
    mask = rng.random((n_users, n_items)) < density
    users, items = np.nonzero(mask)
    bu = rng.normal(0, 0.4, n_users)
    bi = rng.normal(0, 0.5, n_items)
    p = rng.normal(0, 0.8, (n_users, 2))
    q = rng.normal(0, 0.8, (n_items, 2))
    raw = 3.5 + bu[users] + bi[items] + (p[users] * q[items]).sum(1)
    raw += rng.normal(0, 0.3, len(raw))
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "rating": np.clip(np.rint(raw), 1, 5).astype(np.float64),
        }
    )


def split(
    frame: pd.DataFrame, rng: np.random.Generator, test_frac: float = 0.2
) -> tuple[TrainingData, TrainingData]:
    """Random row split with shared vocabularies (built from all rows)."""
    full = TrainingData.from_frame(frame)
    test_mask = rng.random(len(frame)) < test_frac
    return full.select(~test_mask), full.select(test_mask)


class Learned(NamedTuple):
    """The learned arrays of a fitted model, typed as present."""

    mu: float
    rating_range: NDArray[np.float32]
    user_bias: NDArray[np.float32]
    item_bias: NDArray[np.float32]
    user_emb: NDArray[np.float32]
    item_emb: NDArray[np.float32]
    implicit_emb: NDArray[np.float32]
    user_items: sp.csr_matrix


def learned(model: SVDPlusPlus) -> Learned:
    values = [getattr(model, f) for f in (*SVDPlusPlus._state_fields, "user_items_")]
    assert all(v is not None for v in values), "model is not fitted"
    return Learned(float(values[0]), *values[1:])


def reference_predictions(model: SVDPlusPlus, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Koren 2008 eq. (15) from the learned arrays, one pair at a time, in float64."""
    m = learned(model)
    out = []
    for u, i in zip(users, items, strict=True):
        n_u = m.user_items[u].indices
        implicit = m.implicit_emb[n_u].astype(np.float64).sum(0) / np.sqrt(max(len(n_u), 1))
        vec = m.user_emb[u] + implicit
        out.append(m.mu + m.user_bias[u] + m.item_bias[i] + m.item_emb[i].astype(np.float64) @ vec)
    return np.asarray(out)


@pytest.fixture(scope="module")
def rated() -> tuple[TrainingData, TrainingData]:
    rng = np.random.default_rng(7)
    return split(synthetic_frame(rng), rng)


@pytest.fixture(scope="module")
def fitted(rated: tuple[TrainingData, TrainingData]) -> SVDPlusPlus:
    train, _ = rated
    return SVDPlusPlus(embedding_dim=4, epochs=20, batch_size=256, device="cpu", seed=1).fit(
        train, show_progress=False
    )


# ---------------------------------------------------------------------- registry, config
def test_registered_under_svdpp() -> None:
    assert MODEL_REGISTRY["svdpp"] is SVDPlusPlus
    assert get_model_class("svdpp") is SVDPlusPlus


def test_is_embedding_and_fold_in_model(fitted: SVDPlusPlus) -> None:
    assert isinstance(fitted, EmbeddingModel)
    assert isinstance(fitted, FoldIn)


@pytest.mark.parametrize(
    "params",
    [
        {"embedding_dim": 0},
        {"epochs": 0},
        {"learning_rate": 0.0},
        {"learning_rate_decay": 1.5},
        {"reg": -0.1},
        {"batch_size": 0},
        {"patience": 0},
        {"device": "gpu"},
        {"device": "cuda:x"},
    ],
)
def test_invalid_hyperparameters_raise(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SVDPlusPlus(**params)  # type: ignore[arg-type]


def test_config_defaults_use_style_guide_names() -> None:
    cfg = SVDPlusPlusConfig()
    assert cfg.embedding_dim == 20 and cfg.epochs == 20 and cfg.device == "auto"
    assert {"learning_rate", "reg", "batch_size", "seed"} <= set(cfg.model_dump())


# ---------------------------------------------------------------------- input validation
def test_implicit_data_is_refused_with_a_pointer_to_bpr_and_als() -> None:
    data = block_dataset(with_ratings=False)
    with pytest.raises(DataError, match="explicit ratings") as info:
        SVDPlusPlus(device="cpu").fit(data, show_progress=False)
    assert "bpr" in str(info.value) and "als" in str(info.value)


def test_non_finite_ratings_are_refused() -> None:
    data = block_dataset()
    assert data.rating is not None
    bad = data.rating.copy()
    bad[[3, 5]] = np.nan
    broken = TrainingData(data.user_map, data.item_map, data.user_idx, data.item_idx, bad)
    with pytest.raises(DataError, match="2 ratings are NaN"):
        SVDPlusPlus(device="cpu").fit(broken, show_progress=False)


def test_validation_with_other_vocabulary_is_refused(rated: tuple[TrainingData, ...]) -> None:
    train, _ = rated
    other = block_dataset()
    with pytest.raises(DataError, match="user_map and item_map"):
        SVDPlusPlus(device="cpu", epochs=1).fit(train, validation=other, show_progress=False)


def test_a_huge_learning_rate_stays_finite(rated: tuple[TrainingData, ...]) -> None:
    # Bounded per-row steps (#14): even a step 2,500 times the default cannot blow up.
    train, test = rated
    model = SVDPlusPlus(device="cpu", learning_rate=50.0, learning_rate_decay=1.0, epochs=20)
    model.fit(train, show_progress=False)
    assert all(math.isfinite(h["loss"]) for h in model.history_)
    assert np.isfinite(model.score(test.user_idx, test.item_idx)).all()


def test_divergence_raises_a_config_error(
    rated: tuple[TrainingData, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guard behind the bounded steps: a non-finite loss ends the fit with a clear error.
    train, _ = rated
    monkeypatch.setattr(SVDPlusPlus, "_train_epoch", lambda *args, **kwargs: math.inf)
    model = SVDPlusPlus(device="cpu", epochs=20)
    with pytest.raises(ConfigError, match=r"diverged.*lower learning_rate"):
        model.fit(train, show_progress=False)
    with pytest.raises(NotFittedError):  # no half-trained parameters are left behind
        model.predict_rating([0], [0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_raises(rated: tuple[TrainingData, ...]) -> None:
    train, _ = rated
    with pytest.raises(ConfigError, match="CUDA is not available"):
        SVDPlusPlus(device="cuda", epochs=1).fit(train, show_progress=False)


# ---------------------------------------------------------------------- the SGD kernel
def _kernel_fixture(
    rng: np.random.Generator, reg: float
) -> tuple[SVDPlusPlus, TrainingData, _Params, _ImplicitLists, torch.Tensor]:
    data = TrainingData.from_frame(synthetic_frame(rng, n_users=12, n_items=9, density=0.5))
    assert data.rating is not None
    model = SVDPlusPlus(batch_size=10_000, reg=reg, embedding_dim=3, device="cpu")
    g = torch.Generator().manual_seed(3)
    params = _Params(
        torch.randn(data.n_users, generator=g) * 0.1,
        torch.randn(data.n_items, generator=g) * 0.1,
        torch.randn(data.n_users, 3, generator=g) * 0.3,
        torch.randn(data.n_items, 3, generator=g) * 0.3,
        torch.randn(data.n_items, 3, generator=g) * 0.3,
    )
    lists = _ImplicitLists(data.user_items, torch.device("cpu"))
    residual = torch.from_numpy(data.rating - np.float32(data.rating.mean()))
    return model, data, params, lists, residual


def _autograd_step(
    data: TrainingData, params: _Params, residual: torch.Tensor, reg: float, lr: float
) -> list[torch.Tensor]:
    """``param - lr * grad`` of 0.5 * sum of squared errors plus Koren's per-rating L2."""
    leaves = [t.clone().requires_grad_(True) for t in params.tensors()]
    bu, bi, p, q, y = leaves
    x = data.user_items.toarray()
    x /= np.sqrt(np.maximum(x.sum(1, keepdims=True), 1))
    implicit = torch.from_numpy(x.astype(np.float32)) @ y  # (n_users, d)
    u = torch.from_numpy(data.user_idx)
    i = torch.from_numpy(data.item_idx)
    pred = bu[u] + bi[i] + ((p[u] + implicit[u]) * q[i]).sum(1)
    y_norms = torch.from_numpy((data.user_items.toarray() > 0).astype(np.float32)) @ (y**2).sum(1)
    penalty = bu[u] ** 2 + bi[i] ** 2 + (p[u] ** 2).sum(1) + (q[i] ** 2).sum(1) + y_norms[u]
    loss = 0.5 * ((residual - pred) ** 2).sum() + 0.5 * reg * penalty.sum()
    loss.backward()
    return [(leaf - lr * leaf.grad).detach() for leaf in leaves]  # type: ignore[operator]


def test_full_batch_step_is_the_svdpp_gradient(rng: np.random.Generator) -> None:
    # With reg = 0 one full-batch step must be exactly gradient descent on 0.5 * SSE of
    # eq. (15), implicit term included, as long as the step bound (#14) does not bind:
    # _STEP_BOUND * lr * (a user's or item's number of ratings, at most 9 here) <= 1.
    model, data, params, lists, residual = _kernel_fixture(rng, reg=0.0)
    expected = _autograd_step(data, params, residual, reg=0.0, lr=0.02)
    n = data.n_interactions
    weights = torch.ones(data.n_items, 1)
    sse = model._train_epoch(
        params,
        lists,
        torch.from_numpy(data.user_idx),
        torch.from_numpy(data.item_idx),
        residual,
        weights,
        torch.arange(n),
        0.02,
    )
    assert sse > 0
    for name, got, want in zip(
        ("b_u", "b_i", "p", "q", "y"), params.tensors(), expected, strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_full_batch_step_regularises_like_koren(rng: np.random.Generator) -> None:
    # Biases, p and q get Koren's per-rating L2 gradient exactly. y_j, which every rating of
    # every user holding j decays, is decayed in closed form, exp(-lr reg w_j) instead of
    # 1 - lr reg w_j, with w_j the number of such ratings; the data gradient is unchanged.
    reg, lr = 0.1, 0.01
    model, data, params, lists, residual = _kernel_fixture(rng, reg=reg)
    y0 = params.implicit_emb.clone()
    expected = _autograd_step(data, params, residual, reg=reg, lr=lr)
    data_only_y = _autograd_step(data, params, residual, reg=0.0, lr=lr)[4]
    user_counts = np.bincount(data.user_idx, minlength=data.n_users).astype(np.float32)
    implicit_w = torch.from_numpy(np.asarray(data.user_items.T @ user_counts, np.float32))
    model._train_epoch(
        params,
        lists,
        torch.from_numpy(data.user_idx),
        torch.from_numpy(data.item_idx),
        residual,
        implicit_w[:, None],
        torch.arange(data.n_interactions),
        lr,
    )
    for name, got, want in zip(
        ("b_u", "b_i", "p", "q"), params.tensors()[:4], expected[:4], strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    decay = torch.exp(-lr * reg * implicit_w)[:, None]
    torch.testing.assert_close(params.implicit_emb, y0 * decay + (data_only_y - y0))
    # ... which is the linear decay up to second order: |y| (lr reg w)^2 / 2
    bound = float((y0.abs() * (lr * reg * implicit_w[:, None]) ** 2 / 2).max())
    assert float((params.implicit_emb - expected[4]).abs().max()) <= 1.01 * bound + 1e-6


def test_zero_init_reduces_to_full_batch_descent_on_biases(rng: np.random.Generator) -> None:
    # Zero factors get zero gradients, so only the biases learn; with one full batch per
    # epoch the fit is plain gradient descent, written out here by hand.
    frame = synthetic_frame(rng, n_users=10, n_items=7, density=0.6)
    data = TrainingData.from_frame(frame)
    lr, reg, decay, epochs = 0.02, 0.05, 0.9, 4
    model = SVDPlusPlus(
        init_std=0.0,
        batch_size=10_000,
        learning_rate=lr,
        reg=reg,
        learning_rate_decay=decay,
        epochs=epochs,
        device="cpu",
    ).fit(data, show_progress=False)
    assert data.rating is not None
    r = data.rating.astype(np.float64) - data.rating.astype(np.float64).mean()
    bu, bi = np.zeros(data.n_users), np.zeros(data.n_items)
    for epoch in range(epochs):
        step = lr * decay**epoch
        e = r - bu[data.user_idx] - bi[data.item_idx]
        gu = np.bincount(data.user_idx, e - reg * bu[data.user_idx], data.n_users)
        gi = np.bincount(data.item_idx, e - reg * bi[data.item_idx], data.n_items)
        bu, bi = bu + step * gu, bi + step * gi
    m = learned(model)
    np.testing.assert_allclose(m.user_bias, bu, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.item_bias, bi, rtol=1e-4, atol=1e-6)
    assert not m.user_emb.any() and not m.implicit_emb.any()
    np.testing.assert_allclose(
        [h["learning_rate"] for h in model.history_], lr * decay ** np.arange(epochs)
    )


def test_a_popular_items_bias_takes_a_bounded_step() -> None:
    # #14: 600 ratings of one item in one batch sum to a step of lr * 600 = 12 times the
    # mean error in plain minibatch SGD; the bound makes it 1 / _STEP_BOUND of it.
    frame = pd.DataFrame({"user_id": np.arange(600), "item_id": 0, "rating": 1.0})
    data = TrainingData.from_frame(frame)
    model = SVDPlusPlus(batch_size=10_000, reg=0.0, embedding_dim=2, device="cpu")
    zeros = [torch.zeros(600), torch.zeros(1), torch.zeros(600, 2), torch.zeros(1, 2)]
    params = _Params(*zeros, torch.zeros(1, 2))
    model._train_epoch(
        params,
        _ImplicitLists(data.user_items, torch.device("cpu")),
        torch.from_numpy(data.user_idx),
        torch.from_numpy(data.item_idx),
        torch.ones(600),  # every rating 1 above the mean the model predicts
        torch.ones(1, 1),
        torch.arange(600),
        0.02,
    )
    torch.testing.assert_close(params.item_bias, torch.tensor([1 / _STEP_BOUND]))
    torch.testing.assert_close(params.user_bias, torch.full((600,), 0.02))  # one rating each


def review_log(rng: np.random.Generator, n_users: int = 3000, n_items: int = 6) -> TrainingData:
    """One rating per user, Zipf-popular items, most ratings 5 (a product-review log)."""
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.5
    items = rng.choice(n_items, n_users, p=popularity / popularity.sum())
    stars = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n_users, p=[0.08, 0.04, 0.06, 0.17, 0.65])
    frame = pd.DataFrame({"user_id": np.arange(n_users), "item_id": items, "rating": stars})
    return TrainingData.from_frame(frame)


def test_one_rating_per_user_skewed_log_stays_finite(rng: np.random.Generator) -> None:
    # #14: on such a log the default SVD++ diverged within a few epochs (one item holds
    # more than half of every batch). Now it trains and fits no worse than the mean.
    data = review_log(rng)
    assert data.rating is not None
    model = SVDPlusPlus(device="cpu", seed=0).fit(data, show_progress=False)
    losses = [h["loss"] for h in model.history_]
    assert len(losses) == SVDPlusPlusConfig().epochs and all(map(math.isfinite, losses))
    assert np.isfinite(model.score(data.user_idx, data.item_idx)).all()
    assert model.history_[-1]["train_rmse"] <= float(np.std(data.rating))


# ---------------------------------------------------------------------- predictions
def test_learns_beyond_the_biases(rated: tuple[TrainingData, TrainingData]) -> None:
    train, test = rated
    assert test.rating is not None and train.rating is not None
    full = SVDPlusPlus(embedding_dim=4, epochs=20, batch_size=256, device="cpu", seed=1)
    biases = SVDPlusPlus(init_std=0.0, epochs=20, batch_size=256, device="cpu", seed=1)
    rmse = {}
    for name, model in (("svdpp", full), ("biases", biases)):
        model.fit(train, show_progress=False)
        pred = model.predict_rating(test.user_idx, test.item_idx)
        rmse[name] = float(np.sqrt(np.mean((pred - test.rating) ** 2)))
    global_mean = float(np.sqrt(np.mean((test.rating - train.rating.mean()) ** 2)))
    assert rmse["biases"] < 0.95 * global_mean, rmse
    assert rmse["svdpp"] < 0.85 * rmse["biases"], rmse


def test_predict_rating_is_eq15_clipped(fitted: SVDPlusPlus) -> None:
    users = np.array([0, 3, 3, 10, 40])
    items = np.array([1, 0, 7, 2, 5])
    want = reference_predictions(fitted, users, items)
    got = fitted.predict_rating(users, items)
    assert got.dtype == np.float32 and got.shape == (5,)
    lo, hi = learned(fitted).rating_range
    np.testing.assert_allclose(got, np.clip(want, lo, hi), rtol=1e-5)
    # score() is the same prediction, unclipped (ranks items beyond the scale apart)
    np.testing.assert_allclose(fitted.score(users, items), want, rtol=1e-5)


def test_predictions_are_clipped_to_the_training_scale(fitted: SVDPlusPlus) -> None:
    users = np.repeat(np.arange(fitted.n_users), fitted.n_items)
    items = np.tile(np.arange(fitted.n_items), fitted.n_users)
    raw = fitted.score(users, items)
    got = fitted.predict_rating(users, items)
    assert raw.min() < 1.0 or raw.max() > 5.0, "no prediction left the scale: weak test data"
    assert got.min() >= 1.0 and got.max() <= 5.0
    np.testing.assert_allclose(got, np.clip(raw, 1.0, 5.0), rtol=1e-6)


def test_unknown_users_and_items_fall_back_to_biases(fitted: SVDPlusPlus) -> None:
    m = learned(fitted)
    mu = m.mu
    n_users, n_items = fitted.n_users, fitted.n_items
    got = fitted.predict_rating([-1, n_users, 2, 2, -1], [3, 3, -1, n_items, n_items + 9])
    np.testing.assert_allclose(
        got,
        np.clip(
            [
                mu + m.item_bias[3],
                mu + m.item_bias[3],
                mu + m.user_bias[2],
                mu + m.user_bias[2],
                mu,
            ],
            1,
            5,
        ),
        rtol=1e-6,
    )
    assert np.isnan(fitted.score([-1, 2], [3, -1])).all()


def test_predict_rating_shape_mismatch_raises(fitted: SVDPlusPlus) -> None:
    with pytest.raises(DataError, match="must be equal"):
        fitted.predict_rating([0, 1], [0])


def test_embeddings_reproduce_the_scores(fitted: SVDPlusPlus) -> None:
    users, items = fitted.user_factors, fitted.item_factors
    d = fitted.config.embedding_dim  # type: ignore[attr-defined]
    assert users.shape == (fitted.n_users, d + 2) and users.dtype == np.float32
    assert items.shape == (fitted.n_items, d + 2) and items.dtype == np.float32
    all_users = np.arange(fitted.n_users)
    np.testing.assert_allclose(users @ items.T, fitted._score_users(all_users), atol=1e-5)


def test_users_and_items_without_ratings_keep_zero_factors() -> None:
    frame = pd.DataFrame(
        {"user_id": [0, 0, 1, 1, 2], "item_id": [0, 1, 1, 2, 0], "rating": [5, 3, 4, 2, 1.0]}
    )
    items = pd.DataFrame({"item_id": [0, 1, 2, 3]})  # item 3 is in the catalogue only
    data = TrainingData.from_frame(frame, items=items)
    model = SVDPlusPlus(embedding_dim=2, epochs=3, device="cpu").fit(data, show_progress=False)
    m = learned(model)
    assert not m.item_emb[3].any() and not m.implicit_emb[3].any()
    assert m.item_bias[3] == 0.0
    assert model.predict_rating([0], [3])[0] == pytest.approx(m.mu + m.user_bias[0])


# ---------------------------------------------------------------------- training loop
def test_training_curve_and_callback(rated: tuple[TrainingData, TrainingData]) -> None:
    train, valid = rated
    seen: list[tuple[int, dict[str, float]]] = []
    model = SVDPlusPlus(embedding_dim=4, epochs=8, batch_size=256, device="cpu")
    model.fit(
        train,
        show_progress=False,
        validation=valid,
        on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)),
    )
    assert [e for e, _ in seen] == list(range(1, 9))
    assert [m for _, m in seen] == model.history_
    keys = {"epoch", "loss", "train_rmse", "val_rmse", "learning_rate", "seconds"}
    assert all(set(h) == keys for h in model.history_)
    losses = [h["loss"] for h in model.history_]
    assert losses[-1] < 0.8 * losses[0]
    assert model.history_[-1]["val_rmse"] < model.history_[0]["val_rmse"]


def test_early_stopping_keeps_the_best_epoch(rated: tuple[TrainingData, TrainingData]) -> None:
    train, valid = rated
    assert valid.rating is not None
    # A large step with no regularisation overfits quickly, so validation RMSE turns up.
    model = SVDPlusPlus(
        embedding_dim=16,
        epochs=60,
        batch_size=64,
        learning_rate=0.05,
        learning_rate_decay=1.0,
        reg=0.0,
        patience=2,
        device="cpu",
    ).fit(train, validation=valid, show_progress=False)
    val = [h["val_rmse"] for h in model.history_]
    best = int(np.argmin(val))
    assert len(val) == best + 3 < 60, val
    pred = np.clip(model.predict_rating(valid.user_idx, valid.item_idx), 1, 5)
    assert float(np.sqrt(np.mean((pred - valid.rating) ** 2))) == pytest.approx(val[best], 1e-5)


def test_same_seed_same_parameters_other_seed_differs(
    rated: tuple[TrainingData, TrainingData],
) -> None:
    train, _ = rated
    params: dict[str, Any] = {"embedding_dim": 4, "epochs": 3, "batch_size": 128, "device": "cpu"}
    a = SVDPlusPlus(seed=5, **params).fit(train, show_progress=False)
    b = SVDPlusPlus(seed=5, **params).fit(train, show_progress=False)
    c = SVDPlusPlus(seed=6, **params).fit(train, show_progress=False)
    for field in SVDPlusPlus._state_fields:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert not np.array_equal(learned(a).item_emb, learned(c).item_emb)


def test_save_load_keeps_history_and_predictions(fitted: SVDPlusPlus, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "history.json").read_text()) == fitted.history_
    loaded = SVDPlusPlus.load(tmp_path / "m")
    assert loaded.history_ == fitted.history_
    users, items = np.arange(-1, 12), np.arange(13)
    np.testing.assert_array_equal(
        loaded.predict_rating(users, items), fitted.predict_rating(users, items)
    )
    (tmp_path / "m" / "history.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"history\.json"):
        SVDPlusPlus.load(tmp_path / "m")


# ---------------------------------------------------------------------- fold-in
def test_fold_in_without_ratings_uses_the_implicit_term_only(fitted: SVDPlusPlus) -> None:
    m = learned(fitted)
    hist = m.user_items[[4, 9]]
    vectors = fitted.fold_in_user_factors(hist)
    d = fitted.config.embedding_dim  # type: ignore[attr-defined]
    n_u = np.diff(hist.indptr)
    implicit = np.stack([m.implicit_emb[hist[r].indices].sum(0) / np.sqrt(n_u[r]) for r in (0, 1)])
    np.testing.assert_allclose(vectors[:, :d], implicit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vectors[:, d], m.mu)  # b_u = 0
    # Stored values do not matter without use_ratings.
    scaled = fitted.fold_in_user_factors(hist * 3.0)
    np.testing.assert_array_equal(vectors, scaled)


def test_fold_in_with_ratings_reproduces_fitted() -> None:
    data = block_dataset(noise=0.5, seed=0)
    model = SVDPlusPlus(**CONTRACT_PARAMS).fit(data, show_progress=False)
    ratings = sp.csr_matrix(
        (data.rating, (data.user_idx, data.item_idx)), shape=(data.n_users, data.n_items)
    )
    k = 5
    fitted_items, _ = model.recommend(np.arange(data.n_users), k=k)
    items, _ = model.recommend_for_history(ratings, k=k, use_ratings=True)
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(items, fitted_items, strict=True)])
    assert overlap >= 0.9, overlap  # measured 0.99
    # The solved user vectors are close to the learned p_u (SGD approximates this ridge).
    d = CONTRACT_PARAMS["embedding_dim"]
    solved = model.fold_in_user_factors(ratings, use_ratings=True)
    learned = model.user_factors
    err = np.linalg.norm(solved[:, :d] - learned[:, :d]) / np.linalg.norm(learned[:, :d])
    assert err < 0.35, err


def test_fold_in_with_ratings_rejects_duplicates_and_bad_shapes(fitted: SVDPlusPlus) -> None:
    n_items = fitted.n_items
    # (data, indices, indptr) keeps the repeated column; the COO form would sum it away
    dup = sp.csr_matrix((np.array([4.0, 5.0]), np.array([2, 2]), np.array([0, 2])), (1, n_items))
    with pytest.raises(DataError, match="more than once"):
        fitted.fold_in_user_factors(dup, use_ratings=True)
    with pytest.raises(DataError, match="columns"):
        fitted.recommend_for_history(sp.csr_matrix((1, n_items + 1)), k=3)
    nan = sp.csr_matrix((np.array([np.nan]), np.array([1]), np.array([0, 1])), (1, n_items))
    with pytest.raises(DataError, match="NaN"):
        fitted.recommend_for_history(nan, k=3, use_ratings=True)


def test_fold_in_of_an_empty_history_ranks_by_item_bias(fitted: SVDPlusPlus) -> None:
    m = learned(fitted)
    empty = sp.csr_matrix((1, fitted.n_items), dtype=np.float32)
    for use_ratings in (False, True):
        items, scores = fitted.recommend_for_history(empty, k=5, use_ratings=use_ratings)
        np.testing.assert_array_equal(items[0], np.argsort(-m.item_bias, kind="stable")[:5])
        np.testing.assert_allclose(scores[0], m.mu + np.sort(m.item_bias)[::-1][:5], rtol=1e-6)


# ---------------------------------------------------------------------- torch helpers
def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    for bad in ("gpu", "cuda:", "CPU", ""):
        with pytest.raises(ConfigError):
            resolve_device(bad)


def test_seeded_generator_is_repeatable() -> None:
    a = torch.randn(5, generator=seeded_generator(11))
    b = torch.randn(5, generator=seeded_generator(11))
    c = torch.randn(5, generator=seeded_generator(12))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    torch.randn(3, generator=seeded_generator(-4))  # negative seeds are folded, not refused


# ---------------------------------------------------------------------- gpu, real data
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(rated: tuple[TrainingData, TrainingData]) -> None:
    train, test = rated
    params: dict[str, Any] = {"embedding_dim": 4, "epochs": 10, "batch_size": 256, "seed": 3}
    cpu = SVDPlusPlus(device="cpu", **params).fit(train, show_progress=False)
    gpu = SVDPlusPlus(device="cuda", **params).fit(train, show_progress=False)
    # Same initial weights and batch order; only the float summation order differs.
    np.testing.assert_allclose(
        gpu.predict_rating(test.user_idx, test.item_idx),
        cpu.predict_rating(test.user_idx, test.item_idx),
        atol=2e-3,
    )


@pytest.mark.slow
@pytest.mark.realdata
def test_movielens_rating_protocol_beats_surprise_figure() -> None:
    from recsys.data import load_dataset, random_split
    from recsys.eval import rating_metrics

    parts = random_split(load_dataset("ml-100k").interactions, 0.2, seed=42)
    train = TrainingData.from_frame(parts.train)
    model = SVDPlusPlus(device="cpu", seed=0).fit(train, show_progress=False)
    users = train.user_map.to_index(parts.test["user_id"].to_numpy())
    items = train.item_map.to_index(parts.test["item_id"].to_numpy())
    pred = model.predict_rating(users, items)
    metrics = rating_metrics(parts.test["rating"].to_numpy(), pred, clip=(1, 5))
    # Surprise's SVD++ (20 factors, 20 epochs) scores 0.9259 on this split (BENCHMARKS.md).
    assert metrics["rmse"] < 0.9259, metrics


@pytest.mark.slow
def test_registry_and_a_fitted_model_work_without_importing_torch(
    fitted: SVDPlusPlus, tmp_path: Path
) -> None:
    # torch loads only to train: the CLI, the server and scoring of a saved model skip it.
    import os
    import subprocess
    import sys

    fitted.save(tmp_path / "m")
    code = (
        "import sys\n"
        "from recsys.models import SVDPlusPlus\n"
        f"m = SVDPlusPlus.load({str(tmp_path / 'm')!r})\n"
        "m.recommend([0, 1], k=3); m.predict_rating([0], [1]); m.user_factors\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    root = Path(__file__).resolve().parents[3]
    env = dict(os.environ, PYTHONPATH=str(root))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)
