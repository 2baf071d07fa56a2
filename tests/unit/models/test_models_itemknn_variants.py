"""ItemKNN's similarity options: implicit's weightings, rating-based similarities, exact top-K.

The implicit-feedback similarities are checked against implicit's own item-item
recommenders (same weighting code path, every neighbour kept so ties cannot differ); the
rating-based ones by hand.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender

from recsys.errors import ConfigError, DataError
from recsys.models import ItemKNN, ItemKNNConfig
from recsys.models import knn as knn_module
from recsys.protocols import Recommender
from recsys.testing import RecommenderContract
from recsys.testing.datasets import block_dataset, block_labels
from recsys.types import TrainingData


class TestItemKNNTFIDFContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)

    def make_model(self) -> Recommender:
        return ItemKNN(n_neighbors=10, similarity="tfidf")


class TestItemKNNBM25Contract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)

    def make_model(self) -> Recommender:
        return ItemKNN(n_neighbors=10, similarity="bm25", bm25_k1=1.5, bm25_b=0.5)


class TestItemKNNAdjustedCosineContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    # Ratings are 4 or 5 inside a block: centred by each user's mean they are +-0.5 noise,
    # so the adjusted cosine learns little of the block structure on this data.
    min_block_precision = None

    def make_model(self) -> Recommender:
        return ItemKNN(n_neighbors=10, similarity="adjusted_cosine", shrinkage=1.0)


def _without_diagonal(m: sp.spmatrix) -> np.ndarray:
    dense = np.asarray(m.todense(), dtype=np.float64)
    np.fill_diagonal(dense, 0.0)
    return np.where(dense > 0, dense, 0.0)


@pytest.fixture(scope="module")
def noisy() -> TrainingData:
    return block_dataset(seed=7, noise=0.3)


@pytest.mark.parametrize(
    ("similarity", "peer"),
    [
        ("cosine", CosineRecommender(K=100, num_threads=1)),
        ("tfidf", TFIDFRecommender(K=100, num_threads=1)),
        ("bm25", BM25Recommender(K=100, K1=1.2, B=0.75, num_threads=1)),
    ],
)
def test_similarity_equals_implicit(
    noisy: TrainingData, similarity: str, peer: CosineRecommender
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit warns about its own COO hand-off
        peer.fit(noisy.user_items, show_progress=False)
    model = ItemKNN(n_neighbors=100, similarity=similarity).fit(noisy, show_progress=False)
    assert model.similarity_ is not None
    np.testing.assert_allclose(
        model.similarity_.toarray(), _without_diagonal(peer.similarity), rtol=1e-5, atol=1e-6
    )


@pytest.fixture(scope="module")
def rated() -> TrainingData:
    """Ratings (rows users, columns items; 0 = missing)::

    u0 [5 3 . .]   mean 4
    u1 [4 . 2 .]   mean 3
    u2 [5 1 3 3]   mean 3
    u3 [. 2 . 4]   mean 3
    """
    frame = pd.DataFrame(
        {
            "user_id": [0, 0, 1, 1, 2, 2, 2, 2, 3, 3],
            "item_id": [0, 1, 0, 2, 0, 1, 2, 3, 1, 3],
            "rating": [5.0, 3.0, 4.0, 2.0, 5.0, 1.0, 3.0, 3.0, 2.0, 4.0],
        }
    )
    return TrainingData.from_frame(frame)


RATINGS = np.array([[5, 3, 0, 0], [4, 0, 2, 0], [5, 1, 3, 3], [0, 2, 0, 4]], np.float64)


def _cosine_of_columns(centred: np.ndarray, shrinkage: float = 0.0) -> np.ndarray:
    norms = np.linalg.norm(centred, axis=0)
    sims = centred.T @ centred / (np.outer(norms, norms) + shrinkage)
    np.fill_diagonal(sims, 0.0)
    return np.where(sims > 0, sims, 0.0)


def test_adjusted_cosine_centres_by_user_mean(rated: TrainingData) -> None:
    observed = RATINGS > 0
    user_means = RATINGS.sum(axis=1) / observed.sum(axis=1)
    centred = np.where(observed, RATINGS - user_means[:, None], 0.0)
    model = ItemKNN(similarity="adjusted_cosine").fit(rated, show_progress=False)
    assert model.similarity_ is not None
    np.testing.assert_allclose(model.similarity_.toarray(), _cosine_of_columns(centred), atol=1e-6)


def test_pearson_centres_by_item_mean_and_shrinks(rated: TrainingData) -> None:
    observed = RATINGS > 0
    item_means = RATINGS.sum(axis=0) / observed.sum(axis=0)
    centred = np.where(observed, RATINGS - item_means[None, :], 0.0)
    model = ItemKNN(similarity="pearson", shrinkage=2.0).fit(rated, show_progress=False)
    assert model.similarity_ is not None
    expected = _cosine_of_columns(centred, shrinkage=2.0)
    assert (expected > 0).sum() >= 2  # the check is not vacuous
    np.testing.assert_allclose(model.similarity_.toarray(), expected, atol=1e-6)


def test_repeated_ratings_are_averaged() -> None:
    frame = pd.DataFrame(
        {
            "user_id": [0, 0, 0, 1, 1, 2, 2],
            "item_id": [0, 0, 1, 0, 1, 0, 1],
            "rating": [5.0, 3.0, 2.0, 1.0, 5.0, 4.0, 2.0],  # u0 rates i0 twice: mean 4
        }
    )
    once = frame.drop(index=1).assign(rating=[4.0, 2.0, 1.0, 5.0, 4.0, 2.0])
    a = ItemKNN(similarity="pearson").fit(TrainingData.from_frame(frame), show_progress=False)
    b = ItemKNN(similarity="pearson").fit(TrainingData.from_frame(once), show_progress=False)
    assert a.similarity_ is not None and b.similarity_ is not None
    np.testing.assert_allclose(a.similarity_.toarray(), b.similarity_.toarray(), atol=1e-7)


@pytest.mark.parametrize("similarity", ["pearson", "adjusted_cosine"])
def test_rating_similarities_need_ratings(similarity: str) -> None:
    data = block_dataset(with_ratings=False)
    with pytest.raises(DataError, match=r"needs explicit ratings.*'cosine'"):
        ItemKNN(similarity=similarity).fit(data, show_progress=False)


@pytest.mark.parametrize("similarity", ["cosine", "tfidf", "bm25", "pearson", "adjusted_cosine"])
def test_sparse_blocks_equal_the_dense_product(
    similarity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = block_dataset(seed=8, noise=0.4)
    shrinkage = 0.0 if similarity == "bm25" else 3.0
    dense = ItemKNN(n_neighbors=4, similarity=similarity, shrinkage=shrinkage)
    dense.fit(data, show_progress=False)
    monkeypatch.setattr(knn_module, "_DENSE_GRAM_ENTRIES", 0)  # force sparse products
    monkeypatch.setattr(knn_module, "_SIM_BLOCK_BYTES", 4 * 24 * 5)  # blocks of 5 items
    blocked = ItemKNN(n_neighbors=4, similarity=similarity, shrinkage=shrinkage)
    blocked.fit(data, show_progress=False)
    assert dense.similarity_ is not None and blocked.similarity_ is not None
    np.testing.assert_array_equal(dense.similarity_.indices, blocked.similarity_.indices)
    np.testing.assert_allclose(dense.similarity_.data, blocked.similarity_.data, rtol=1e-5)


def test_top_k_ties_go_to_the_lower_index() -> None:
    sims = np.array([[0.0, 2, 1, 2, 2, 0.5], [3, 0, 3, 3, -1, 3]], np.float32)
    rows, cols, vals = knn_module._top_neighbours(sims.copy(), 2, np.array([0, 1]))
    np.testing.assert_array_equal(rows, [0, 0, 1, 1])
    assert set(cols[:2].tolist()) == {1, 3} and set(cols[2:].tolist()) == {0, 2}
    np.testing.assert_array_equal(vals, [2, 2, 3, 3])
    # fewer positive entries than k: only those are kept, never zero or negative ones
    rows, cols, _ = knn_module._top_neighbours(np.array([[0.0, -1, 2, 0]], np.float32), 3, None)
    np.testing.assert_array_equal(cols, [2])


@pytest.mark.parametrize("similarity", ["tfidf", "bm25"])
def test_weighted_similarities_find_the_blocks(similarity: str) -> None:
    data = block_dataset(seed=9, noise=0.25)
    model = ItemKNN(n_neighbors=10, similarity=similarity).fit(data, show_progress=False)
    user_block, item_block = block_labels(data)
    items, _ = model.recommend(np.arange(data.n_users), k=2)
    assert np.mean(item_block[items] == user_block[:, None]) >= 0.8


def test_item_without_neighbours_gives_popularity() -> None:
    frame = pd.DataFrame({"user_id": [0, 0, 1, 1, 2, 3], "item_id": [0, 1, 0, 1, 2, 1]})
    model = ItemKNN().fit(TrainingData.from_frame(frame), show_progress=False)
    items, scores = model.recommend([2], k=2)  # u2 holds only i2, which co-occurs with nothing
    np.testing.assert_array_equal(items, [[1, 0]])
    np.testing.assert_array_equal(scores, [[3, 2]])


def test_defaults_are_the_tuned_ones() -> None:
    cfg = ItemKNNConfig()  # benchmarks/results/topn_classical.json, section "tuning"
    assert (cfg.n_neighbors, cfg.similarity, cfg.shrinkage) == (100, "cosine", 0.0)


def test_bm25_rejects_shrinkage() -> None:
    with pytest.raises(ConfigError, match="bm25"):
        ItemKNN(similarity="bm25", shrinkage=1.0)
