"""The shared model machinery: ``topk``, ``check_is_fitted``, config and input validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recsys.errors import ConfigError, DataError, NotFittedError
from recsys.models import ItemKNN, ItemKNNConfig, Popular
from recsys.models import base as model_base
from recsys.models.base import check_is_fitted, topk
from recsys.testing import block_dataset
from recsys.types import TrainingData


def _reference_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort by descending score; -inf dropped; padded with -1 / NaN."""
    n, n_items = scores.shape
    items = np.full((n, k), -1, np.int64)
    vals = np.full((n, k), np.nan, np.float32)
    for r in range(n):
        order = sorted(range(n_items), key=lambda j: (-scores[r, j], j))
        order = [j for j in order if np.isfinite(scores[r, j])][:k]
        items[r, : len(order)] = order
        vals[r, : len(order)] = scores[r, order]
    return items, vals


# ---------------------------------------------------------------------------- topk
def test_topk_ties_broken_by_lower_index() -> None:
    scores = np.array([[1, 3, 3, 2, 3]], np.float32)
    items, vals = topk(scores, 2)
    np.testing.assert_array_equal(items, [[1, 2]])
    np.testing.assert_array_equal(vals, [[3, 3]])
    items, vals = topk(scores, 4)
    np.testing.assert_array_equal(items, [[1, 2, 4, 3]])
    np.testing.assert_array_equal(vals, [[3, 3, 3, 2]])


def test_topk_all_tied_row_lists_items_in_index_order() -> None:
    items, _ = topk(np.zeros((2, 6), np.float32), 3)
    np.testing.assert_array_equal(items, [[0, 1, 2], [0, 1, 2]])


def test_topk_minus_inf_is_excluded_and_padded() -> None:
    scores = np.array([[1, -np.inf, 2, -np.inf], [-np.inf] * 4], np.float32)
    items, vals = topk(scores, 3)
    np.testing.assert_array_equal(items, [[2, 0, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(vals, [[2, 1, np.nan], [np.nan] * 3])
    assert items.dtype == np.int64 and vals.dtype == np.float32


def test_topk_k_larger_than_n_items_pads() -> None:
    scores = np.array([[0.5, 0.25], [0.0, 1.0]], np.float32)
    items, vals = topk(scores, 4)
    np.testing.assert_array_equal(items, [[0, 1, -1, -1], [1, 0, -1, -1]])
    np.testing.assert_array_equal(vals, [[0.5, 0.25, np.nan, np.nan], [1, 0, np.nan, np.nan]])


def test_topk_empty_inputs() -> None:
    items, vals = topk(np.zeros((0, 5), np.float32), 3)
    assert items.shape == (0, 3) and vals.shape == (0, 3)
    items, vals = topk(np.zeros((2, 0), np.float32), 3)
    np.testing.assert_array_equal(items, np.full((2, 3), -1))
    assert np.isnan(vals).all()


def test_topk_row_does_not_depend_on_other_rows(rng: np.random.Generator) -> None:
    scores = rng.integers(0, 4, size=(6, 9)).astype(np.float32)
    items, vals = topk(scores, 5)
    for r in range(len(scores)):
        one_items, one_vals = topk(scores[r : r + 1], 5)
        np.testing.assert_array_equal(items[r], one_items[0])
        np.testing.assert_array_equal(vals[r], one_vals[0])


@settings(max_examples=60, deadline=None)
@given(
    scores=arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 7)),
        elements=st.sampled_from([-np.inf, 0.0, 0.5, 1.0, 2.0, 3.25]),
    ),
    k=st.integers(1, 9),
)
def test_topk_matches_stable_sort(scores: np.ndarray, k: int) -> None:
    items, vals = topk(scores, k)
    ref_items, ref_vals = _reference_topk(scores, k)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_array_equal(vals, ref_vals)


# ---------------------------------------------------------------------------- fitted state
@pytest.fixture(scope="module")
def data() -> TrainingData:
    return block_dataset(n_blocks=2, users_per_block=4, items_per_block=4, seed=3)


def test_check_is_fitted_names_missing_fields(data: TrainingData) -> None:
    model = ItemKNN()
    with pytest.raises(NotFittedError, match=r"ItemKNN is not fitted .*similarity_"):
        check_is_fitted(model)
    model.fit(data, show_progress=False)
    check_is_fitted(model)
    model.similarity_ = None
    with pytest.raises(NotFittedError, match=r"missing similarity_\)"):
        check_is_fitted(model)


def test_not_fitted_error_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = Popular().n_items


# ---------------------------------------------------------------------------- config
def test_config_is_frozen_and_rejects_unknown_keys() -> None:
    cfg = ItemKNNConfig(n_neighbors=3)
    with pytest.raises(ValueError, match="frozen"):
        cfg.n_neighbors = 4  # type: ignore[misc]
    with pytest.raises(ConfigError, match="unknown_key"):
        ItemKNN(unknown_key=1)


def test_config_and_params_together_raise() -> None:
    with pytest.raises(ConfigError, match="either config or keyword"):
        ItemKNN(ItemKNNConfig(), n_neighbors=3)


def test_config_of_another_model_raises() -> None:
    with pytest.raises(ConfigError, match="must be ItemKNNConfig"):
        ItemKNN(Popular.Config())


def test_config_object_and_params_build_equal_models() -> None:
    assert ItemKNN(ItemKNNConfig(n_neighbors=3)).config == ItemKNN(n_neighbors=3).config
    assert repr(ItemKNN(n_neighbors=3)).startswith("ItemKNN(seed=42, n_neighbors=3")


# ---------------------------------------------------------------------------- input checks
def test_fit_rejects_a_frame() -> None:
    frame = pd.DataFrame({"user_id": [1], "item_id": [2]})
    with pytest.raises(DataError, match=r"TrainingData\.from_frame"):
        Popular().fit(frame)  # type: ignore[arg-type]


def test_fit_rejects_empty_data(data: TrainingData) -> None:
    empty = data.select(np.zeros(data.n_interactions, bool))
    with pytest.raises(DataError, match="no interactions"):
        Popular().fit(empty)


def test_recommend_rejects_k_below_one(data: TrainingData) -> None:
    model = Popular().fit(data, show_progress=False)
    with pytest.raises(ConfigError, match="k must be >= 1, got 0"):
        model.recommend([0], k=0)


def test_history_with_wrong_width_raises(data: TrainingData) -> None:
    model = ItemKNN().fit(data, show_progress=False)
    with pytest.raises(DataError, match="columns"):
        model.recommend_for_history(sp.csr_matrix((1, data.n_items + 1), dtype=np.float32))


# ---------------------------------------------------------------------------- chunking
def test_small_blocks_give_the_same_answers(
    data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recommend, score and fold-in process users in blocks; block size must not matter."""
    model = ItemKNN().fit(data, show_progress=False)
    users = np.arange(-1, data.n_users + 1)
    pairs_u = np.repeat(users, data.n_items)
    pairs_i = np.tile(np.arange(data.n_items), len(users))
    whole = (
        model.recommend(users, k=3),
        model.score(pairs_u, pairs_i),
        model.recommend_for_history(data.user_items, k=3),
    )
    # Two users' dense score rows per block.
    monkeypatch.setattr(model_base, "_BLOCK_BYTES", 2 * 4 * data.n_items)
    assert model._block_size() == 2
    chunked = (
        model.recommend(users, k=3),
        model.score(pairs_u, pairs_i),
        model.recommend_for_history(data.user_items, k=3),
    )
    np.testing.assert_array_equal(whole[0][0], chunked[0][0])
    np.testing.assert_array_equal(whole[0][1], chunked[0][1])
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_array_equal(whole[2][0], chunked[2][0])
    np.testing.assert_array_equal(whole[2][1], chunked[2][1])


# ---------------------------------------------------------------------------- #15
@pytest.mark.parametrize("name", ["itemknn", "ease", "bpr", "als", "popular"])
def test_score_history_pairs_are_the_full_depth_list_scores(name: str) -> None:
    """score_history_pairs gives exactly (bit for bit) the scores recommend_for_history's
    full-depth list gives those items, NaN for the ones it leaves out (#15)."""

    from recsys.models import get_model_class
    from recsys.testing.datasets import block_dataset

    data = block_dataset()
    params = {"bpr": {"epochs": 5, "num_threads": 1}, "als": {"epochs": 3, "num_threads": 1}}
    model = get_model_class(name)(**params.get(name, {})).fit(data, show_progress=False)
    n_items = data.n_items
    rng = np.random.default_rng(0)
    dense = rng.random((6, n_items)) < 0.2
    dense[2] = False  # an empty history: the cold-start answer
    h = sp.csr_matrix(dense.astype(np.float32))
    top_i, top_s = model.recommend_for_history(h, n_items)
    table = np.full((6, n_items), np.nan, np.float32)
    valid = top_i >= 0
    table[np.repeat(np.arange(6), valid.sum(axis=1)), top_i[valid]] = top_s[valid]
    rows = np.repeat(np.arange(6), n_items)
    items = np.tile(np.arange(n_items), 6)
    got = model.score_history_pairs(h, rows, items)
    assert got.tobytes() == table[rows, items].tobytes()
    assert np.isnan(got[dense[rows, items]]).all()  # seen items are left out
