"""The norm-pruned top-k of the factor models gives exactly the dense answer.

``FactorModel.recommend`` and ``recommend_for_history`` skip, on catalogues of 4,096
items or more, the items whose norm proves they cannot reach a row's top k
(:mod:`recsys.models._ip_topk`). Both paths end in the canonical scores of
:mod:`recsys.models._exact` (one element-wise float64 routine), so they agree bit for bit
by construction, whatever BLAS kernel rounds their different product shapes. These tests
compare every list and score exactly with the dense path (``_PRUNE_MIN_ITEMS`` raised so
nothing prunes) on trained models, on crafted ties, and on rows where pruning must give up.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data import generate_synthetic
from recsys.models import ALS, BPR, factors
from recsys.models._exact import max_norm, rescore_topk
from recsys.models._ip_topk import NormOrder, exact_topk_inner_product, topk_inner_product
from recsys.models.base import _mask_rows
from recsys.models.factors import FactorModel
from recsys.types import TrainingData

N_ITEMS = 6000


@pytest.fixture(scope="module")
def data() -> TrainingData:
    ds = generate_synthetic(
        n_users=1500, n_items=N_ITEMS, n_interactions=60_000, seed=3, with_users=False
    )
    return TrainingData.from_frame(ds.interactions)


@pytest.fixture(scope="module", params=["als", "bpr"])
def model(request: pytest.FixtureRequest, data: TrainingData) -> FactorModel:
    if request.param == "als":
        return ALS(embedding_dim=16, epochs=3, num_threads=1, seed=0).fit(data, show_progress=False)
    return BPR(embedding_dim=16, epochs=3, num_threads=1, seed=0).fit(data, show_progress=False)


def _dense(monkeypatch: pytest.MonkeyPatch, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with monkeypatch.context() as m:
        m.setattr(factors, "_PRUNE_MIN_ITEMS", 10**9)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("k", [1, 10, 100])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommend_equals_the_dense_ranking(
    model: FactorModel, monkeypatch: pytest.MonkeyPatch, k: int, exclude_seen: bool
) -> None:
    assert model._pruning_order(k) is not None  # the pruned path is the one under test
    # known users, an unknown one and a repeated one, out of order
    users = np.r_[np.arange(model.n_users)[::-1], -1, model.n_users + 5, 3]
    got = model.recommend(users, k, exclude_seen=exclude_seen)
    expected = _dense(monkeypatch, model.recommend, users, k, exclude_seen=exclude_seen)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_pruning_scores_a_small_part_of_the_catalogue(
    model: FactorModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The point of the path: most user-item products are never computed."""
    from recsys.models import _ip_topk

    order = model._pruning_order(10)
    assert order is not None and model.user_items_ is not None
    scored = []
    product = _ip_topk._product
    monkeypatch.setattr(
        _ip_topk, "_product", lambda q, f: scored.append(len(q) * len(f)) or product(q, f)
    )
    _, _, ok = topk_inner_product(order, model.user_factors[:500], model.user_items_[:500], 10)
    assert ok.mean() > 0.9  # few rows fall back to dense scoring
    assert sum(scored) < 0.25 * 500 * N_ITEMS


def test_one_user_gets_its_batch_list_bit_for_bit(model: FactorModel) -> None:
    users = np.arange(0, model.n_users, 7)
    items, scores = model.recommend(users, 50)
    for row, u in enumerate(users[:40]):
        one_items, one_scores = model.recommend([u], 50)
        np.testing.assert_array_equal(one_items[0], items[row])
        np.testing.assert_array_equal(one_scores[0], scores[row])


def test_recommend_for_history_equals_the_dense_ranking(
    model: FactorModel, data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    n_items = model.n_items
    rows = [rng.choice(n_items, size=int(rng.integers(0, 40)), replace=False) for _ in range(60)]
    rows[5] = np.empty(0, np.int64)  # an empty history: the popularity list
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])]
    h = sp.csr_matrix(
        (np.ones(indptr[-1], np.float32), np.concatenate(rows).astype(np.int64), indptr),
        shape=(len(rows), n_items),
    )
    got = model.recommend_for_history(h, 20)
    expected = _dense(monkeypatch, model.recommend_for_history, h, 20)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def _dense_topk(
    item_factors: np.ndarray, queries: np.ndarray, seen: sp.csr_matrix, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The canonical answer from a dense BLAS block (another product shape than the
    pruned path's, so other float32 rounding: only the canonical rescoring makes the two
    equal, on any BLAS kernel)."""
    scores = np.matmul(queries, item_factors.T)
    _mask_rows(scores, seen)
    return rescore_topk(scores, queries, item_factors, k)


def _pruned_and_dense(
    item_factors: np.ndarray, queries: np.ndarray, seen: sp.csr_matrix, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The pruned top-k (items, scores, ok) and the dense answer to compare it with."""
    order = NormOrder.build(item_factors)
    assert order is not None
    items, vals, ok = exact_topk_inner_product(
        order, queries, seen, k, item_factors, max_norm(item_factors)
    )
    return items, vals, ok, _dense_topk(item_factors, queries, seen, k)


def test_ties_across_the_cut_go_to_the_lower_item_index() -> None:
    """Copies of one item vector tie exactly; the dense rule keeps the lowest indices."""
    rng = np.random.default_rng(1)
    n_items, dim, k = 5000, 8, 30
    item_factors = (rng.standard_normal((n_items, dim)) * rng.pareto(2.0, (n_items, 1))).astype(
        np.float32
    )
    copies = rng.choice(n_items, size=200, replace=False)
    item_factors[copies] = item_factors[copies[0]] * 3  # long vectors: they tie near the top
    queries = item_factors[copies[:20]] + rng.standard_normal((20, dim)).astype(np.float32)
    seen = sp.random(20, n_items, density=0.01, format="csr", random_state=2)
    items, vals, ok, expected = _pruned_and_dense(item_factors, queries, seen, k)
    assert ok.all()
    np.testing.assert_array_equal(items, expected[0])
    np.testing.assert_array_equal(vals, expected[1])


def test_rows_where_pruning_cannot_help_are_handed_back() -> None:
    """A k-th best <= 0 bounds nothing, and equal norms prune nothing: those rows are
    reported not ok (the model scores them densely); the ok rows are still exact."""
    rng = np.random.default_rng(2)
    n_items, dim, k = 4096, 16, 10
    item_factors = rng.standard_normal((n_items, dim)).astype(np.float32)
    item_factors /= np.linalg.norm(item_factors, axis=1, keepdims=True)  # all norms 1
    queries = rng.standard_normal((6, dim)).astype(np.float32)
    queries[0] = 0.0  # every score 0: k-th best is not > 0
    seen = sp.csr_matrix((6, n_items), dtype=np.float32)
    assert not _pruned_and_dense(item_factors, queries, seen, k)[2].any()
    # heavy-tailed norms instead: now the same queries (but the zero one) are answered
    item_factors *= rng.pareto(1.5, (n_items, 1)).astype(np.float32) + 0.01
    items, vals, ok, expected = _pruned_and_dense(item_factors, queries, seen, k)
    assert not ok[0] and ok[1:].all()
    np.testing.assert_array_equal(items[ok], expected[0][ok])
    np.testing.assert_array_equal(vals[ok], expected[1][ok])


def test_non_finite_factors_are_never_pruned() -> None:
    factors_ = np.ones((10, 4), np.float32)
    factors_[3, 1] = np.nan
    assert NormOrder.build(factors_) is None


@pytest.mark.parametrize("tail", [1.2, 2.0, 4.0])
def test_random_catalogues_match_the_dense_ranking(tail: float) -> None:
    """Heavy- and light-tailed norms, many ks and seen densities: every row answered is
    exactly the dense one, and extension past the first prefix is exercised."""
    rng = np.random.default_rng(int(tail * 10))
    n_items, dim = 5000, 12
    norms = rng.pareto(tail, (n_items, 1)) + 0.05
    item_factors = (rng.standard_normal((n_items, dim)) * norms).astype(np.float32)
    queries = rng.standard_normal((300, dim)).astype(np.float32) + 0.3
    seen = sp.random(300, n_items, density=0.02, format="csr", random_state=3)
    for k in (1, 7, 50, 200):
        items, vals, ok, expected = _pruned_and_dense(item_factors, queries, seen, k)
        # the rounding bound scales with the largest item norm, so on the heaviest tail
        # (max norm ~5,000 times the median) more rows near-tie at the cut of a long list
        # and go back to dense scoring: slower, never different
        assert ok.mean() > 0.4
        np.testing.assert_array_equal(items[ok], expected[0][ok])
        np.testing.assert_array_equal(vals[ok], expected[1][ok])


def test_lists_found_past_the_first_prefix() -> None:
    """The longest vectors point away from the queries, so most of each list comes from
    the extension products: they must be merged exactly."""
    rng = np.random.default_rng(5)
    n_items, dim, k = 8000, 8, 40
    item_factors = np.abs(rng.standard_normal((n_items, dim))).astype(np.float32)
    item_factors[:1000, :4] *= 10.0  # the longest: mostly in dimensions queries ignore
    item_factors[1000:2000, :4] = 0.0  # shorter, but pointing where the queries do
    item_factors[1000:2000, 4:] *= 4.0
    item_factors[2000:] *= np.linspace(0.5, 0.05, n_items - 2000)[:, None].astype(np.float32)
    queries = np.zeros((50, dim), np.float32)
    queries[:, 4:] = np.abs(rng.standard_normal((50, 4)))
    seen = sp.random(50, n_items, density=0.01, format="csr", random_state=4)
    items, vals, ok, expected = _pruned_and_dense(item_factors, queries, seen, k)
    assert ok.all()
    assert (expected[0] >= 1000).all()  # none of the answer is in the longest vectors
    np.testing.assert_array_equal(items, expected[0])
    np.testing.assert_array_equal(vals, expected[1])
