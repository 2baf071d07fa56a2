"""The shared contract suite every recommender's tests run.

A model's test module subclasses :class:`RecommenderContract` and supplies
:meth:`~RecommenderContract.make_model`; pytest then runs every ``test_*`` method of the
contract against that model, next to the module's own model-specific tests::

    from recsys.testing import RecommenderContract

    class TestMyModel(RecommenderContract):
        min_block_precision = 0.8       # optional: loosen the quality check

        def make_model(self):
            return MyModel(seed=0)

The model is fitted once per test class (a class-scoped fixture), so the whole suite
costs one fit plus one more for the same-seed check. The checks follow the docstrings of
:mod:`recsys.protocols` and section 6 of the style guide.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import ArtifactError, ConfigError, DataError, NotFittedError
from recsys.protocols import EmbeddingModel, FoldIn, Recommender, SimilarItems
from recsys.testing.datasets import block_dataset, block_labels
from recsys.types import TrainingData

__all__ = ["RecommenderContract", "check_recommendations"]

# Scores computed along different paths (one user vs a batch, score vs recommend) may differ
# in the last float32 bits, because BLAS sums in a batch-size dependent order.
_RTOL = 1e-5
_ATOL = 1e-6


def check_recommendations(
    items: NDArray[np.int64],
    scores: NDArray[np.float32],
    *,
    n_rows: int,
    k: int,
    n_items: int,
) -> None:
    """Assert that ``(items, scores)`` is a well-formed answer of ``recommend``.

    Checks the ``(n_rows, k)`` shapes and ``int64``/``float32`` dtypes, that item indices
    lie in ``0..n_items-1`` or are ``-1`` padding with a NaN score and only at the end of
    a row, that real scores are finite and non-increasing along each row, and that no row
    lists an item twice.

    Parameters
    ----------
    items : (n_rows, k) int64
    scores : (n_rows, k) float32
    n_rows, k, n_items
        The expected shape and the size of the item vocabulary.

    Raises
    ------
    AssertionError
        On the first violated property, with a message naming it.
    """
    assert isinstance(items, np.ndarray) and isinstance(scores, np.ndarray)
    assert items.shape == (n_rows, k), f"items shape {items.shape}, expected {(n_rows, k)}"
    assert scores.shape == (n_rows, k), f"scores shape {scores.shape}, expected {(n_rows, k)}"
    assert items.dtype == np.int64, f"items dtype {items.dtype}, expected int64"
    assert scores.dtype == np.float32, f"scores dtype {scores.dtype}, expected float32"
    valid = items >= 0
    assert (items[valid] < n_items).all(), "item index >= n_items"
    assert (items[~valid] == -1).all(), "negative item index other than the -1 padding"
    assert np.isnan(scores[~valid]).all(), "a -1 padding slot has a non-NaN score"
    assert np.isfinite(scores[valid]).all(), "a recommended item has a non-finite score"
    assert (valid[:, :-1] >= valid[:, 1:]).all(), "-1 padding is not at the end of its row"
    filled = np.where(valid, scores, -np.inf)
    assert (filled[:, :-1] >= filled[:, 1:]).all(), "scores increase along a row"
    for row, ok in zip(items, valid, strict=True):
        assert len(np.unique(row[ok])) == int(ok.sum()), f"duplicate items in row {row}"


def _top_sets(items: NDArray[np.int64]) -> list[set[int]]:
    return [{int(i) for i in row if i >= 0} for row in items]


class RecommenderContract(ABC):
    """Contract tests for any :class:`~recsys.protocols.Recommender`, as a pytest mixin.

    Subclass it in a class named ``Test*`` and implement :meth:`make_model`; override
    :meth:`make_data` to fit on other data. Optional abilities (fold-in, similar items,
    embeddings) are tested when the fitted model satisfies their protocol and skipped
    otherwise. Two class-scoped fixtures are available to the subclass's own tests too:
    ``contract_data`` (the training data) and ``contract_model`` (the model fitted on it).

    Stability: provisional

    Attributes
    ----------
    contract_k
        ``k`` of most checks; keep it below the number of items.
    min_block_precision
        Least mean within-block precision at ``items_per_block // 2`` on the block
        dataset (see :meth:`test_block_quality`); ``None`` skips the check (for
        non-personalised models such as popularity). The check is skipped too when
        :meth:`make_data` returns data without block labels. Factor models reach 1.0
        with ``embedding_dim`` near the number of blocks (3); much larger dimensions
        overfit 30 users.
    fold_in_min_overlap
        Least mean overlap of the top-``k`` sets of fold-in and fitted recommendations of
        training users. ``1.0`` (the default) demands identical items and scores, which
        holds for models that score straight from the history; factor models that solve
        for a fresh user vector (ALS, BPR) set something lower. On the default data a
        user has about 4 unseen items of their own block, so with ``contract_k = 5`` the
        last slot falls among near-tied out-of-block items: expect about 0.9 at best.
    min_embedding_top1_agreement
        Least fraction of users whose best item by ``user_factors @ item_factors.T``
        equals their first recommendation (without seen-item exclusion).
    exact_scores
        ``True`` for models whose scores are exact by construction: one routine computes
        every final score, whatever the batch or the BLAS kernel (sparse products, or the
        canonical inner products of :mod:`recsys.models._exact`). Batch and single-user
        scores, ``score`` and ``recommend`` (and fold-in of a training history, where
        ``fold_in_min_overlap`` is 1.0) are then compared bit for bit; otherwise with a
        float32-rounding tolerance (``rtol=1e-5``), since a BLAS kernel rounds products of
        different shapes differently.
    """

    contract_k: ClassVar[int] = 5
    min_block_precision: ClassVar[float | None] = 0.9
    fold_in_min_overlap: ClassVar[float] = 1.0
    min_embedding_top1_agreement: ClassVar[float] = 0.9
    exact_scores: ClassVar[bool] = False

    @abstractmethod
    def make_model(self) -> Recommender:
        """A fresh, unfitted, seeded model; two calls must give equal models."""

    def make_data(self) -> TrainingData:
        """The training data of the suite; by default :func:`block_dataset` with seed 0."""
        return block_dataset(seed=0)

    # ------------------------------------------------------------------ fixtures
    # Class-scoped fixtures are classmethods (pytest runs them once, outside any test
    # instance); a throwaway instance answers the make_* hooks.
    @pytest.fixture(scope="class")
    @classmethod
    def contract_data(cls) -> TrainingData:
        """The training data, built once per test class."""
        return cls().make_data()

    @pytest.fixture(scope="class")
    @classmethod
    def contract_model(cls, contract_data: TrainingData) -> Recommender:
        """The model fitted on ``contract_data``, once per test class; do not mutate it."""
        return cls().make_model().fit(contract_data, show_progress=False)

    # ------------------------------------------------------------------ construction
    def test_is_a_recommender(self) -> None:
        model = self.make_model()
        assert isinstance(model, Recommender)
        assert isinstance(model.name, str) and model.name
        assert model.config is not None

    def test_unknown_config_key_raises(self) -> None:
        cls = type(self.make_model())
        with pytest.raises(ConfigError):
            cls(definitely_not_a_hyperparameter=1)  # type: ignore[call-arg]

    def test_not_fitted_raises(self, tmp_path: Path) -> None:
        model = self.make_model()
        with pytest.raises(NotFittedError):
            model.recommend([0], k=self.contract_k)
        with pytest.raises(NotFittedError):
            model.score([0], [0])
        with pytest.raises(NotFittedError):
            model.save(tmp_path / "model")

    def test_same_seed_same_output(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        fresh = self.make_model()
        assert fresh.fit(contract_data, show_progress=False) is fresh, "fit must return self"
        users = np.arange(-1, contract_data.n_users + 1)
        for exclude_seen in (True, False):
            a_items, a_scores = contract_model.recommend(
                users, k=self.contract_k, exclude_seen=exclude_seen
            )
            b_items, b_scores = fresh.recommend(users, k=self.contract_k, exclude_seen=exclude_seen)
            np.testing.assert_array_equal(a_items, b_items)
            np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6, atol=0)

    # ------------------------------------------------------------------ recommend
    def test_recommend_shapes(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        n_users, n_items, k = contract_data.n_users, contract_data.n_items, self.contract_k
        for exclude_seen in (True, False):
            items, scores = contract_model.recommend(
                np.arange(n_users), k=k, exclude_seen=exclude_seen
            )
            check_recommendations(items, scores, n_rows=n_users, k=k, n_items=n_items)
        items, scores = contract_model.recommend(0, k=k)
        check_recommendations(items, scores, n_rows=1, k=k, n_items=n_items)
        items, scores = contract_model.recommend([0, 1], k=1)
        check_recommendations(items, scores, n_rows=2, k=1, n_items=n_items)

    def test_recommend_pads_when_k_exceeds_items(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        n_items = contract_data.n_items
        k = n_items + 3
        users = np.arange(-1, contract_data.n_users)
        items, scores = contract_model.recommend(users, k=k)
        check_recommendations(items, scores, n_rows=len(users), k=k, n_items=n_items)
        assert (items[:, n_items:] == -1).all()

    def test_exclude_seen(self, contract_model: Recommender, contract_data: TrainingData) -> None:
        seen = contract_data.user_items
        n_items = contract_data.n_items
        users = np.arange(contract_data.n_users)
        items, _ = contract_model.recommend(users, k=n_items, exclude_seen=True)
        for u, row in zip(users, items, strict=True):
            recommended_seen = set(row[row >= 0].tolist()) & set(seen[u].indices.tolist())
            assert not recommended_seen, f"user {u} got seen items {sorted(recommended_seen)}"
        items, _ = contract_model.recommend(users, k=n_items, exclude_seen=False)
        n_seen_listed = sum(
            len(set(row[row >= 0].tolist()) & set(seen[u].indices.tolist()))
            for u, row in zip(users, items, strict=True)
        )
        assert n_seen_listed > 0, "exclude_seen=False never lists a training item"

    def test_unknown_users_get_full_list(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        n_users, n_items, k = contract_data.n_users, contract_data.n_items, self.contract_k
        unknown = np.array([-1, n_users, n_users + 100])
        items, scores = contract_model.recommend(unknown, k=k)
        check_recommendations(items, scores, n_rows=len(unknown), k=k, n_items=n_items)
        assert (items >= 0).all(), "an unknown user got fewer than k items"
        np.testing.assert_array_equal(items, np.broadcast_to(items[0], items.shape))

    def test_batch_equals_single(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        n = contract_data.n_users
        k = self.contract_k
        users = np.array([n - 1, 0, n // 2, -1, 1])
        for exclude_seen in (True, False):
            items, scores = contract_model.recommend(users, k=k, exclude_seen=exclude_seen)
            for row, u in enumerate(users):
                one_items, one_scores = contract_model.recommend(
                    [u], k=k, exclude_seen=exclude_seen
                )
                np.testing.assert_array_equal(items[row], one_items[0], err_msg=f"user {u}")
                self._assert_scores(scores[row], one_scores[0], err_msg=f"user {u}")

    # ------------------------------------------------------------------ score
    def test_score_matches_recommend(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        users = np.arange(contract_data.n_users)
        k = self.contract_k
        for exclude_seen in (True, False):
            items, scores = contract_model.recommend(users, k=k, exclude_seen=exclude_seen)
            valid = items >= 0
            pair_users = np.broadcast_to(users[:, None], items.shape)[valid]
            got = contract_model.score(pair_users, items[valid])
            assert got.dtype == np.float32 and got.shape == (int(valid.sum()),)
            self._assert_scores(got, scores[valid])

    def _assert_scores(self, got: NDArray[Any], want: NDArray[Any], err_msg: str = "") -> None:
        """Bit for bit where the model is exact by construction (``exact_scores``), else
        within float32 rounding."""
        if self.exact_scores:
            np.testing.assert_array_equal(got, want, err_msg=err_msg)
        else:
            np.testing.assert_allclose(got, want, rtol=_RTOL, atol=_ATOL, err_msg=err_msg)

    def test_score_unknown_is_nan(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        n_users, n_items = contract_data.n_users, contract_data.n_items
        users = np.array([-1, n_users, 0, 0, 0])
        items = np.array([0, 0, -1, n_items, 0])
        got = contract_model.score(users, items)
        assert got.dtype == np.float32 and got.shape == (5,)
        assert np.isnan(got[:4]).all(), f"unknown pairs should score NaN, got {got[:4]}"
        assert np.isfinite(got[4]), "a known pair scored non-finite"

    def test_score_shape_mismatch_raises(self, contract_model: Recommender) -> None:
        with pytest.raises(DataError):
            contract_model.score([0, 1], [0])

    # ------------------------------------------------------------------ persistence
    def test_save_load_round_trip(
        self, contract_model: Recommender, contract_data: TrainingData, tmp_path: Path
    ) -> None:
        path = tmp_path / "model"
        contract_model.save(path)
        loaded = type(contract_model).load(path)
        assert type(loaded) is type(contract_model)
        assert loaded.config == contract_model.config
        users = np.arange(-1, contract_data.n_users + 1)
        for exclude_seen in (True, False):
            a = contract_model.recommend(users, k=self.contract_k, exclude_seen=exclude_seen)
            b = loaded.recommend(users, k=self.contract_k, exclude_seen=exclude_seen)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        grid_u, grid_i = np.meshgrid(users, np.arange(-1, contract_data.n_items + 1))
        np.testing.assert_array_equal(
            contract_model.score(grid_u.ravel(), grid_i.ravel()),
            loaded.score(grid_u.ravel(), grid_i.ravel()),
        )
        if isinstance(contract_model, FoldIn) and isinstance(loaded, FoldIn):
            hist = contract_data.user_items
            a = contract_model.recommend_for_history(hist, k=self.contract_k)
            b = loaded.recommend_for_history(hist, k=self.contract_k)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])

    def test_load_rejects_other_model(
        self, contract_model: Recommender, contract_data: TrainingData, tmp_path: Path
    ) -> None:
        from recsys.models.knn import ItemKNN
        from recsys.models.popular import Popular

        other = ItemKNN() if contract_model.name == Popular.name else Popular()
        other.fit(contract_data, show_progress=False).save(tmp_path)
        with pytest.raises(ArtifactError):
            type(contract_model).load(tmp_path)

    def test_load_rejects_damaged_artifact(
        self, contract_model: Recommender, tmp_path: Path
    ) -> None:
        cls = type(contract_model)
        with pytest.raises(ArtifactError):
            cls.load(tmp_path / "missing")
        (tmp_path / "empty").mkdir()
        with pytest.raises(ArtifactError):
            cls.load(tmp_path / "empty")

        garbage = tmp_path / "garbage"
        contract_model.save(garbage)
        for f in _files(garbage):
            f.write_bytes(b"\x00not a model\xff" * 7)
        with pytest.raises(ArtifactError):
            cls.load(garbage)

        # A partial copy: metadata intact, every other file cut in half.
        truncated = tmp_path / "truncated"
        contract_model.save(truncated)
        binary = [f for f in _files(truncated) if f.suffix != ".json"]
        for f in binary:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        if binary:
            with pytest.raises(ArtifactError):
                cls.load(truncated)

    # ------------------------------------------------------------------ quality
    def test_block_quality(self, contract_model: Recommender, contract_data: TrainingData) -> None:
        """Most top-k items of a user come from their own block (k = items per block / 2).

        Per user the precision is divided by ``min(k, unseen items of the own block)``,
        so users who have seen most of their block are not held to the impossible.
        """
        if self.min_block_precision is None:
            pytest.skip("min_block_precision is None for this model")
        try:
            user_block, item_block = block_labels(contract_data)
        except DataError as exc:
            pytest.skip(f"data without block labels: {exc}")
        k = max(1, int(np.bincount(item_block).min()) // 2)
        users = np.arange(contract_data.n_users)
        items, _ = contract_model.recommend(users, k=k)
        seen = contract_data.user_items
        precisions = []
        for u, row in zip(users, items, strict=True):
            own = set(np.flatnonzero(item_block == user_block[u]).tolist())
            reachable = min(k, len(own - set(seen[u].indices.tolist())))
            if reachable:
                hits = len(own & set(row[row >= 0].tolist()))
                precisions.append(hits / reachable)
        precision = float(np.mean(precisions))
        assert precision >= self.min_block_precision, (
            f"mean within-block precision@{k} is {precision:.3f}, "
            f"expected >= {self.min_block_precision}"
        )

    # ------------------------------------------------------------------ fold-in
    def test_fold_in_reproduces_fitted(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        if not isinstance(contract_model, FoldIn):
            pytest.skip("model has no fold-in")
        k = self.contract_k
        n_users, n_items = contract_data.n_users, contract_data.n_items
        hist = contract_data.user_items
        fitted_items, fitted_scores = contract_model.recommend(np.arange(n_users), k=k)
        items, scores = contract_model.recommend_for_history(hist, k=k)
        check_recommendations(items, scores, n_rows=n_users, k=k, n_items=n_items)
        for u, row in enumerate(items):
            assert not set(row[row >= 0].tolist()) & set(hist[u].indices.tolist())
        if self.fold_in_min_overlap >= 1.0:
            np.testing.assert_array_equal(items, fitted_items)
            self._assert_scores(scores, fitted_scores)
        else:
            overlap = float(
                np.mean(
                    [
                        len(a & b) / k
                        for a, b in zip(_top_sets(items), _top_sets(fitted_items), strict=True)
                    ]
                )
            )
            assert overlap >= self.fold_in_min_overlap, (
                f"fold-in top-{k} overlaps the fitted one by {overlap:.3f}, "
                f"expected >= {self.fold_in_min_overlap}"
            )

    def test_fold_in_empty_history(
        self, contract_model: Recommender, contract_data: TrainingData
    ) -> None:
        if not isinstance(contract_model, FoldIn):
            pytest.skip("model has no fold-in")
        k, n_items = self.contract_k, contract_data.n_items
        user0 = contract_data.user_items[[0]]
        hist = sp.vstack([sp.csr_matrix((1, n_items), dtype=np.float32), user0], format="csr")
        items, scores = contract_model.recommend_for_history(hist, k=k)
        check_recommendations(items, scores, n_rows=2, k=k, n_items=n_items)
        alone_items, alone_scores = contract_model.recommend_for_history(user0, k=k)
        np.testing.assert_array_equal(items[1], alone_items[0])
        np.testing.assert_allclose(scores[1], alone_scores[0], rtol=_RTOL, atol=_ATOL)

    # ------------------------------------------------------------------ optional abilities
    def test_similar_items(self, contract_model: Recommender, contract_data: TrainingData) -> None:
        if not isinstance(contract_model, SimilarItems):
            pytest.skip("model has no similar_items")
        n_items, k = contract_data.n_items, self.contract_k
        query = np.array([0, n_items // 2, n_items - 1])
        for kk in (k, n_items + 2):
            items, sims = contract_model.similar_items(query, k=kk)
            check_recommendations(items, sims, n_rows=len(query), k=kk, n_items=n_items)
            assert (items != query[:, None]).all(), "similar_items returned the item itself"
        batch_items, _ = contract_model.similar_items(query, k=k)
        one_items, _ = contract_model.similar_items(query[1:2], k=k)
        np.testing.assert_array_equal(batch_items[1], one_items[0])

    def test_embeddings(self, contract_model: Recommender, contract_data: TrainingData) -> None:
        if not isinstance(contract_model, EmbeddingModel):
            pytest.skip("model has no embeddings")
        users, items = contract_model.user_factors, contract_model.item_factors
        assert users.dtype == np.float32 and items.dtype == np.float32
        assert users.ndim == 2 and users.shape[0] == contract_data.n_users
        assert items.ndim == 2 and items.shape[0] == contract_data.n_items
        assert users.shape[1] == items.shape[1], "user and item factors differ in dimension"
        assert np.isfinite(users).all() and np.isfinite(items).all()
        best = np.argmax(users @ items.T, axis=1)
        first, _ = contract_model.recommend(
            np.arange(contract_data.n_users), k=1, exclude_seen=False
        )
        agreement = float(np.mean(best == first[:, 0]))
        assert agreement >= self.min_embedding_top1_agreement, (
            f"factor top-1 agrees with recommend for {agreement:.2f} of users, "
            f"expected >= {self.min_embedding_top1_agreement}"
        )


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())
