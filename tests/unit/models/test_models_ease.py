"""EASE: the shared contract, the closed form by hand and the catalogue-size guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError
from recsys.models import EASE, MODEL_REGISTRY
from recsys.protocols import Recommender
from recsys.testing import RecommenderContract
from recsys.testing.datasets import block_dataset
from recsys.types import TrainingData


class TestEASEContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)

    def make_model(self) -> Recommender:
        return EASE(reg=10.0)


@pytest.fixture(scope="module")
def hand_data() -> TrainingData:
    """4 users x 5 items; item 4 is in the vocabulary but never interacted with."""
    frame = pd.DataFrame({"user_id": [0, 0, 1, 1, 1, 2, 2, 3], "item_id": [0, 1, 0, 2, 3, 1, 2, 3]})
    items = pd.DataFrame({"item_id": [0, 1, 2, 3, 4]})
    return TrainingData.from_frame(frame, items=items)


def _closed_form(x: np.ndarray, reg: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + reg * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_registered_under_ease() -> None:
    assert MODEL_REGISTRY["ease"] is EASE


@pytest.mark.parametrize("reg", [0.5, 3.0, 100.0])
def test_weights_are_the_closed_form(hand_data: TrainingData, reg: float) -> None:
    model = EASE(reg=reg).fit(hand_data, show_progress=False)
    x = hand_data.user_items.toarray().astype(np.float64)
    assert model.weights_ is not None and model.weights_.dtype == np.float32
    np.testing.assert_allclose(model.weights_, _closed_form(x, reg), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.diag(model.weights_), 0.0)
    np.testing.assert_array_equal(model.weights_[:, 4], 0.0)  # never seen: no weight


def test_blocked_gram_and_inverse_match_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.models import ease

    monkeypatch.setattr(ease, "_BLOCK", 5)  # several blocks for the product and the mirror
    data = block_dataset(seed=3, noise=0.3)
    model = EASE(reg=2.0).fit(data, show_progress=False)
    assert model.weights_ is not None
    expected = _closed_form(data.user_items.toarray().astype(np.float64), 2.0)
    np.testing.assert_allclose(model.weights_, expected, rtol=1e-4, atol=1e-6)


def test_scores_are_history_times_weights(hand_data: TrainingData) -> None:
    model = EASE(reg=1.0).fit(hand_data, show_progress=False)
    history = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [1, 1, 0, 0, 0]], np.float32))
    items, scores = model.recommend_for_history(history, k=4, exclude_seen=False)
    expected = history.toarray() @ model.weights_
    np.testing.assert_allclose(scores, np.take_along_axis(expected, items, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(items[:, 0], np.argmax(expected, axis=1))


def test_refuses_catalogues_above_max_items() -> None:
    data = block_dataset()
    with pytest.raises(DataError, match=r"24 items.*max_items=10.*itemknn"):
        EASE(max_items=10).fit(data, show_progress=False)
    EASE(max_items=24).fit(data, show_progress=False)  # at the limit: accepted


@pytest.mark.parametrize("params", [{"reg": 0.0}, {"max_items": 0}, {"lambda_": 1.0}])
def test_invalid_hyperparameters_raise(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        EASE(**params)  # type: ignore[arg-type]
