"""The hybrid recommender: multi-source retrieval, then a learned ranker over every component.

:class:`HybridRecommender` composes, through configuration, the components that
``[pipeline] retrievers`` and ``rankers`` name: it never subclasses them. A request goes

1. **retrieval** — :class:`~recsys.retrieval.sources.CandidateGenerator` merges the
   sources' lists into at most ``candidates`` unseen items per user, keeping their
   provenance;
2. **ranking** — :class:`HybridRanker` turns every (user, candidate) pair into features
   (:class:`~recsys.ranking.features.FeatureBuilder`: each component's score and rank,
   the sources' ranks, popularity, recency, content similarity, user and item attributes)
   and scores them with the learned model (or, as the baseline, the reciprocal-rank blend
   of the sources).

Users with no history get the popularity list; fold-in histories (new users with
``recent_items``, users with fresh events) go through both stages from their items.

Training scheme (:meth:`HybridRecommender.fit`), which keeps the ranker's labels strictly
later in time than everything its features are computed from:

1. per user, the last ``validation_frac`` of the training interactions (by time; at least
   one for users with two or more) are the *label slice*; the rest is the *fit part*;
2. every component, the retrieval structures and a feature store are fitted on the fit
   part alone;
3. retrieval runs for (a sample of) the labelled users; its candidates are the ranker's
   training rows: label-slice items are positives, every other candidate a negative (the
   candidates retrieval actually produces, not random items);
4. the learner is fitted on the rows of most users; the rest (``holdout_frac``) measure it
   against the blend and each source (``training_metrics_``);
5. the components and retrieval structures are refitted on all training data for serving,
   and the ranker reads the same features from them and from the full feature store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from recsys.artifacts import read_component_meta
from recsys.config import RankerConfig, RecsysConfig
from recsys.errors import ArtifactError, ConfigError, DataError, NotFittedError
from recsys.models.base import latest_entries, score_pairs
from recsys.ranking.blend import reciprocal_rank_blend
from recsys.ranking.components import fit_components, training_frame
from recsys.ranking.features import FeatureBuilder, check_feature_schema
from recsys.ranking.learners import (
    LogisticLearner,
    TreeEnsemble,
    check_fitted,
    load_learner,
)
from recsys.retrieval.candidates import CandidateSet, Queries
from recsys.retrieval.sources import COLD_START_SOURCE, CandidateGenerator
from recsys.types import IdMap, TrainingData

__all__ = ["HybridRanker", "HybridRecommender", "Ranker", "label_slice"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_USER_BLOCK = 1024  # query rows per retrieval + ranking block


@runtime_checkable
class Ranker(Protocol):
    """The ranking stage: re-scores a given candidate list (higher is better)."""

    def score_candidates(self, candidates: CandidateSet, queries: Queries) -> NDArray[np.float64]:
        """``(candidates.nnz,)`` scores."""
        ...


def label_slice(data: TrainingData, frac: float) -> NDArray[np.bool_]:
    """Mask of each user's latest ``max(1, floor(frac * n_u))`` interactions (``n_u >= 2``).

    Time order is (timestamp, item index), or row order without timestamps; users with a
    single interaction keep it in the fit part.
    """
    if not 0.0 < frac < 1.0:
        raise ConfigError(f"label_slice: frac must be in (0, 1), got {frac}")
    n = data.n_interactions
    users = data.user_idx
    if data.timestamp is not None:
        order = np.lexsort((data.item_idx, data.timestamp, users))
    else:
        order = np.lexsort((np.arange(n), users))
    counts = np.bincount(users, minlength=data.n_users)
    n_label = np.where(counts >= 2, np.maximum(1, np.floor(frac * counts)), 0).astype(np.int64)
    u_sorted = users[order]
    ends = np.cumsum(counts)
    from_end = ends[u_sorted] - np.arange(n)  # 1 = the user's latest interaction
    mask = np.zeros(n, np.bool_)
    mask[order[from_end <= n_label[u_sorted]]] = True
    return mask


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), np.float64)


class HybridRanker:
    """Scores candidates with a learner over :class:`FeatureBuilder` features, or the blend.

    Stability: provisional

    Parameters
    ----------
    config
        ``[ranker]``.
    builder
        The feature builder (bound to the components and the feature store it reads).
    learner
        The fitted learner; ``None`` scores with the reciprocal-rank blend.
    """

    def __init__(
        self,
        config: RankerConfig,
        builder: FeatureBuilder,
        learner: TreeEnsemble | LogisticLearner | None,
    ) -> None:
        self.config = config
        self.builder = builder
        self.learner = learner
        if learner is not None and learner.n_features != len(builder.names):
            raise ConfigError(
                f"HybridRanker: the learner takes {learner.n_features} features, the builder "
                f"makes {len(builder.names)}"
            )

    def __repr__(self) -> str:
        kind = "blend" if self.learner is None else self.learner.kind
        return f"HybridRanker(learner={kind!r}, n_features={len(self.builder.names)})"

    @property
    def feature_names(self) -> list[str]:
        """The feature columns, in order."""
        return list(self.builder.names)

    @property
    def kind(self) -> str:
        """``"hgb"``, ``"logistic"`` or ``"blend"``."""
        return "blend" if self.learner is None else self.learner.kind

    def blend(self, candidates: CandidateSet) -> NDArray[np.float64]:
        """The baseline: reciprocal-rank fusion of the sources' ranks."""
        return reciprocal_rank_blend(candidates.source_ranks, self.config.blend_k)

    def score_features(self, features: NDArray[np.float32]) -> NDArray[np.float64]:
        """Probabilities of ``(n, n_features)`` rows (a learner is required)."""
        check_fitted(self.learner, type(self).__name__)
        assert self.learner is not None
        return _sigmoid(self.learner.decision_function(features))

    def score_candidates(self, candidates: CandidateSet, queries: Queries) -> NDArray[np.float64]:
        """Scores of every candidate: the learner's probability, or the blend."""
        if self.learner is None:
            return self.blend(candidates)
        return self.score_features(self.builder.build(candidates, queries))

    @staticmethod
    def fit_learner(
        config: RankerConfig,
        features: NDArray[np.float32],
        labels: NDArray[np.bool_],
        seed: int,
    ) -> TreeEnsemble | LogisticLearner | None:
        """Fit the configured learner; ``None`` for ``"blend"`` or single-class labels."""
        if config.learner == "blend":
            return None
        n_pos = int(labels.sum())
        if n_pos == 0 or n_pos == len(labels):
            logger.warning(
                "hybrid ranker: %d positives among %d training rows; one class only, so the "
                "ranker falls back to the reciprocal-rank blend",
                n_pos,
                len(labels),
            )
            return None
        if config.learner == "logistic":
            return LogisticLearner.fit(features, labels, seed=seed)
        min_leaf = max(1, min(config.min_samples_leaf, len(labels) // 20))
        return TreeEnsemble.fit(
            features,
            labels,
            max_iter=config.max_iter,
            learning_rate=config.learning_rate,
            max_leaf_nodes=config.max_leaf_nodes,
            min_samples_leaf=min_leaf,
            l2_regularization=config.l2_regularization,
            seed=seed,
        )

    def save(self, path: Path) -> None:
        """Write ``ranker.json`` (feature schema) and ``learner.npz`` (when learned)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": _FORMAT_VERSION,
            "kind": self.kind,
            "config": self.config.model_dump(mode="json"),
            "feature_names": self.feature_names,
            "source_names": list(self.builder.source_names),
        }
        (path / "ranker.json").write_text(json.dumps(meta, indent=2) + "\n")
        if self.learner is not None:
            self.learner.save(path / "learner.npz")

    @classmethod
    def load(cls, path: Path, builder: FeatureBuilder) -> HybridRanker:
        """Read a ranker written by :meth:`save`; check the builder's feature schema.

        Raises
        ------
        ArtifactError
            Missing or unreadable files.
        FeatureSchemaError
            The builder (components, store columns, sources) makes other features than
            the ranker was trained on.
        """
        path = Path(path)
        meta = read_component_meta(path, "ranker.json", "ranker", _FORMAT_VERSION)
        check_feature_schema(meta["feature_names"], builder.names, "HybridRanker.load")
        learner = None if meta["kind"] == "blend" else load_learner(path / "learner.npz")
        return cls(RankerConfig(**meta["config"]), builder, learner)


class HybridRecommender:
    """Two-stage recommender over configured components: retrieval, then the hybrid ranker.

    Answers the model protocol (:class:`recsys.protocols.Recommender`: ``score``,
    batched ``recommend``, fold-in ``recommend_for_history``) and adds
    :meth:`recommend_lists` (with each item's sources) and :meth:`explain`.

    Stability: provisional

    Parameters
    ----------
    config
        The whole configuration (components, ``[retrieval]``, ``[ranker]``).
    components
        Component names to compose (default: ``config.components()``).

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> from recsys.config import load_config
    >>> cfg = load_config(pipeline={"retrievers": ["itemknn", "popular"], "rankers": []},
    ...                   ranker={"learner": "logistic"})
    >>> hybrid = HybridRecommender(cfg).fit(block_dataset(), show_progress=False)
    >>> items, scores = hybrid.recommend([0, 1], k=3)
    >>> items.shape
    (2, 3)
    """

    name: ClassVar[str] = "hybrid"

    def __init__(self, config: RecsysConfig, components: Sequence[str] | None = None) -> None:
        self.recsys_config = config
        self.component_names = list(components or config.components())
        self.components_: dict[str, Any] | None = None
        self.generator_: CandidateGenerator | None = None
        self.ranker_: HybridRanker | None = None
        self.store_: Any | None = None
        self.seen_: sp.csr_matrix | None = None
        self.user_map_: IdMap | None = None
        self.item_map_: IdMap | None = None
        self.training_metrics_: dict[str, Any] = {}
        self.skipped_: dict[str, str] = {}
        self.fit_seconds_: dict[str, float] = {}
        # (id and length of the store's item map, its translation to item_map_)
        self._translation: tuple[tuple[int, int], NDArray[np.int64] | None] | None = None

    def __repr__(self) -> str:
        return f"HybridRecommender(components={self.component_names})"

    @property
    def config(self) -> RankerConfig:
        """The ranker's hyperparameters (``[ranker]``)."""
        return self.recsys_config.ranker

    # ------------------------------------------------------------------ state
    def _check(self) -> tuple[dict[str, Any], CandidateGenerator, HybridRanker, sp.csr_matrix]:
        if (
            self.components_ is None
            or self.generator_ is None
            or self.ranker_ is None
            or self.seen_ is None
        ):
            raise NotFittedError("HybridRecommender is not fitted; call fit() or load() first")
        return self.components_, self.generator_, self.ranker_, self.seen_

    @property
    def components(self) -> dict[str, Any]:
        """The fitted components (on all training data), in configuration order."""
        return self._check()[0]

    @property
    def generator(self) -> CandidateGenerator:
        """The retrieval stage."""
        return self._check()[1]

    @property
    def ranker(self) -> HybridRanker:
        """The ranking stage."""
        return self._check()[2]

    @property
    def n_users(self) -> int:
        """Users of the training vocabulary."""
        return int(self._check()[3].shape[0])

    @property
    def n_items(self) -> int:
        """Items of the training vocabulary."""
        return int(self._check()[3].shape[1])

    def _scorers(self, components: Mapping[str, Any]) -> list[str]:
        return [n for n in components if n != COLD_START_SOURCE]

    def _builder(
        self,
        components: Mapping[str, Any],
        generator: CandidateGenerator,
        store: Any,
        user_map: IdMap,
        item_map: IdMap,
    ) -> FeatureBuilder:
        return FeatureBuilder(
            components,
            self._scorers(components),
            [s.component for s in generator.specs if s.kind == "content" and s.component],
            store,
            user_map,
            item_map,
            generator.source_names,
            fold_in_depth=self.config.fold_in_depth,
        )

    def bind(
        self,
        components: Mapping[str, Any],
        generator: CandidateGenerator,
        ranker: HybridRanker,
        store: Any,
        seen: sp.csr_matrix,
        user_map: IdMap,
        item_map: IdMap,
    ) -> Self:
        """Set the fitted state (used by :meth:`fit` and by the pipeline's loader)."""
        self.components_ = dict(components)
        self.generator_ = generator
        self.ranker_ = ranker
        self.store_ = store
        self.seen_ = sp.csr_matrix(seen)
        self.user_map_ = user_map
        self.item_map_ = item_map
        return self

    # ------------------------------------------------------------------ training
    def fit(
        self,
        data: TrainingData,
        *,
        show_progress: bool = True,
        features: Any | None = None,
        skip_unrated: bool = True,
        skip_failed: bool = False,
    ) -> Self:
        """Fit components, retrieval and the ranker with the scheme of the module docstring.

        Parameters
        ----------
        data
            All training interactions.
        show_progress
            Progress bars of the components.
        features
            The feature store of ``data`` (built here when not given).
        skip_unrated
            Leave rating-only components (``svdpp``) out when ``data`` has no ratings.
        skip_failed
            Leave out a component whose training fails (see
            :func:`~recsys.ranking.components.fit_components`); the reasons are in
            ``skipped_``.
        """
        from recsys.features import FeatureStore

        if not isinstance(data, TrainingData) or data.n_interactions == 0:
            raise DataError("HybridRecommender.fit expects non-empty TrainingData")
        cfg = self.recsys_config
        seq_len = max(cfg.data.sequence_length, cfg.retrieval.recent_items)
        t_start = time.perf_counter()
        frame = training_frame(data)
        catalogue = _catalogue(data)
        store_full = features
        if store_full is None:
            store_full = FeatureStore.build(
                frame,
                items=catalogue,
                users=data.users,
                sequence_length=seq_len,
                show_progress=False,
            )
        # 1-2: the fit part, and everything fitted on it
        labels_mask = label_slice(data, cfg.ranker.validation_frac)
        early = data.select(~labels_mask)
        labels = data.select(labels_mask).user_items
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        store_early = FeatureStore.build(
            training_frame(early),
            items=catalogue,
            users=data.users,
            sequence_length=seq_len,
            show_progress=False,
        )

        def fit_stage(
            part: TrainingData, store: Any, names: list[str]
        ) -> tuple[dict[str, Any], dict[str, float], dict[str, str], CandidateGenerator]:
            """The components and the retrieval structures fitted on ``part``."""
            comps, seconds, skipped = fit_components(
                names,
                part,
                cfg,
                store=store,
                show_progress=show_progress,
                skip_unrated=skip_unrated,
                skip_failed=skip_failed,
            )
            gen = CandidateGenerator.fit(
                comps,
                part,
                retrievers=cfg.pipeline.retrievers,
                config=cfg.retrieval,
                candidates=cfg.pipeline.candidates,
            )
            return comps, seconds, skipped, gen

        comps_early, sec_early, skipped, gen_early = fit_stage(
            early, store_early, self.component_names
        )
        timings["early_components"] = time.perf_counter() - t0
        # 3: training rows from the candidates retrieval produces
        t0 = time.perf_counter()
        builder_early = self._builder(
            comps_early, gen_early, store_early, data.user_map, data.item_map
        )
        rng = np.random.default_rng(cfg.training.seed)
        labelled = np.flatnonzero(np.diff(labels.indptr) > 0)
        if len(labelled) > cfg.ranker.max_train_users:
            labelled = np.sort(rng.choice(labelled, cfg.ranker.max_train_users, replace=False))
        perm = rng.permutation(len(labelled))
        n_hold = round(cfg.ranker.holdout_frac * len(labelled))
        if len(labelled) - n_hold < 1:
            n_hold = 0
        holdout = np.zeros(len(labelled), np.bool_)
        holdout[perm[:n_hold]] = True
        rows = _TrainingRows.collect(
            cfg, labelled, early, labels, store_early, gen_early, builder_early
        )
        timings["training_rows"] = time.perf_counter() - t0
        # 4: the learner, measured on held-out users
        t0 = time.perf_counter()
        train_rows = ~holdout[rows.user_pos]
        learner = HybridRanker.fit_learner(
            cfg.ranker, rows.features[train_rows], rows.labels[train_rows], cfg.training.seed
        )
        timings["learner"] = time.perf_counter() - t0
        ranker_early = HybridRanker(cfg.ranker, builder_early, learner)
        metrics = rows.report(ranker_early, holdout, labels, labelled)
        metrics["n_training_rows"] = int(train_rows.sum())
        metrics["n_training_positives"] = int(rows.labels[train_rows].sum())
        metrics["n_training_users"] = int((~holdout).sum())
        metrics["n_holdout_users"] = int(holdout.sum())
        metrics["learner"] = "blend" if learner is None else learner.kind
        if isinstance(learner, TreeEnsemble):
            metrics["n_trees"] = learner.n_trees
        del rows
        # 5: refit everything on all training data for serving
        t0 = time.perf_counter()
        kept = [n for n in self.component_names if n not in skipped]
        comps_full, sec_full, more, gen_full = fit_stage(data, store_full, kept)
        if more:
            # Trained on the early part, failed on all the data: the learner's features
            # would not match the components, so fit again without those.
            logger.warning("refitting hybrid without components=%s", ",".join(more))
            self.component_names = [n for n in self.component_names if n not in more]
            self.fit(
                data,
                show_progress=show_progress,
                features=store_full,
                skip_unrated=skip_unrated,
                skip_failed=skip_failed,
            )
            self.skipped_ = {**skipped, **more, **self.skipped_}
            return self
        timings["full_components"] = time.perf_counter() - t0
        builder = self._builder(comps_full, gen_full, store_full, data.user_map, data.item_map)
        check_feature_schema(builder_early.names, builder.names, "HybridRecommender.fit")
        ranker = HybridRanker(cfg.ranker, builder, learner)
        self.bind(
            comps_full, gen_full, ranker, store_full, data.user_items, data.user_map, data.item_map
        )
        self.skipped_ = skipped
        self.fit_seconds_ = {**sec_full, **{f"{k}_early": v for k, v in sec_early.items()}}
        timings["total"] = time.perf_counter() - t_start
        metrics["seconds"] = timings
        metrics["n_features"] = len(builder.names)
        metrics["sources"] = list(gen_full.source_names)
        self.training_metrics_ = metrics
        logger.info(
            "fitted hybrid learner=%s holdout_ndcg@10=%.4f blend=%.4f elapsed=%.1fs",
            metrics["learner"],
            metrics.get("holdout_ndcg@10", float("nan")),
            metrics.get("holdout_blend_ndcg@10", float("nan")),
            timings["total"],
        )
        return self

    # ------------------------------------------------------------------ queries
    def queries_for_users(self, user_idx: NDArray[np.int64]) -> Queries:
        """Queries of known users (their training items and recent items from the store)."""
        _, _, _, seen = self._check()
        assert self.user_map_ is not None and self.item_map_ is not None
        assert self.store_ is not None
        store_map = self.store_.item_map
        key = (id(store_map), len(store_map))
        if self._translation is None or self._translation[0] != key:
            self._translation = (key, _store_translation(store_map, self.item_map_))
        return _user_queries(
            user_idx,
            seen,
            self.store_,
            self.user_map_,
            self._translation[1],
            self.recsys_config.retrieval.recent_items,
            self.recsys_config.retrieval.recent_decay,
        )

    def queries_for_histories(self, histories: sp.csr_matrix) -> Queries:
        """Fold-in queries from a ``(n, n_items)`` history matrix.

        Stored values order the items in time (larger = later); the items with the
        ``recent_items`` largest values are the recent ones (ties to the higher index),
        weighted ``recent_decay ** age``.
        """
        self._check()
        h = sp.csr_matrix(histories, dtype=np.float64)
        if h.shape[1] != self.n_items:
            raise DataError(
                f"HybridRecommender: histories have {h.shape[1]} columns, the model has "
                f"{self.n_items} items"
            )
        h.sum_duplicates()
        cfg = self.recsys_config.retrieval
        n = h.shape[0]
        rows, items, age = latest_entries(h, cfg.recent_items)
        recent = sp.csr_matrix(
            ((cfg.recent_decay**age).astype(np.float32), (rows, items)), shape=h.shape
        )
        binary = sp.csr_matrix((np.ones(h.nnz, np.float32), h.indices, h.indptr), shape=h.shape)
        return Queries(np.full(n, -1, np.int64), binary, recent, np.ones(n, np.bool_))

    # ------------------------------------------------------------------ recommending
    def _cold_list(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        comps = self._check()[0]
        if COLD_START_SOURCE in comps:
            items, scores = comps[COLD_START_SOURCE].recommend(np.full(1, -1), k)
            return items[0], scores[0]
        return np.full(k, -1, np.int64), np.full(k, np.nan, np.float32)

    def _rank(
        self, q: Queries, k: int, exclude_seen: bool, *, learned: bool = True
    ) -> tuple[
        NDArray[np.int64], NDArray[np.float32], NDArray[np.object_], CandidateSet, NDArray[np.int64]
    ]:
        """Both stages for one block of queries."""
        _, gen, ranker, _ = self._check()
        limit = max(gen.candidates, k)
        cands = gen.generate(q, exclude_seen=exclude_seen, limit=limit)
        if learned:
            scores = ranker.score_candidates(cands, q)
        else:
            scores = ranker.blend(cands)
        items, top_scores, pos = cands.top(scores, k)
        sources = np.full(pos.shape, None, dtype=object)
        valid = pos >= 0
        if valid.any():
            sources[valid] = cands.sources()[pos[valid]]
        return items, top_scores, sources, cands, pos

    def recommend_lists(
        self,
        user_idx: ArrayLike,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        learned: bool = True,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.object_]]:
        """Top-``k`` items, scores and each item's sources (``"a|b"``) for user indices.

        Known users go through retrieval and the ranker; unknown users (``-1`` or outside
        the vocabulary) get the popularity list with source ``"popular"``. ``learned=False``
        ranks with the reciprocal-rank blend instead (the baseline).

        Returns
        -------
        items : (n, k) int64, scores : (n, k) float32, sources : (n, k) object
            ``-1`` / NaN / ``None`` pad rows with fewer eligible items.
        """
        if k < 1:
            raise ConfigError(f"HybridRecommender.recommend: k must be >= 1, got {k}")
        _, _, _, seen = self._check()
        users = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
        n = len(users)
        known = (users >= 0) & (users < self.n_users)
        known[known] = np.diff(seen.indptr)[users[known]] > 0
        items = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), np.nan, np.float32)
        sources = np.full((n, k), None, dtype=object)
        if (~known).any():
            ci, cs = self._cold_list(k)
            items[~known] = ci
            scores[~known] = cs
            sources[~known] = _cold_sources(ci)
        rows = np.flatnonzero(known)
        for lo in range(0, len(rows), _USER_BLOCK):
            block = rows[lo : lo + _USER_BLOCK]
            q = self.queries_for_users(users[block])
            items[block], scores[block], sources[block], _, _ = self._rank(
                q, k, exclude_seen, learned=learned
            )
        return items, scores, sources

    def recommend(
        self, user_idx: ArrayLike, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items per user, batched (see :meth:`recommend_lists`)."""
        items, scores, _ = self.recommend_lists(user_idx, k, exclude_seen=exclude_seen)
        return items, scores

    def recommend_for_history(
        self, histories: sp.csr_matrix, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Fold-in: both stages from history rows (see :meth:`queries_for_histories`).

        Empty rows get the popularity list.
        """
        items, scores, _ = self.recommend_for_history_lists(histories, k, exclude_seen=exclude_seen)
        return items, scores

    def recommend_for_history_lists(
        self, histories: sp.csr_matrix, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.object_]]:
        """:meth:`recommend_for_history` plus each item's sources."""
        if k < 1:
            raise ConfigError(f"HybridRecommender.recommend_for_history: k must be >= 1, got {k}")
        q_all = self.queries_for_histories(histories)
        n = q_all.n_rows
        items = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), np.nan, np.float32)
        sources = np.full((n, k), None, dtype=object)
        cold = q_all.cold
        if cold.any():
            ci, cs = self._cold_list(k)
            items[cold] = ci
            scores[cold] = cs
            sources[cold] = _cold_sources(ci)
        rows = np.flatnonzero(~cold)
        for lo in range(0, len(rows), _USER_BLOCK):
            block = rows[lo : lo + _USER_BLOCK]
            q = q_all.select(block)
            items[block], scores[block], sources[block], _, _ = self._rank(q, k, exclude_seen)
        return items, scores, sources

    def score(self, user_idx: ArrayLike, item_idx: ArrayLike) -> NDArray[np.float32]:
        """The ranker's score of user-item pairs; NaN for unknown users or items.

        Each user's candidates are retrieved as for a recommendation (seen items
        excluded) and the requested pairs joined to them (with no source when retrieval
        did not propose them, e.g. a seen item), so a recommended pair scores exactly what
        :meth:`recommend` reports for it.
        """
        _, _, ranker, seen = self._check()
        users, items, ok = score_pairs(
            "HybridRecommender", user_idx, item_idx, self.n_users, self.n_items
        )
        out = np.full(users.shape, np.nan, np.float32)
        ok[ok] = np.diff(seen.indptr)[users[ok]] > 0
        uniq, inverse = np.unique(users[ok], return_inverse=True)
        pos_ok = np.flatnonzero(ok)
        for lo in range(0, len(uniq), _USER_BLOCK):
            block = uniq[lo : lo + _USER_BLOCK]
            sel = (inverse >= lo) & (inverse < lo + _USER_BLOCK)
            q = self.queries_for_users(block)
            cands = self.generator.generate(q, exclude_seen=True)
            rows = (inverse[sel] - lo).astype(np.int64)
            cands = cands.with_pairs(rows, items[ok][sel])
            s = ranker.score_candidates(cands, q)
            keys = cands.rows * self.n_items + cands.items
            order = np.argsort(keys)
            want = rows * self.n_items + items[ok][sel]
            found = order[np.searchsorted(keys, want, sorter=order)]
            out[pos_ok[sel]] = s[found]
        return out

    def explain(
        self, user_idx: ArrayLike, k: int = 10, *, exclude_seen: bool = True
    ) -> dict[str, Any]:
        """Recommendations of known users with what drove them.

        Returns
        -------
        dict
            ``items``, ``scores``, ``sources`` as :meth:`recommend_lists` (``(n, k)``);
            ``blend`` the reciprocal-rank blend score of each item; ``features`` a
            ``(n, k, n_features) float32`` array (NaN for padding and missing values)
            and ``feature_names``. Unknown users get the popularity list and NaN
            features.
        """
        _, _, ranker, seen = self._check()
        users = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
        n = len(users)
        names = ranker.feature_names
        items, scores, sources = self.recommend_lists(users, k, exclude_seen=exclude_seen)
        feats = np.full((n, k, len(names)), np.nan, np.float32)
        blend = np.full((n, k), np.nan, np.float64)
        known = (users >= 0) & (users < self.n_users)
        known[known] = np.diff(seen.indptr)[users[known]] > 0
        rows = np.flatnonzero(known)
        for lo in range(0, len(rows), _USER_BLOCK):
            block = rows[lo : lo + _USER_BLOCK]
            q = self.queries_for_users(users[block])
            _, _, _, cands, pos = self._rank(q, k, exclude_seen)
            x = ranker.builder.build(cands, q)
            b = ranker.blend(cands)
            valid = pos >= 0
            sub = feats[block]
            sub[valid] = x[pos[valid]]
            feats[block] = sub
            bb = blend[block]
            bb[valid] = b[pos[valid]]
            blend[block] = bb
        return {
            "items": items,
            "scores": scores,
            "sources": sources,
            "blend": blend,
            "features": feats,
            "feature_names": names,
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write ``index/`` (retrieval) and ``ranker/`` under the artifact directory ``path``.

        The components and the feature store are saved by the pipeline (``models/``,
        ``features/``); :meth:`load` reads them back from there.
        """
        path = Path(path)
        self.generator.save(path / "index")
        self.ranker.save(path / "ranker")
        meta = {
            "format_version": _FORMAT_VERSION,
            "components": list(self.components),
            "training_metrics": self.training_metrics_,
            "skipped": self.skipped_,
        }
        (path / "ranker" / "hybrid.json").write_text(
            json.dumps(meta, indent=2, default=float) + "\n"
        )

    @classmethod
    def load(cls, path: Path) -> HybridRecommender:
        """The hybrid of an artifact directory (its components and feature store too).

        Raises
        ------
        ArtifactError
            If the artifact is damaged or was trained without the hybrid.
        """
        from recsys.pipeline import Pipeline

        hybrid = Pipeline.load(Path(path)).hybrid
        if not isinstance(hybrid, HybridRecommender):
            raise ArtifactError(f"artifact {path} has no hybrid ranker (trained with --models?)")
        return hybrid

    @classmethod
    def load_from(
        cls,
        path: Path,
        config: RecsysConfig,
        components: Mapping[str, Any],
        store: Any,
        seen: sp.csr_matrix,
        user_map: IdMap,
        item_map: IdMap,
    ) -> HybridRecommender:
        """Read ``index/`` and ``ranker/`` of an artifact over loaded components and store.

        Raises
        ------
        ArtifactError
            Missing or unreadable files, or components the hybrid needs are absent.
        FeatureSchemaError
            The store or components make other features than the ranker was trained on.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "ranker" / "hybrid.json").read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"hybrid: cannot read {path / 'ranker' / 'hybrid.json'}: {exc}"
            ) from exc
        names = list(meta["components"])
        missing = [n for n in names if n not in components]
        if missing:
            raise ArtifactError(f"hybrid: artifact {path} lacks components {missing}")
        if store is None:
            raise ArtifactError(f"hybrid: artifact {path} has no feature store (features/)")
        comps = {n: components[n] for n in names}
        hybrid = cls(config, names)
        gen = CandidateGenerator.load(path / "index", comps)
        builder = hybrid._builder(comps, gen, store, user_map, item_map)
        ranker = HybridRanker.load(path / "ranker", builder)
        hybrid.bind(comps, gen, ranker, store, seen, user_map, item_map)
        hybrid.training_metrics_ = dict(meta.get("training_metrics", {}))
        hybrid.skipped_ = dict(meta.get("skipped", {}))
        return hybrid


# ---------------------------------------------------------------------------- helpers
def _cold_sources(items: NDArray[np.int64]) -> NDArray[np.object_]:
    out = np.full(items.shape, None, dtype=object)
    out[items >= 0] = COLD_START_SOURCE
    return out


def _catalogue(data: TrainingData) -> Any:
    """An items frame covering every item of the vocabulary (the given one, completed)."""
    import pandas as pd

    ids = pd.DataFrame({"item_id": data.item_map.ids})
    if data.items is None or "item_id" not in data.items.columns:
        return ids
    known = data.item_map.to_index(data.items["item_id"].to_numpy())
    have = np.zeros(data.n_items, np.bool_)
    have[known[known >= 0]] = True
    extra = ids[~have]
    items = data.items[known >= 0]
    return pd.concat([items, extra], ignore_index=True) if len(extra) else items


def _store_translation(store_map: IdMap, item_map: IdMap) -> NDArray[np.int64] | None:
    """Store item index -> pipeline item index (``-1`` unknown); ``None`` when they agree."""
    if store_map is item_map or (len(store_map) == len(item_map) and store_map == item_map):
        return None
    return item_map.to_index(store_map.ids)


def _recent_matrix(
    seqs: NDArray[np.int64],
    translation: NDArray[np.int64] | None,
    n_items: int,
    decay: float,
) -> sp.csr_matrix:
    """``(n, n_items)`` recency weights from left-aligned (oldest first) store sequences."""
    n = seqs.shape[0]
    valid = seqs >= 0
    if translation is not None:
        mapped = np.where(valid, translation[np.maximum(seqs, 0)], -1)
    else:
        mapped = np.where(valid, seqs, -1)
    valid = mapped >= 0
    last = valid.sum(axis=1, keepdims=True) - 1  # position of the latest valid item
    age = last - np.cumsum(valid, axis=1) + 1
    r, c = np.nonzero(valid)
    m = sp.csr_matrix(
        ((decay ** age[r, c]).astype(np.float32), (r, mapped[r, c])), shape=(n, n_items)
    )
    m.sum_duplicates()  # a repeated item keeps the weight of all its occurrences
    return m


def _user_queries(
    user_idx: NDArray[np.int64],
    seen: sp.csr_matrix,
    store: Any,
    user_map: IdMap,
    translation: NDArray[np.int64] | None,
    recent_items: int,
    decay: float,
) -> Queries:
    """Queries of known users: training items from ``seen``, recent items from the store."""
    users = np.asarray(user_idx, np.int64)
    history = sp.csr_matrix(seen[users], dtype=np.float32)
    length = min(recent_items, int(store.sequence_length))
    seqs = store.user_sequences(user_map.to_ids(users), length)
    recent = _recent_matrix(seqs, translation, seen.shape[1], decay)
    return Queries(users, history, recent, np.zeros(len(users), np.bool_))


class _TrainingRows:
    """The ranker's training rows: features, labels and the user of every row."""

    def __init__(
        self,
        features: NDArray[np.float32],
        labels: NDArray[np.bool_],
        user_pos: NDArray[np.int64],
        cands: list[tuple[CandidateSet, Queries, NDArray[np.int64]]],
    ) -> None:
        self.features = features
        self.labels = labels
        self.user_pos = user_pos
        self.cands = cands

    @classmethod
    def collect(
        cls,
        config: RecsysConfig,
        users: NDArray[np.int64],
        data: TrainingData,
        labels: sp.csr_matrix,
        store: Any,
        gen: CandidateGenerator,
        builder: FeatureBuilder,
    ) -> _TrainingRows:
        """Retrieve candidates for ``users`` over ``data`` (the fit part) and label them."""
        feats, labs, upos, blocks = [], [], [], []
        seen = data.user_items
        rc = config.retrieval
        translation = _store_translation(store.item_map, data.item_map)
        for lo in range(0, len(users), _USER_BLOCK):
            block = users[lo : lo + _USER_BLOCK]
            q = _user_queries(
                block, seen, store, data.user_map, translation, rc.recent_items, rc.recent_decay
            )
            cands = gen.generate(q, exclude_seen=True)
            x = builder.build(cands, q)
            y = np.asarray(labels[block[cands.rows], cands.items]).ravel() > 0
            feats.append(x)
            labs.append(y)
            upos.append(cands.rows + lo)
            blocks.append((cands, q, np.arange(lo, lo + len(block))))
        return cls(
            np.vstack(feats) if feats else np.zeros((0, len(builder.names)), np.float32),
            np.concatenate(labs) if labs else np.zeros(0, np.bool_),
            np.concatenate(upos) if upos else np.zeros(0, np.int64),
            blocks,
        )

    def report(
        self,
        ranker: HybridRanker,
        holdout: NDArray[np.bool_],
        labels: sp.csr_matrix,
        users: NDArray[np.int64],
    ) -> dict[str, Any]:
        """Candidate recall, and NDCG@10 of the ranker, the blend and each source on the
        held-out users' label slices (every label item counts, retrieved or not)."""
        from recsys.eval.metrics import ndcg_at_k, recall_at_k

        n_rel_all = np.diff(labels.indptr)[users]
        out: dict[str, Any] = {
            "candidate_recall": float(self.labels.sum() / max(1, n_rel_all.sum())),
            "candidates_per_user": float(len(self.labels) / max(1, len(users))),
        }
        if not holdout.any():
            return out
        keys = ["blend"] + (["ranker"] if ranker.learner is not None else [])
        names = self.cands[0][0].source_names if self.cands else ()
        keys += [f"source:{name}" for name in names]
        per: dict[str, list[NDArray[np.float64]]] = {k: [] for k in keys}
        rec: dict[str, list[NDArray[np.float64]]] = {k: [] for k in keys}
        offset = 0
        for cands, _, pos in self.cands:
            hold_rows = holdout[pos]
            x = self.features[offset : offset + cands.nnz]
            y = self.labels[offset : offset + cands.nnz]
            offset += cands.nnz
            if not hold_rows.any():
                continue
            n_rel = n_rel_all[pos][hold_rows]
            for key in keys:
                if key == "ranker":
                    s = ranker.score_features(x)
                elif key == "blend":
                    s = ranker.blend(cands)
                else:  # a source alone: its own order (unproposed candidates last)
                    col = names.index(key.removeprefix("source:"))
                    s = -cands.source_ranks[:, col].astype(np.float64)
                _, _, top = cands.top(s, 10)
                hits = np.where(top >= 0, y[np.maximum(top, 0)], False)[hold_rows]
                per[key].append(ndcg_at_k(hits, n_rel, 10))
                rec[key].append(recall_at_k(hits, n_rel, 10))
        for key in keys:
            if per[key]:
                label = "" if key == "ranker" else f"{key}_"
                out[f"holdout_{label}ndcg@10"] = float(np.concatenate(per[key]).mean())
                out[f"holdout_{label}recall@10"] = float(np.concatenate(rec[key]).mean())
        return out
