"""UserKNN: the shared contract plus similarities and scores computed by hand.

The hand matrix has 4 users and 4 items::

          i0 i1 i2 i3
    u0  [  1  1  0  0 ]
    u1  [  1  0  1  0 ]
    u2  [  1  1  1  1 ]
    u3  [  0  0  0  1 ]

User cosines: (u0,u1) = 1/2, (u0,u2) = (u1,u2) = 1/sqrt(2), (u2,u3) = 1/2, the rest 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError
from recsys.models import MODEL_REGISTRY, UserKNN, UserKNNConfig
from recsys.models import knn as knn_module
from recsys.protocols import Recommender
from recsys.testing import RecommenderContract
from recsys.testing.datasets import block_dataset, block_labels
from recsys.types import TrainingData

R2 = np.sqrt(2.0)


class TestUserKNNContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    # A known user is never their own neighbour; their history folded in finds them (see
    # test_fold_in_of_own_history_needs_one_more_neighbour for the exact statement).
    fold_in_min_overlap = 0.9

    def make_model(self) -> Recommender:
        return UserKNN(n_neighbors=5)


class TestUserKNNBM25Contract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    fold_in_min_overlap = 0.9

    def make_model(self) -> Recommender:
        return UserKNN(n_neighbors=8, similarity="bm25")


@pytest.fixture(scope="module")
def hand_data() -> TrainingData:
    frame = pd.DataFrame(
        {
            "user_id": [0, 0, 1, 1, 2, 2, 2, 2, 3],
            "item_id": [0, 1, 0, 2, 0, 1, 2, 3, 3],
            "rating": [5.0, 3.0, 4.0, 2.0, 5.0, 1.0, 3.0, 3.0, 4.0],
        }
    )
    return TrainingData.from_frame(frame)


def test_registered_under_userknn() -> None:
    assert MODEL_REGISTRY["userknn"] is UserKNN


def test_scores_sum_neighbour_similarities(hand_data: TrainingData) -> None:
    model = UserKNN(shrinkage=0.0).fit(hand_data, show_progress=False)
    items, scores = model.recommend([0, 3], k=3)
    # u0's neighbours: u1 (1/2) holds i2; u2 (1/sqrt 2) holds i2, i3.
    np.testing.assert_array_equal(items[0], [2, 3, -1])
    np.testing.assert_allclose(scores[0, :2], [0.5 + 1 / R2, 1 / R2], rtol=1e-6)
    # u3's only neighbour is u2 (1/2).
    np.testing.assert_array_equal(items[1], [0, 1, 2])
    np.testing.assert_allclose(scores[1], [0.5, 0.5, 0.5], rtol=1e-6)


def test_n_neighbors_keeps_the_strongest(hand_data: TrainingData) -> None:
    model = UserKNN(n_neighbors=1, shrinkage=0.0).fit(hand_data, show_progress=False)
    items, scores = model.recommend([0], k=2)
    np.testing.assert_array_equal(items, [[2, 3]])  # only u2 is left: a tie, lower index first
    np.testing.assert_allclose(scores, [[1 / R2, 1 / R2]], rtol=1e-6)


def test_known_user_is_not_its_own_neighbour(hand_data: TrainingData) -> None:
    model = UserKNN(n_neighbors=1, shrinkage=0.0).fit(hand_data, show_progress=False)
    items, scores = model.recommend([2], k=4, exclude_seen=False)
    # u2's strongest other user is u0 (1/sqrt 2, tie with u1 broken by index): i0, i1.
    np.testing.assert_array_equal(items[0, :2], [0, 1])
    np.testing.assert_allclose(scores[0, :2], [1 / R2, 1 / R2], rtol=1e-6)


def test_shrinkage_damps_short_vectors(hand_data: TrainingData) -> None:
    model = UserKNN(shrinkage=2.0).fit(hand_data, show_progress=False)
    items, scores = model.recommend([0], k=2)
    # (u0,u1): 1 / (sqrt2 sqrt2 + 2) = 1/4; (u0,u2): 2 / (sqrt2 * 2 + 2)
    np.testing.assert_array_equal(items, [[2, 3]])
    expected = 2 / (2 * R2 + 2)
    np.testing.assert_allclose(scores, [[0.25 + expected, expected]], rtol=1e-6)


def test_fold_in_of_a_new_history(hand_data: TrainingData) -> None:
    model = UserKNN(shrinkage=0.0).fit(hand_data, show_progress=False)
    history = sp.csr_matrix(np.array([[0, 0, 1, 1]], np.float32))
    items, scores = model.recommend_for_history(history, k=2)
    # cosines: u1 1/2, u2 1/sqrt 2, u3 1/sqrt 2
    np.testing.assert_array_equal(items, [[0, 1]])
    np.testing.assert_allclose(scores, [[0.5 + 1 / R2, 1 / R2]], rtol=1e-6)


def test_fold_in_of_own_history_needs_one_more_neighbour() -> None:
    """Folded in, a training user finds itself; it only holds seen items, so it costs a slot."""
    data = block_dataset(seed=2, noise=0.3)
    fitted = UserKNN(n_neighbors=4).fit(data, show_progress=False)
    folded = UserKNN(n_neighbors=5).fit(data, show_progress=False)
    a_items, a_scores = fitted.recommend(np.arange(data.n_users), k=6)
    b_items, b_scores = folded.recommend_for_history(data.user_items, k=6)
    np.testing.assert_array_equal(a_items, b_items)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-5)


def test_pearson_by_hand(hand_data: TrainingData) -> None:
    """Centred by each user's mean: u0 [1,-1,.,.], u1 [1,.,-1,.], u2 [2,-2,0,0], u3 [.,.,.,0].

    Pearson: (u0,u1) = 1/2, (u0,u2) = 1, (u1,u2) = 1/2; u3 has zero variance (similarity 0).
    """
    model = UserKNN(similarity="pearson", shrinkage=0.0).fit(hand_data, show_progress=False)
    items, scores = model.recommend([0], k=2)
    np.testing.assert_array_equal(items, [[2, 3]])
    np.testing.assert_allclose(scores, [[1.5, 1.0]], rtol=1e-6)
    # fold-in reads history values as ratings: u0's own ratings give u0's neighbours
    history = sp.csr_matrix(np.array([[5, 3, 0, 0]], np.float32))
    f_items, f_scores = model.recommend_for_history(history, k=2)
    np.testing.assert_array_equal(f_items, items)
    np.testing.assert_allclose(f_scores, scores, rtol=1e-6)


def test_adjusted_cosine_centres_by_item_mean(hand_data: TrainingData) -> None:
    model = UserKNN(similarity="adjusted_cosine", shrinkage=0.0).fit(hand_data, show_progress=False)
    item_means = np.array([14 / 3, 2.0, 2.5, 3.5])
    assert model.item_stats_ is not None and model.user_norms_ is not None
    np.testing.assert_allclose(model.item_stats_, item_means, rtol=1e-6)
    ratings = np.array([[5, 3, 0, 0], [4, 0, 2, 0], [5, 1, 3, 3], [0, 0, 0, 4]], np.float64)
    centred = np.where(ratings > 0, ratings - item_means, 0.0)
    np.testing.assert_allclose(model.user_norms_, np.linalg.norm(centred, axis=1), rtol=1e-5)


def test_rating_similarity_without_ratings_raises() -> None:
    frame = pd.DataFrame({"user_id": [0, 0, 1], "item_id": [0, 1, 0]})
    with pytest.raises(DataError, match="needs explicit ratings"):
        UserKNN(similarity="pearson").fit(TrainingData.from_frame(frame), show_progress=False)


def test_results_do_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    data = block_dataset(seed=4, noise=0.3)
    model = UserKNN(n_neighbors=6).fit(data, show_progress=False)
    users = np.arange(data.n_users)
    expected = model.recommend(users, k=5)
    # 200 bytes: one user (a 54-float row of similarities and scores) per block
    monkeypatch.setattr(knn_module, "_SIM_BLOCK_BYTES", 200)
    assert model._block_size() == 1
    got = model.recommend(users, k=5)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)


def test_negative_correlation_is_no_neighbour() -> None:
    """u0 and u1 rate i0, i1 in opposite ways (Pearson -1); u2 agrees with u0 (+1)."""
    frame = pd.DataFrame(
        {
            "user_id": [0, 0, 1, 1, 1, 2, 2, 2],
            "item_id": [0, 1, 0, 1, 2, 0, 1, 3],
            "rating": [5.0, 1.0, 1.0, 5.0, 3.0, 4.0, 2.0, 3.0],
        }
    )
    model = UserKNN(similarity="pearson", shrinkage=0.0)
    model.fit(TrainingData.from_frame(frame), show_progress=False)
    items, scores = model.recommend([0], k=2)
    # only u2 (Pearson 1) counts, for i3; i2 of the anti-correlated u1 gets nothing
    np.testing.assert_array_equal(items, [[3, 2]])
    np.testing.assert_allclose(scores, [[1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("similarity", ["cosine", "tfidf", "bm25"])
def test_every_implicit_similarity_finds_the_blocks(similarity: str) -> None:
    data = block_dataset(seed=5, noise=0.25)
    model = UserKNN(n_neighbors=8, similarity=similarity).fit(data, show_progress=False)
    user_block, item_block = block_labels(data)
    items, _ = model.recommend(np.arange(data.n_users), k=2)
    assert np.mean(item_block[items] == user_block[:, None]) >= 0.8


def test_user_with_nobody_similar_gets_popularity() -> None:
    frame = pd.DataFrame({"user_id": [0, 0, 1, 1, 2], "item_id": [0, 1, 0, 1, 2]})
    model = UserKNN().fit(TrainingData.from_frame(frame), show_progress=False)
    items, scores = model.recommend([2], k=2)
    np.testing.assert_array_equal(items, [[0, 1]])  # popularity: i0, i1 have two users each
    np.testing.assert_array_equal(scores, [[2, 2]])


@pytest.mark.parametrize(
    "params",
    [{"n_neighbors": 0}, {"similarity": "jaccard"}, {"similarity": "bm25", "shrinkage": 5.0}],
)
def test_invalid_hyperparameters_raise(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        UserKNN(**params)  # type: ignore[arg-type]


def test_defaults_are_the_tuned_ones() -> None:
    cfg = UserKNNConfig()  # benchmarks/results/topn_classical.json, section "tuning"
    assert (cfg.n_neighbors, cfg.similarity, cfg.shrinkage) == (50, "cosine", 50.0)
    assert UserKNNConfig(similarity="bm25").shrinkage == 0.0  # BM25 has no norms to shrink
