"""Scores of the inner-product models do not depend on the BLAS kernel, batch or threads.

Every final score of BPR, ALS, SVD++, Doc2Vec and Item2Vec comes from one canonical
routine (:mod:`recsys.models._exact`); the BLAS products only choose the candidates. These
tests stand in for "another CPU": they perturb every approximate product by a relative
``dim * 2**-24`` (more than a real kernel's rounding) and require the very same lists and
scores, bit for bit, from one user, a batch, ``score`` and fold-in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data import generate_synthetic
from recsys.models import ALS, BPR, Doc2VecRetriever, Item2Vec, _exact, _ip_topk
from recsys.models.base import BaseRecommender, HistoryFoldIn
from recsys.models.doc2vec import ItemVectorModel
from recsys.models.factors import FactorModel
from recsys.models.svdpp import SVDPlusPlus
from recsys.types import TrainingData


@pytest.fixture(scope="module")
def data() -> TrainingData:
    ds = generate_synthetic(n_users=300, n_items=4500, n_interactions=15_000, seed=11)
    return TrainingData.from_frame(ds.interactions, items=ds.items)


@pytest.fixture(scope="module", params=["bpr", "als", "svdpp", "doc2vec", "item2vec"])
def model(
    request: pytest.FixtureRequest, data: TrainingData, one_torch_thread: None
) -> BaseRecommender:
    make: dict[str, Callable[[], BaseRecommender]] = {
        "bpr": lambda: BPR(embedding_dim=16, epochs=3, num_threads=1, seed=0),
        "als": lambda: ALS(embedding_dim=16, epochs=3, num_threads=1, seed=0),
        "svdpp": lambda: SVDPlusPlus(embedding_dim=8, epochs=3, device="cpu", seed=0),
        "doc2vec": lambda: Doc2VecRetriever(embedding_dim=8, epochs=3, min_count=1, seed=0),
        "item2vec": lambda: Item2Vec(embedding_dim=8, epochs=3, seed=0),
    }
    return make[request.param]().fit(data, show_progress=False)


def _noisy(block: np.ndarray, rng: np.random.Generator, dim: int) -> np.ndarray:
    """``block`` with each finite entry off by up to ``dim * 2**-24`` relative."""
    delta = dim * 2.0**-24
    noise = rng.uniform(-delta, delta, block.shape).astype(np.float64)
    out = (block.astype(np.float64) * (1.0 + noise)).astype(np.float32)
    return np.where(np.isfinite(block), out, block)


@pytest.fixture
def other_kernel(model: BaseRecommender, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every approximate product of ``model`` rounded as a different BLAS might."""
    rng = np.random.default_rng(7)
    dim = model._item_vectors()[0].shape[1]

    def wrap(cls: type, name: str, rows: Callable[[Any, tuple], np.ndarray] | None = None) -> None:
        original = getattr(cls, name)

        def perturbed(self: Any, *args: Any, **kwargs: Any) -> np.ndarray:
            block = original(self, *args, **kwargs)
            noisy = _noisy(block, rng, dim)
            if rows is None:
                return noisy
            keep = rows(self, args)  # rows that hold inner products (others: popularity)
            return np.where(keep[:, None], noisy, block)

        monkeypatch.setattr(cls, name, perturbed)

    product = _ip_topk._product
    monkeypatch.setattr(_ip_topk, "_product", lambda q, f: _noisy(product(q, f), rng, dim))
    if isinstance(model, FactorModel):
        nonempty = lambda self, args: np.diff(self.user_items_.indptr)[args[0]] > 0  # noqa: E731
        wrap(FactorModel, "_score_users", nonempty)
        wrap(FactorModel, "_score_users_into", nonempty)
        wrap(HistoryFoldIn, "_score_queries")
    elif isinstance(model, SVDPlusPlus):
        wrap(SVDPlusPlus, "_score_vectors")
    elif isinstance(model, ItemVectorModel):
        wrap(ItemVectorModel, "_scores", lambda self, args: args[0].any(axis=1))
    yield


def _histories(model: BaseRecommender, n: int) -> sp.csr_matrix:
    rng = np.random.default_rng(3)
    rows = [
        rng.choice(model.n_items, size=int(rng.integers(1, 30)), replace=False) for _ in range(n)
    ]
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])]
    return sp.csr_matrix(
        (np.ones(indptr[-1], np.float32), np.concatenate(rows), indptr),
        shape=(n, model.n_items),
    )


def _answers(model: BaseRecommender) -> dict[str, np.ndarray]:
    users = np.r_[np.arange(model.n_users), -1]
    items, scores = model.recommend(users, 20)
    valid = items[:-1] >= 0
    pairs_u = np.broadcast_to(users[:-1, None], valid.shape)[valid]
    out = {
        "items": items,
        "scores": scores,
        "score": model.score(pairs_u, items[:-1][valid]),
        "one_items": np.vstack([model.recommend([u], 20)[0] for u in users[::37]]),
        "one_scores": np.vstack([model.recommend([u], 20)[1] for u in users[::37]]),
    }
    fold = getattr(model, "recommend_for_history", None)
    if fold is not None:
        h = _histories(model, 40)
        out["fold_items"], out["fold_scores"] = fold(h, 15)
        out["fold_one"] = fold(h[7], 15)[1]
    return out


@pytest.fixture
def reference(model: BaseRecommender) -> dict[str, np.ndarray]:
    return _answers(model)


def test_lists_and_scores_do_not_depend_on_the_kernel(
    model: BaseRecommender, reference: dict[str, np.ndarray], other_kernel: None
) -> None:
    got = _answers(model)
    for key, want in reference.items():
        np.testing.assert_array_equal(got[key], want, err_msg=key)


def test_one_user_score_and_batch_agree_exactly(
    model: BaseRecommender, reference: dict[str, np.ndarray]
) -> None:
    """Exact by construction: the same canonical number on every path."""
    rows = np.r_[np.arange(model.n_users), -1][::37]
    np.testing.assert_array_equal(reference["one_items"], reference["items"][rows])
    np.testing.assert_array_equal(reference["one_scores"], reference["scores"][rows])
    valid = reference["items"][:-1] >= 0
    np.testing.assert_array_equal(reference["score"], reference["scores"][:-1][valid])
    if "fold_one" in reference:
        np.testing.assert_array_equal(reference["fold_one"][0], reference["fold_scores"][7])


def test_canonical_pairs_ignore_the_company_they_keep() -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((50, 33)).astype(np.float32)
    v = rng.standard_normal((50, 33)).astype(np.float32)
    together = _exact.canonical_pairs(q, v)
    alone = np.array([_exact.canonical_pairs(q[i : i + 1], v[i : i + 1])[0] for i in range(50)])
    np.testing.assert_array_equal(together, alone)
    # the exact value rounded once: within one float32 rounding of a float64 evaluation
    exact = np.einsum("ij,ij->i", q.astype(np.float64), v.astype(np.float64))
    np.testing.assert_allclose(together, exact, rtol=2**-23, atol=1e-6)


def test_near_ties_at_the_cut_widen_the_candidates() -> None:
    """Items whose approximate scores straddle the k-th within the rounding bound are all
    rescored: the canonical order (ties to the lower index) decides, not the block."""
    items = np.ones((6, 4), np.float32)
    items[:, 0] = [1.0, 1.0, 1.0, 1.0, 0.5, 2.0]
    q = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    block = (q @ items.T).astype(np.float32)
    block[0, 3] = np.nextafter(np.float32(1.0), np.float32(2.0))  # a kernel rounding up
    got_i, got_s = _exact.rescore_topk(block, q, items, 3)
    np.testing.assert_array_equal(got_i, [[5, 0, 1]])
    np.testing.assert_array_equal(got_s, [[2.0, 1.0, 1.0]])


def test_canonical_score_is_the_exact_product_correctly_rounded() -> None:
    """A float64 sum would round these twice; the canonical score rounds the exact value
    once: just above a float32 midpoint goes up, an exact midpoint goes to the even one."""
    above = _exact.canonical_pairs(
        np.array([[1.0, 2.0**-24, 2.0**-60]], np.float32), np.ones((1, 3), np.float32)
    )
    assert above[0] == np.float32(1.0 + 2.0**-23)
    tie = _exact.canonical_pairs(
        np.array([[1.0, 2.0**-24]], np.float32), np.ones((1, 2), np.float32)
    )
    assert tie[0] == np.float32(1.0)
    rng = np.random.default_rng(4)
    q = rng.standard_normal((400, 24)).astype(np.float32)
    v = rng.standard_normal((400, 24)).astype(np.float32)
    exact = [
        _exact._exact_round(q[i].astype(np.float64), v[i].astype(np.float64)) for i in range(400)
    ]
    np.testing.assert_array_equal(_exact.canonical_pairs(q, v), np.array(exact, np.float32))
