"""The learners of the hybrid ranker, fitted with scikit-learn and stored as plain arrays.

Two learners, both pointwise (binary log loss on "is this candidate in the user's
label slice"):

* :class:`TreeEnsemble` — scikit-learn's ``HistGradientBoostingClassifier`` (gradient-
  boosted regression trees on histogram-binned features, Ke et al. "LightGBM", NIPS
  2017). Missing features (a source that did not propose the item, a component that
  cannot score a fold-in row) are native: every split learns where NaN goes.
* :class:`LogisticLearner` — ``LogisticRegression`` on standardised features with
  missing values imputed to the mean plus one missing-indicator per feature.

Why pointwise: the label slice gives few positives per user (a median of 13 on MovieLens
100K), and the binary objective's calibrated scores are also usable as the score column;
a pairwise or listwise objective would need LightGBM/XGBoost (not dependencies here), and
scikit-learn has none.

Storage is safe and independent of scikit-learn's pickles: the trees are exported as
arrays (split feature, threshold, NaN direction, children, leaf values) into an
``.npz`` read with ``allow_pickle=False``, and predicted by a vectorised numpy traversal
that matches ``decision_function`` to float rounding (tested).
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np
from numpy.typing import NDArray

from recsys.errors import ArtifactError, DataError, NotFittedError

__all__ = ["Learner", "LogisticLearner", "TreeEnsemble", "load_learner"]

_MIN_CLASS_ROWS_FOR_VALIDATION = 20  # rows of the smaller class for early stopping

#: Rows per pass over the trees. Each tree's traversal reads every row it is given; a
#: block of 2,048 rows (~0.8 MB of float64 features) stays in cache while all trees walk
#: it, where a batch job's ~190k rows (~74 MB) were streamed from memory once per tree
#: (3x slower). A row's sum still adds the trees in the same order, so scores are the
#: same bits whatever the blocking. Blocks run on a pool of Python threads (the traversal
#: releases the GIL), one OpenMP thread each: on the busy machine OpenMP's spinning
#: threads made a block 10-100x slower at times; a single block (serving's few users)
#: runs on the caller's thread.
_PREDICT_ROWS = 2048
_PREDICT_THREADS = max(1, os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _predict_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_PREDICT_THREADS, thread_name_prefix="recsys-trees")
        return _pool


logger = logging.getLogger(__name__)


class Learner(Protocol):
    """A fitted pointwise scorer of feature rows."""

    kind: ClassVar[str]

    def decision_function(self, features: NDArray[np.float32]) -> NDArray[np.float64]:
        """``(n,) float64`` raw scores (log-odds) of ``(n, n_features)`` rows."""
        ...

    def save(self, path: Path) -> None:
        """Write the learner to ``path`` (an ``.npz`` file)."""
        ...


def _check_features(features: NDArray[Any], n_features: int, owner: str) -> NDArray[np.float64]:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise DataError(f"{owner}: expected (n, {n_features}) features, got {x.shape}")
    return x


class TreeEnsemble:
    """Gradient-boosted binary-classification trees, stored as plain arrays.

    The trees of a fitted ``HistGradientBoostingClassifier`` are kept as the node fields
    of scikit-learn's tree predictor (split feature, threshold, where NaN goes, children,
    leaf value, ...), concatenated over trees with ``offsets`` marking each tree's nodes,
    plus the baseline log-odds. Prediction rebuilds scikit-learn's compiled
    ``TreePredictor`` from these arrays (its Cython traversal is two orders of magnitude
    faster than a numpy one), so nothing is ever unpickled; the round trip is tested to
    reproduce ``decision_function`` exactly.

    Stability: internal
    """

    kind: ClassVar[str] = "hgb"
    _FIELDS: ClassVar[tuple[str, ...]] = (
        "value",
        "count",
        "feature_idx",
        "num_threshold",
        "missing_go_to_left",
        "left",
        "right",
        "gain",
        "depth",
        "is_leaf",
        "bin_threshold",
        "is_categorical",
        "bitset_idx",
    )

    def __init__(
        self,
        fields: dict[str, NDArray[Any]],
        offsets: NDArray[np.int64],
        baseline: float,
        n_features: int,
    ) -> None:
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

        missing = [f for f in self._FIELDS if f not in fields]
        if missing:
            raise DataError(f"TreeEnsemble: node fields missing: {missing}")
        n_nodes = len(fields["value"])
        if offsets.ndim != 1 or len(offsets) < 1 or int(offsets[-1]) != n_nodes:
            raise DataError(f"TreeEnsemble: offsets end at {offsets[-1:]}, {n_nodes} nodes")
        if any(len(fields[f]) != n_nodes for f in self._FIELDS):
            raise DataError("TreeEnsemble: node fields have different lengths")
        if bool(np.asarray(fields["is_categorical"]).any()):
            raise DataError("TreeEnsemble: categorical splits are not supported")
        nodes = np.zeros(n_nodes, dtype=PREDICTOR_RECORD_DTYPE)
        for f in self._FIELDS:
            nodes[f] = fields[f]
        self.nodes = nodes
        self.offsets = np.asarray(offsets, np.int64)
        self.baseline = float(baseline)
        self.n_features = int(n_features)
        self._predictors: list[Any] | None = None

    def __repr__(self) -> str:
        return f"TreeEnsemble(n_trees={self.n_trees}, n_nodes={len(self.nodes)})"

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.offsets) - 1

    @classmethod
    def fit(
        cls,
        features: NDArray[np.float32],
        labels: NDArray[np.bool_],
        *,
        max_iter: int = 300,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 100,
        l2_regularization: float = 1.0,
        seed: int = 42,
    ) -> TreeEnsemble:
        """Fit ``HistGradientBoostingClassifier`` (early stopping on 10% of the rows, when
        each class has enough rows for a stratified validation split)."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        y = np.asarray(labels, np.bool_)
        smaller = min(int(y.sum()), int(len(y) - y.sum()))
        clf = HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            l2_regularization=l2_regularization,
            # a stratified 10% split needs two rows of each class on both sides (#14: a
            # one-user log gave one positive and one negative row)
            early_stopping=smaller >= _MIN_CLASS_ROWS_FOR_VALIDATION,
            validation_fraction=0.1,
            n_iter_no_change=20,
            random_state=seed,
        )
        x = np.array(features, dtype=np.float32)
        # a column missing on every row carries nothing, and scikit-learn's binning fails
        # on it: make it constant (no split will use it, so NaN at prediction is harmless)
        x[:, np.isnan(x).all(axis=0)] = 0.0
        clf.fit(x, y)
        return cls.from_sklearn(clf)

    @classmethod
    def from_sklearn(cls, clf: Any) -> TreeEnsemble:
        """Export a fitted binary ``HistGradientBoostingClassifier`` (numeric features only).

        Raises
        ------
        DataError
            A multi-class model or categorical splits (not supported by the export).
        """
        predictors = clf._predictors  # list (iterations) of lists (one tree for binary)
        if any(len(p) != 1 for p in predictors):
            raise DataError("TreeEnsemble: only binary classifiers can be exported")
        trees = [p[0].nodes for p in predictors]
        offsets = np.concatenate([[0], np.cumsum([len(t) for t in trees])]).astype(np.int64)
        nodes = np.concatenate(trees)
        fields = {f: np.asarray(nodes[f]) for f in cls._FIELDS}
        baseline = float(np.asarray(clf._baseline_prediction).ravel()[0])
        return cls(fields, offsets, baseline, int(clf.n_features_in_))

    def _trees(self) -> list[Any]:
        if self._predictors is None:
            from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

            empty = np.zeros((0, 8), np.uint32)
            self._predictors = [
                TreePredictor(self.nodes[lo:hi].copy(), empty, empty)
                for lo, hi in zip(self.offsets[:-1], self.offsets[1:], strict=True)
            ]
        return self._predictors

    def decision_function(self, features: NDArray[np.float32]) -> NDArray[np.float64]:
        """Raw scores (log-odds): the baseline plus each tree's leaf value."""
        x = np.ascontiguousarray(_check_features(features, self.n_features, "TreeEnsemble"))
        out = np.full(x.shape[0], self.baseline, np.float64)
        if x.shape[0] == 0:
            return out
        known = np.zeros((0, 8), np.uint32)
        f_idx = np.zeros(self.n_features, np.uint32)
        trees = self._trees()
        step = _PREDICT_ROWS

        def walk(lo: int) -> None:
            block, acc = x[lo : lo + step], out[lo : lo + step]
            for tree in trees:
                acc += tree.predict(block, known, f_idx, 1)

        starts = range(0, x.shape[0], step)
        if len(starts) > 1 and _PREDICT_THREADS > 1:
            for _ in _predict_pool().map(walk, starts):
                pass
        else:
            for lo in starts:
                walk(lo)
        return out

    def save(self, path: Path) -> None:
        """Write the node arrays to an ``.npz`` file."""
        arrays: dict[str, NDArray[Any]] = {
            "kind": np.asarray(self.kind),
            "offsets": self.offsets,
            "baseline": np.asarray(self.baseline),
            "n_features": np.asarray(self.n_features),
        }
        arrays.update({f"node_{f}": np.asarray(self.nodes[f]) for f in self._FIELDS})
        np.savez(path, **arrays)  # type: ignore[arg-type]

    @classmethod
    def from_arrays(cls, npz: Any) -> Self:
        """Rebuild from the arrays :meth:`save` wrote."""
        return cls(
            {f: npz[f"node_{f}"] for f in cls._FIELDS},
            npz["offsets"],
            float(npz["baseline"]),
            int(npz["n_features"]),
        )


class LogisticLearner:
    """Logistic regression on standardised features with missing-value indicators.

    A feature value ``x_f`` enters as ``(x_f - mean_f) / std_f`` (0 when missing) plus an
    indicator ``isnan(x_f)``; coefficients come from ``LogisticRegression`` (L2, C=1).

    Stability: internal
    """

    kind: ClassVar[str] = "logistic"

    def __init__(
        self,
        mean: NDArray[np.float64],
        std: NDArray[np.float64],
        coef: NDArray[np.float64],
        intercept: float,
    ) -> None:
        if mean.shape != std.shape or coef.shape != (2 * len(mean),):
            raise DataError(
                f"LogisticLearner: mean {mean.shape}, std {std.shape} and coef {coef.shape} "
                "do not fit together"
            )
        self.mean = mean
        self.std = std
        self.coef = coef
        self.intercept = float(intercept)

    def __repr__(self) -> str:
        return f"LogisticLearner(n_features={len(self.mean)})"

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return len(self.mean)

    @staticmethod
    def _design(
        x: NDArray[np.float64], mean: NDArray[np.float64], std: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        missing = np.isnan(x)
        z = np.where(missing, 0.0, (x - mean) / std)
        z = np.clip(z, -20.0, 20.0)  # a far outlier must not dominate the linear score
        return np.hstack([z, missing.astype(np.float64)])

    @classmethod
    def fit(
        cls, features: NDArray[np.float32], labels: NDArray[np.bool_], *, seed: int = 42
    ) -> LogisticLearner:
        """Fit on ``(n, n_features)`` rows and binary labels."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(features, np.float64)
        with np.errstate(all="ignore"):
            mean = np.nan_to_num(np.nanmean(x, axis=0), nan=0.0)
            std = np.nan_to_num(np.nanstd(x, axis=0), nan=1.0)
        std = np.where(std > 1e-12, std, 1.0)
        clf = LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
        clf.fit(cls._design(x, mean, std), np.asarray(labels, np.bool_))
        return cls(mean, std, clf.coef_.ravel().astype(np.float64), float(clf.intercept_[0]))

    def decision_function(self, features: NDArray[np.float32]) -> NDArray[np.float64]:
        """Raw scores (log-odds)."""
        x = _check_features(features, self.n_features, type(self).__name__)
        design = self._design(x, self.mean, self.std)
        # summed column by column in a fixed order, not by a BLAS product: a row's score
        # must not depend on the other candidates in the call or the CPU's kernel (#14)
        out = np.full(len(design), self.intercept, np.float64)
        for j in range(design.shape[1]):
            out += design[:, j] * self.coef[j]
        return out

    def contributions(self, features: NDArray[np.float32]) -> NDArray[np.float64]:
        """``(n, n_features)`` each feature's share of the raw score (value + indicator)."""
        x = _check_features(features, self.n_features, type(self).__name__)
        d = self._design(x, self.mean, self.std) * self.coef
        return d[:, : self.n_features] + d[:, self.n_features :]

    def save(self, path: Path) -> None:
        """Write the arrays to an ``.npz`` file."""
        np.savez(
            path,
            kind=np.asarray(self.kind),
            mean=self.mean,
            std=self.std,
            coef=self.coef,
            intercept=np.asarray(self.intercept),
        )

    @classmethod
    def from_arrays(cls, npz: Any) -> Self:
        """Rebuild from the arrays :meth:`save` wrote."""
        return cls(npz["mean"], npz["std"], npz["coef"], float(npz["intercept"]))


def load_learner(path: Path) -> TreeEnsemble | LogisticLearner:
    """Read a learner written by ``save`` (``allow_pickle=False``).

    Raises
    ------
    ArtifactError
        Missing or unreadable file, or an unknown learner kind.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            kind = str(npz["kind"])
            if kind == TreeEnsemble.kind:
                return TreeEnsemble.from_arrays(npz)
            if kind == LogisticLearner.kind:
                return LogisticLearner.from_arrays(npz)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"ranker learner {path}: cannot read ({exc})") from exc
    raise ArtifactError(f"ranker learner {path}: unknown kind {kind!r}")


def check_fitted(learner: object | None, owner: str) -> None:
    """Raise :class:`NotFittedError` when ``learner`` is missing."""
    if learner is None:
        raise NotFittedError(f"{owner} has no fitted learner; call fit() or load() first")
