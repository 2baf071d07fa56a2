"""Popular: the shared contract plus hand-counted popularity on a tiny matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.models import Popular
from recsys.protocols import Recommender
from recsys.testing import RecommenderContract
from recsys.types import TrainingData


class TestPopularContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    min_block_precision = None  # not personalised: it cannot find a user's block

    def make_model(self) -> Recommender:
        return Popular(seed=0)


@pytest.fixture(scope="module")
def hand_data() -> TrainingData:
    """4 users, 5 items; distinct-user counts are i0=1, i1=3, i2=2, i3=1, i4=0.

    ``u0`` lists ``i1`` twice, which must count once; ``i4`` is a catalogue item with no
    interactions.
    """
    frame = pd.DataFrame(
        {
            "user_id": ["u0", "u0", "u0", "u1", "u1", "u2", "u2", "u3"],
            "item_id": ["i0", "i1", "i1", "i1", "i2", "i1", "i2", "i3"],
        }
    )
    items = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3", "i4"]})
    return TrainingData.from_frame(frame, items=items)


@pytest.fixture(scope="module")
def hand_model(hand_data: TrainingData) -> Popular:
    return Popular().fit(hand_data, show_progress=False)


def test_popularity_counts_distinct_users(hand_model: Popular) -> None:
    assert hand_model.item_popularity_ is not None
    np.testing.assert_array_equal(hand_model.item_popularity_, [1, 3, 2, 1, 0])


def test_unknown_user_gets_popularity_order_ties_by_index(hand_model: Popular) -> None:
    items, scores = hand_model.recommend([-1], k=5)
    np.testing.assert_array_equal(items, [[1, 2, 0, 3, 4]])
    np.testing.assert_array_equal(scores, [[3, 2, 1, 1, 0]])


def test_known_users_get_popularity_minus_seen(hand_model: Popular) -> None:
    items, scores = hand_model.recommend([0, 3], k=3)
    np.testing.assert_array_equal(items, [[2, 3, 4], [1, 2, 0]])
    np.testing.assert_array_equal(scores, [[2, 1, 0], [3, 2, 1]])
    items, _ = hand_model.recommend([0, 3], k=5)
    np.testing.assert_array_equal(items, [[2, 3, 4, -1, -1], [1, 2, 0, 4, -1]])


def test_without_exclusion_every_user_gets_the_same_list(hand_model: Popular) -> None:
    items, _ = hand_model.recommend(np.arange(4), k=5, exclude_seen=False)
    np.testing.assert_array_equal(items, np.tile([1, 2, 0, 3, 4], (4, 1)))


def test_score_is_the_count_for_every_user(hand_model: Popular) -> None:
    users = np.repeat(np.arange(4), 5)
    items = np.tile(np.arange(5), 4)
    np.testing.assert_array_equal(hand_model.score(users, items), np.tile([1, 3, 2, 1, 0], 4))


def test_fold_in_history_only_excludes(hand_model: Popular) -> None:
    history = sp.csr_matrix(np.array([[0, 1, 0, 0, 1], [0, 0, 0, 0, 0]], np.float32))
    items, scores = hand_model.recommend_for_history(history, k=3)
    np.testing.assert_array_equal(items, [[2, 0, 3], [1, 2, 0]])
    np.testing.assert_array_equal(scores, [[2, 1, 1], [3, 2, 1]])
