"""Top-N metrics against hand-computed values, edge cases and properties."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import ConfigError, DataError, PerformanceWarning
from recsys.eval import (
    average_popularity,
    average_precision_at_k,
    catalogue_coverage,
    f1_at_k,
    hit_matrix,
    hit_rate_at_k,
    intra_list_diversity,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
    topn_metrics,
)

L2 = math.log2
PROTOCOL = Path("/work/shared/peers/classical/protocol.py")


def _truth(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


# The protocol's own self-test example:
#   user 0: list 1 2 3 4, test {2, 4, 9}  -> hits at ranks 2 and 4
#   user 1: list 5 6 7 8, test {10}       -> no hit
#   user 2: list 9 - - -, test {9, 3}     -> hit at rank 1 (padding ignored)
RECS = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, -1, -1, -1]])
TRUTH = _truth([[2, 4, 9], [10], [9, 3]], 20)


def test_hand_computed_three_users_at_4() -> None:
    m = topn_metrics(RECS, TRUTH, ks=4)
    # precision: (2/4 + 0 + 1/4) / 3
    assert m["precision@4"] == pytest.approx(0.25)
    # recall: (2/3 + 0 + 1/2) / 3 = 7/18
    assert m["recall@4"] == pytest.approx(7 / 18)
    # F1 per user = 2h / (k + |T|): user0 4/7, user2 2/6 -> (4/7 + 1/3) / 3 = 19/63
    assert m["f1@4"] == pytest.approx(19 / 63)
    # NDCG user0: (1/log2 3 + 1/log2 5) / (1 + 1/log2 3 + 1/log2 4); user2: 1 / (1 + 1/log2 3)
    nd0 = (1 / L2(3) + 1 / L2(5)) / (1 + 1 / L2(3) + 1 / L2(4))
    nd2 = 1 / (1 + 1 / L2(3))
    assert m["ndcg@4"] == pytest.approx((nd0 + nd2) / 3, abs=1e-12)
    assert m["ndcg@4"] == pytest.approx(0.3704455, abs=1e-6)
    # AP user0: (1/2 + 2/4) / min(3, 4) = 1/3; user2: (1/1) / 2 -> MAP = (1/3 + 1/2) / 3 = 5/18
    assert m["map@4"] == pytest.approx(5 / 18)
    assert m["map@4"] == pytest.approx(0.2777778, abs=1e-6)
    assert m["hit_rate@4"] == pytest.approx(2 / 3)
    # MRR: (1/2 + 0 + 1) / 3
    assert m["mrr@4"] == pytest.approx(0.5)
    # items 1..9 appear in the top-4 lists, catalogue of 20
    assert m["coverage@4"] == pytest.approx(9 / 20)
    assert m["n_users"] == 3


def test_hand_computed_three_users_at_2() -> None:
    m = topn_metrics(RECS, TRUTH, ks=(2,))
    assert m["precision@2"] == pytest.approx((1 / 2 + 0 + 1 / 2) / 3)
    assert m["recall@2"] == pytest.approx((1 / 3 + 0 + 1 / 2) / 3)
    # user0 ideal list holds min(3, 2) = 2 hits
    expected_ndcg = ((1 / L2(3)) / (1 + 1 / L2(3)) + 0 + 1 / (1 + 1 / L2(3))) / 3
    assert m["ndcg@2"] == pytest.approx(expected_ndcg, abs=1e-12)
    assert m["map@2"] == pytest.approx(((1 / 2) / 2 + 0 + 1 / 2) / 3)
    assert m["mrr@2"] == pytest.approx((1 / 2 + 0 + 1) / 3)


def test_per_user_functions() -> None:
    hits = hit_matrix(RECS, TRUTH)
    assert hits.tolist() == [
        [False, True, False, True],
        [False, False, False, False],
        [True, False, False, False],
    ]
    rel = np.array([3, 1, 2])
    np.testing.assert_allclose(precision_at_k(hits, 4), [0.5, 0, 0.25])
    np.testing.assert_allclose(recall_at_k(hits, rel, 4), [2 / 3, 0, 0.5])
    np.testing.assert_allclose(f1_at_k(hits, rel, 4), [4 / 7, 0, 1 / 3])
    np.testing.assert_allclose(average_precision_at_k(hits, rel, 4), [1 / 3, 0, 0.5])
    np.testing.assert_allclose(hit_rate_at_k(hits, 4), [1, 0, 1])
    np.testing.assert_allclose(reciprocal_rank_at_k(hits, 4), [0.5, 0, 1])
    np.testing.assert_allclose(reciprocal_rank_at_k(hits, 1), [0, 0, 1])
    np.testing.assert_allclose(ndcg_at_k(hits, rel, 1), [0, 0, 1])


def test_f1_equals_harmonic_mean_of_precision_and_recall() -> None:
    hits = hit_matrix(RECS, TRUTH)
    rel = np.array([3, 1, 2])
    p, r = precision_at_k(hits, 3), recall_at_k(hits, rel, 3)
    expected = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0)
    np.testing.assert_allclose(f1_at_k(hits, rel, 3), expected)


def test_users_without_test_items_are_skipped() -> None:
    recs = np.vstack([RECS, [[2, 4, 9, 3]]])  # a fourth user with a perfect-looking list
    truth = sp.vstack([TRUTH, sp.csr_matrix((1, 20))]).tocsr()  # ... but no test items
    assert topn_metrics(recs, truth, ks=4) == topn_metrics(RECS, TRUTH, ks=4)


def test_lists_shorter_than_k_are_padded() -> None:
    short = topn_metrics(RECS[:, :2], TRUTH, ks=4)
    padded = topn_metrics(np.pad(RECS[:, :2], ((0, 0), (0, 2)), constant_values=-1), TRUTH, 4)
    assert short == padded
    # user0 hit at rank 2 only, user2 at rank 1: precision still divides by k = 4
    assert short["precision@4"] == pytest.approx((1 / 4 + 0 + 1 / 4) / 3)


def test_all_empty_lists_score_zero() -> None:
    m = topn_metrics(np.full((3, 5), -1), TRUTH, ks=(1, 5))
    for name in ("precision", "recall", "f1", "ndcg", "map", "hit_rate", "mrr", "coverage"):
        assert m[f"{name}@5"] == 0.0
    assert m["n_users"] == 3


def test_truth_values_are_binary_and_duplicates_count_once() -> None:
    # ratings as values and a duplicated entry: relevance stays binary
    truth = sp.coo_matrix(([5.0, 3.0, 3.0], ([0, 0, 0], [1, 2, 2])), shape=(1, 4)).tocsr()
    m = topn_metrics(np.array([[2, 1]]), truth, ks=2)
    assert m["recall@2"] == 1.0 and m["ndcg@2"] == 1.0


def test_coverage_novelty_popularity_hand_computed() -> None:
    # 4 train users; item popularity (distinct users): [0, 4, 2, 1, 1, 0, ...]
    train = _truth([[1, 2], [1, 2, 3], [1, 4], [1]], 10)
    recs = np.array([[1, 2, -1], [3, 0, 2]])
    counts = np.asarray(train.sum(axis=0)).ravel()
    # -log2(4/4), -log2(2/4), -log2(1/4), -log2(1/4) (item 0 counts as 1 user), -log2(2/4)
    assert novelty(recs, counts, 4, 3) == pytest.approx((0 + 1 + 2 + 2 + 1) / 5)
    # popularity counts of the 5 non-empty slots: 4, 2, 1, 0, 2
    assert average_popularity(recs, counts, 3) == pytest.approx(9 / 5)
    assert catalogue_coverage(recs, 10, 3) == pytest.approx(4 / 10)
    assert catalogue_coverage(recs, 10, 1) == pytest.approx(2 / 10)
    truth = _truth([[5], [6]], 10)
    m = topn_metrics(recs, truth, ks=3, train=train, diversity=False)
    assert m["novelty@3"] == pytest.approx(1.2)
    assert m["avg_popularity@3"] == pytest.approx(1.8)
    assert "diversity@3" not in m
    # only items 0..4 form the catalogue: items 0-3 are recommended
    assert topn_metrics(recs, truth, ks=3, n_catalogue=5)["coverage@3"] == pytest.approx(4 / 5)


def test_diversity_hand_computed() -> None:
    # genre vectors: item0 [1,0], item1 [1,0], item2 [0,1], item3 [1,1], item4 [0,0]
    vectors = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    recs = np.array([[0, 1, 2], [0, 3, -1], [2, -1, -1], [4, 0, -1]])
    # list0: pairs (0,1) cos 1, (0,2) cos 0, (1,2) cos 0 -> mean distance 2/3
    # list1: (0,3) cos 1/sqrt2 -> 1 - 0.70711; list2: one item, left out
    # list3: a zero vector has similarity 0 -> distance 1
    expected = (2 / 3 + (1 - 1 / math.sqrt(2)) + 1) / 3
    assert intra_list_diversity(recs, vectors, 3) == pytest.approx(expected)
    assert intra_list_diversity(recs, sp.csr_matrix(vectors), 3) == pytest.approx(expected)
    assert math.isnan(intra_list_diversity(recs, vectors, 1))


def test_diversity_defaults_to_train_item_columns() -> None:
    train = _truth([[0, 1], [0, 1], [2]], 3)
    # items 0 and 1 have identical columns (cos 1), item 2 is orthogonal to both
    truth = _truth([[2], [2]], 3)
    m = topn_metrics(np.array([[0, 1], [0, 2]]), truth, ks=2, train=train)
    assert m["diversity@2"] == pytest.approx((0.0 + 1.0) / 2)


def _brute_ild(recs: np.ndarray, vectors: np.ndarray, k: int) -> float:
    values = []
    for row in recs[:, :k]:
        items = row[row >= 0]
        if len(items) < 2:
            continue
        dists = []
        for a, b in itertools.combinations(items, 2):
            na, nb = np.linalg.norm(vectors[a]), np.linalg.norm(vectors[b])
            cos = 0.0 if na == 0 or nb == 0 else vectors[a] @ vectors[b] / (na * nb)
            dists.append(1 - cos)
        values.append(np.mean(dists))
    return float(np.mean(values)) if values else float("nan")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 6), k=st.integers(1, 5))
def test_diversity_matches_pairwise_definition(seed: int, n_users: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n_items = 8
    vectors = (rng.random((n_items, 4)) < 0.4).astype(float)
    recs = np.array([rng.permutation(n_items)[:5] for _ in range(n_users)])
    recs[rng.random(recs.shape) < 0.2] = -1
    got = intra_list_diversity(recs, sp.csr_matrix(vectors), k)
    want = _brute_ild(recs, vectors, k)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-12)
        assert got == pytest.approx(intra_list_diversity(recs, vectors, k), abs=1e-12)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[np.ndarray, sp.csr_matrix, int]:
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(2, 15))
    k = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    width = min(k, n_items)
    recs = np.array([rng.permutation(n_items)[:width] for _ in range(n_users)])
    recs[rng.random(recs.shape) < 0.2] = -1
    dense = rng.random((n_users, n_items)) < 0.3
    dense[0, 0] = True  # at least one evaluated user
    return recs, sp.csr_matrix(dense, dtype=float), k


@settings(max_examples=40, deadline=None)
@given(case=_cases())
def test_metrics_are_bounded(case: tuple[np.ndarray, sp.csr_matrix, int]) -> None:
    recs, truth, k = case
    m = topn_metrics(recs, truth, ks=(1, k), train=truth)
    for key, value in m.items():
        if key.startswith(("precision", "recall", "f1", "ndcg", "map", "hit_rate", "mrr")):
            assert 0.0 <= value <= 1.0 + 1e-12, key
        if key.startswith("coverage"):
            assert 0.0 <= value <= 1.0
    assert m[f"hit_rate@{k}"] >= m["hit_rate@1"]
    assert m[f"mrr@{k}"] >= m["mrr@1"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 8), k=st.integers(1, 6))
def test_ideal_lists_score_one(seed: int, n_users: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n_items = 12
    sizes = rng.integers(1, 8, size=n_users)
    test_sets = [rng.choice(n_items, size=size, replace=False) for size in sizes]
    recs = np.full((n_users, k), -1)
    for u, items in enumerate(test_sets):
        others = np.setdiff1d(np.arange(n_items), items)
        row = np.concatenate([rng.permutation(items), rng.permutation(others)])[:k]
        recs[u, : len(row)] = row
    m = topn_metrics(recs, _truth([list(t) for t in test_sets], n_items), ks=k)
    assert m[f"ndcg@{k}"] == pytest.approx(1.0)
    assert m[f"map@{k}"] == pytest.approx(1.0)
    assert m[f"mrr@{k}"] == 1.0 and m[f"hit_rate@{k}"] == 1.0
    expected_recall = np.mean([min(len(t), k) / len(t) for t in test_sets])
    assert m[f"recall@{k}"] == pytest.approx(expected_recall)


def test_user_order_does_not_matter() -> None:
    rng = np.random.default_rng(3)
    recs = np.array([rng.permutation(30)[:10] for _ in range(25)])
    truth = sp.csr_matrix(rng.random((25, 30)) < 0.2, dtype=float)
    perm = rng.permutation(25)
    a = topn_metrics(recs, truth, ks=(5, 10), train=truth)
    b = topn_metrics(recs[perm], truth[perm], ks=(5, 10), train=truth)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12)


def test_errors_name_the_problem() -> None:
    with pytest.raises(DataError, match="rows but truth has 3 users"):
        topn_metrics(RECS[:2], TRUTH)
    with pytest.raises(DataError, match=r"outside -1\.\.19"):
        topn_metrics(np.array([[1, 25], [1, 2], [-2, 3]]), TRUTH, ks=2)
    with pytest.raises(DataError, match="holds item 2 twice"):
        topn_metrics(np.array([[1, 2], [2, 2], [3, 4]]), TRUTH, ks=2)
    with pytest.raises(DataError, match="integer item indices"):
        topn_metrics(RECS.astype(float), TRUTH)
    with pytest.raises(DataError, match="no test item"):
        topn_metrics(RECS, sp.csr_matrix((3, 20)))
    with pytest.raises(ConfigError, match="positive integers"):
        topn_metrics(RECS, TRUTH, ks=(0,))
    with pytest.raises(ConfigError, match="empty"):
        topn_metrics(RECS, TRUTH, ks=())
    with pytest.raises(DataError, match="train has 5 item columns"):
        topn_metrics(RECS, TRUTH, train=sp.csr_matrix((2, 5)))
    with pytest.raises(DataError, match="item_vectors has 3 rows"):
        topn_metrics(RECS, TRUTH, item_vectors=np.ones((3, 2)))
    with pytest.raises(ConfigError, match="exceeds the 4 columns"):
        precision_at_k(hit_matrix(RECS, TRUTH), 5)
    with pytest.raises(DataError, match="n_relevant must be >= 1"):
        recall_at_k(hit_matrix(RECS, TRUTH), [3, 0, 2], 4)


def test_diversity_warns_when_expensive(monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.eval import metrics

    monkeypatch.setattr(metrics, "_DIVERSITY_WARN_COST", 1)
    with pytest.warns(PerformanceWarning, match="diversity=False"):
        intra_list_diversity(np.array([[0, 1]]), sp.identity(3, format="csr"), 2)


def test_diversity_blocks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.eval import metrics

    rng = np.random.default_rng(5)
    vectors = sp.csr_matrix(rng.random((40, 30)) < 0.3, dtype=float)
    recs = np.array([rng.permutation(40)[:6] for _ in range(50)])
    whole = intra_list_diversity(recs, vectors, 6)
    monkeypatch.setattr(metrics, "_DIVERSITY_BLOCK_NNZ", 17)  # many small blocks
    assert intra_list_diversity(recs, vectors, 6) == pytest.approx(whole, abs=1e-12)


def _load_protocol():  # type: ignore[no-untyped-def]
    if not PROTOCOL.exists():
        pytest.skip(f"reference protocol not available at {PROTOCOL}")
    spec = importlib.util.spec_from_file_location("_peer_protocol", PROTOCOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_peer_protocol"] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("_peer_protocol", None)
    return module


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_reference_protocol(seed: int) -> None:
    proto = _load_protocol()
    rng = np.random.default_rng(seed)
    n_users, n_items, width = 60, 80, 20
    truth = sp.csr_matrix(rng.random((n_users, n_items)) < 0.08, dtype=float)
    train = sp.csr_matrix(rng.random((n_users, n_items)) < 0.2, dtype=float)
    recs = np.array([rng.permutation(n_items)[:width] for _ in range(n_users)])
    recs[rng.random(recs.shape) < 0.1] = -1
    mine = topn_metrics(recs, truth, ks=(10, 20), train=train)

    evaluated = np.flatnonzero(np.diff(truth.indptr) > 0)
    test_items = [truth.indices[truth.indptr[u] : truth.indptr[u + 1]] for u in evaluated]
    n_rel = np.array([len(t) for t in test_items])
    for k in (10, 20):
        ref = proto.topn_metrics_from_hits(proto.hit_matrix(recs[evaluated], test_items, k), n_rel)
        for key, value in ref.items():
            assert mine[key.replace("hitrate", "hit_rate")] == pytest.approx(value, abs=1e-12)
    counts = np.bincount(train.indices, minlength=n_items)
    n_train_users = int((np.diff(train.indptr) > 0).sum())
    ref_cov = proto.coverage(recs[evaluated], n_items, 10)
    ref_nov = proto.novelty(recs[evaluated], counts, n_train_users, 10)
    assert mine["coverage@10"] == pytest.approx(ref_cov, abs=1e-12)
    assert mine["novelty@10"] == pytest.approx(ref_nov, abs=1e-12)
