"""ItemKNN: the shared contract plus cosine similarities computed by hand.

The hand matrix has 3 users and 4 items::

          i0 i1 i2 i3
    u0  [  1  1  0  0 ]
    u1  [  1  0  1  0 ]
    u2  [  1  1  1  1 ]

Item columns have norms sqrt(3), sqrt(2), sqrt(2), 1 and co-occurrence counts
(0,1)=2, (0,2)=2, (0,3)=1, (1,2)=1, (1,3)=1, (2,3)=1, so the cosines are
2/sqrt(6), 2/sqrt(6), 1/sqrt(3), 1/2, 1/sqrt(2), 1/sqrt(2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.models import ItemKNN
from recsys.protocols import Recommender, SimilarItems
from recsys.testing import RecommenderContract
from recsys.types import TrainingData

R6, R3, R2 = np.sqrt(6.0), np.sqrt(3.0), np.sqrt(2.0)
COSINE = np.array(
    [
        [0.0, 2 / R6, 2 / R6, 1 / R3],
        [2 / R6, 0.0, 1 / 2, 1 / R2],
        [2 / R6, 1 / 2, 0.0, 1 / R2],
        [1 / R3, 1 / R2, 1 / R2, 0.0],
    ]
)
DOTS = np.array([[0, 2, 2, 1], [2, 0, 1, 1], [2, 1, 0, 1], [1, 1, 1, 0]], np.float64)
NORM_PRODUCT = np.outer([R3, R2, R2, 1.0], [R3, R2, R2, 1.0])


class TestItemKNNContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)

    def make_model(self) -> Recommender:
        return ItemKNN(n_neighbors=10, seed=0)


@pytest.fixture(scope="module")
def hand_data() -> TrainingData:
    frame = pd.DataFrame(
        {
            "user_id": [0, 0, 1, 1, 2, 2, 2, 2],
            "item_id": [0, 1, 0, 2, 0, 1, 2, 3],
        }
    )
    return TrainingData.from_frame(frame)


def _dense_similarity(model: ItemKNN) -> np.ndarray:
    assert model.similarity_ is not None
    return model.similarity_.toarray()


def test_cosine_similarity_by_hand(hand_data: TrainingData) -> None:
    model = ItemKNN().fit(hand_data, show_progress=False)
    sim = _dense_similarity(model)
    assert sim.dtype == np.float32
    np.testing.assert_allclose(sim, COSINE, rtol=1e-6)


def test_shrinkage_divides_by_norm_product_plus_shrinkage(hand_data: TrainingData) -> None:
    model = ItemKNN(shrinkage=2.0).fit(hand_data, show_progress=False)
    sim = _dense_similarity(model)
    expected = DOTS / (NORM_PRODUCT + 2.0)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(sim, expected, rtol=1e-6)
    # Shrinkage penalises pairs with little support: (i2, i3) co-occur once, (i0, i1) twice.
    kept = sim / np.where(COSINE > 0, COSINE, 1.0)
    assert kept[2, 3] < kept[0, 1] < 1.0


def test_n_neighbors_keeps_strongest_per_row_ties_by_index(hand_data: TrainingData) -> None:
    model = ItemKNN(n_neighbors=1).fit(hand_data, show_progress=False)
    sim = _dense_similarity(model)
    assert model.similarity_ is not None
    np.testing.assert_array_equal(np.diff(model.similarity_.indptr), [1, 1, 1, 1])
    # Row 0 ties i1/i2 at 2/sqrt(6) and row 3 ties i1/i2 at 1/sqrt(2): the lower index wins.
    np.testing.assert_array_equal(sim.argmax(axis=1), [1, 0, 0, 1])
    np.testing.assert_allclose(sim.max(axis=1), [2 / R6, 2 / R6, 2 / R6, 1 / R2], rtol=1e-6)


def test_recommend_sums_similarities_of_history(hand_data: TrainingData) -> None:
    model = ItemKNN().fit(hand_data, show_progress=False)
    items, scores = model.recommend([0], k=3)
    # u0 holds i0, i1: i2 scores 2/sqrt(6) + 1/2, i3 scores 1/sqrt(3) + 1/sqrt(2).
    np.testing.assert_array_equal(items, [[2, 3, -1]])
    np.testing.assert_allclose(scores[0, :2], [2 / R6 + 0.5, 1 / R3 + 1 / R2], rtol=1e-6)
    assert np.isnan(scores[0, 2])


def test_fold_in_of_a_new_history(hand_data: TrainingData) -> None:
    model = ItemKNN().fit(hand_data, show_progress=False)
    history = sp.csr_matrix(np.array([[0, 0, 0, 1]], np.float32))
    items, scores = model.recommend_for_history(history, k=3)
    np.testing.assert_array_equal(items, [[1, 2, 0]])
    np.testing.assert_allclose(scores, [[1 / R2, 1 / R2, 1 / R3]], rtol=1e-6)


def test_similar_items_by_hand(hand_data: TrainingData) -> None:
    model = ItemKNN().fit(hand_data, show_progress=False)
    assert isinstance(model, SimilarItems)
    items, sims = model.similar_items([0, 3], k=3)
    np.testing.assert_array_equal(items, [[1, 2, 3], [1, 2, 0]])
    np.testing.assert_allclose(sims, [[2 / R6, 2 / R6, 1 / R3], [1 / R2, 1 / R2, 1 / R3]])
    items, sims = model.similar_items([-1], k=2)
    np.testing.assert_array_equal(items, [[-1, -1]])
    assert np.isnan(sims).all()


def test_item_without_co_occurrence_has_no_neighbours() -> None:
    frame = pd.DataFrame({"user_id": [0, 0, 1], "item_id": ["a", "b", "c"]})
    model = ItemKNN().fit(TrainingData.from_frame(frame), show_progress=False)
    items, _ = model.similar_items([2], k=2)
    np.testing.assert_array_equal(items, [[-1, -1]])
    np.testing.assert_allclose(_dense_similarity(model)[0], [0, 1, 0], rtol=1e-6)


@pytest.mark.parametrize("params", [{"n_neighbors": 0}, {"shrinkage": -1.0}, {"similarity": "x"}])
def test_invalid_hyperparameters_raise(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ItemKNN(**params)  # type: ignore[arg-type]
