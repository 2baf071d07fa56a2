"""The ranker's learners: exact export of scikit-learn's trees, logistic regression, storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ArtifactError, DataError
from recsys.ranking import LogisticLearner, TreeEnsemble, load_learner


def toy(rng: np.random.Generator, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 5)).astype(np.float32)
    logit = 1.5 * x[:, 0] - x[:, 1] * x[:, 2] + 0.5 * (x[:, 3] > 0)
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    x[rng.random(n) < 0.1, 1] = np.nan  # missing values take a learned branch
    return x, y


def test_tree_export_reproduces_sklearn_exactly(rng: np.random.Generator) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = toy(rng)
    clf = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    trees = TreeEnsemble.from_sklearn(clf)
    assert trees.n_trees == clf.n_iter_
    np.testing.assert_allclose(trees.decision_function(x), clf.decision_function(x), rtol=1e-12)


def test_tree_blocks_of_rows_give_the_one_pass_scores_bit_for_bit(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.ranking import learners

    x, y = toy(rng)
    trees = TreeEnsemble.fit(x, y, max_iter=30, min_samples_leaf=20)
    x64 = np.asarray(x, np.float64)
    known, f_idx = np.zeros((0, 8), np.uint32), np.zeros(x.shape[1], np.uint32)
    one_pass = np.full(len(x), trees.baseline)
    for tree in trees._trees():  # every tree over all rows at once, in tree order
        one_pass += tree.predict(x64, known, f_idx, 1)
    for threads in (1, 2):  # blocks in this thread; blocks on the pool
        monkeypatch.setattr(learners, "_PREDICT_THREADS", threads)
        for rows in (len(x), 1000, 7):  # one block; blocks with a ragged last one
            monkeypatch.setattr(learners, "_PREDICT_ROWS", rows)
            np.testing.assert_array_equal(trees.decision_function(x), one_pass)


def test_fitted_trees_separate_the_classes(rng: np.random.Generator) -> None:
    x, y = toy(rng)
    trees = TreeEnsemble.fit(x, y, max_iter=60, min_samples_leaf=20)
    raw = trees.decision_function(x)
    assert raw[y].mean() > raw[~y].mean() + 1.0


def test_save_load_round_trip_without_pickle(rng: np.random.Generator, tmp_path: Path) -> None:
    x, y = toy(rng)
    for learner in (
        TreeEnsemble.fit(x, y, max_iter=20, min_samples_leaf=20),
        LogisticLearner.fit(x, y),
    ):
        learner.save(tmp_path / f"{learner.kind}.npz")
        with np.load(tmp_path / f"{learner.kind}.npz", allow_pickle=False) as npz:
            assert all(npz[k].dtype != object for k in npz.files)
        back = load_learner(tmp_path / f"{learner.kind}.npz")
        assert type(back) is type(learner)
        np.testing.assert_array_equal(back.decision_function(x), learner.decision_function(x))


def test_logistic_learner_contributions_add_up(rng: np.random.Generator) -> None:
    x, y = toy(rng)
    lr = LogisticLearner.fit(x, y)
    raw = lr.decision_function(x[:50])
    np.testing.assert_allclose(lr.contributions(x[:50]).sum(axis=1) + lr.intercept, raw)
    assert lr.coef[0] > 0  # x0 raises the odds


def test_bad_inputs(rng: np.random.Generator, tmp_path: Path) -> None:
    x, y = toy(rng, 500)
    trees = TreeEnsemble.fit(x, y, max_iter=5, min_samples_leaf=20)
    with pytest.raises(DataError, match=r"expected \(n, 5\) features"):
        trees.decision_function(x[:, :3])
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_learner(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", kind=np.asarray("forest"))
    with pytest.raises(ArtifactError, match="unknown kind 'forest'"):
        load_learner(tmp_path / "other.npz")
