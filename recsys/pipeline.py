"""The pipeline: fit every configured component on one training set, recommend, save/load.

One artifact, trained once, serves the batch job, the online API and offline evaluation;
all three go through one recommend path, :meth:`Pipeline.recommend_block` (a block of
queries: known users or histories to fold in, with exclusions and filters; see
:mod:`recsys.recommend`). ``recommend``, ``recommend_indices``, ``recommend_lists`` and
``recommend_for_history[_lists]`` are thin wrappers over it.

With ``[pipeline] hybrid = true`` (the default) the artifact is the two-stage engine:
every configured component, the retrieval stage (FAISS indexes over the embedding models'
item vectors, co-visitation counts: ``index/``) and the hybrid ranker (``ranker/``) of
:class:`recsys.ranking.HybridRecommender`, which is the pipeline's default answer under the
component name ``hybrid``. Each component stays available on its own (``model=<name>``),
and ``model="blend"`` ranks the same candidates with the reciprocal-rank blend (the
baseline the learned ranker is measured against).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from recsys.artifacts import fingerprint_frame, verify_artifact, write_artifact
from recsys.config import RecsysConfig, load_config
from recsys.errors import ArtifactError, ConfigError, DataError
from recsys.models import get_model_class
from recsys.recommend import FOLD_IN, Recommendations, RecommendQueries, recommend_block
from recsys.types import IdMap, TrainingData

__all__ = ["BLEND", "HYBRID", "RECOMMENDATION_COLUMNS", "Pipeline"]

logger = logging.getLogger(__name__)

#: Columns of every recommendation file and frame (the file contract).
RECOMMENDATION_COLUMNS = ["user_id", "item_id", "rank", "score", "sources"]
COLD_START_SOURCE = "popular"
#: Component name of the two-stage hybrid, and of its rank-blend baseline.
HYBRID = "hybrid"
BLEND = "blend"


# ---------------------------------------------------------------------------- artifact layout
#: The pipeline's files inside an artifact directory (besides ``manifest.json``).
PIPELINE_FILE = "pipeline.json"


def vocabulary_path(path: Path, entity: str) -> Path:
    """The id vocabulary of ``entity`` (``"users"`` or ``"items"``) in an artifact."""
    return Path(path) / "vocab" / f"{entity}.parquet"


def read_components(path: Path) -> list[str]:
    """The component names of an artifact, the primary first (``pipeline.json``).

    Raises
    ------
    ArtifactError
        If the file is missing or malformed.
    """
    try:
        components = json.loads((Path(path) / PIPELINE_FILE).read_text())["components"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"artifact {path}: cannot read {PIPELINE_FILE} ({exc})") from exc
    return list(components)


def model_version(manifest: dict[str, Any]) -> str:
    """The model version of an artifact: its creation time and data fingerprint prefix."""
    fp = str(manifest.get("data_fingerprint", ""))[:12]
    return f"{manifest.get('created', 'unsaved')}:{fp}"


def resolve_component(components: Sequence[str], name: str | None) -> str:
    """The component that answers ``name`` (``None``: the primary; ``"blend"`` needs the
    hybrid).

    Raises
    ------
    ConfigError
        If the artifact has no such component.
    """
    name = name or components[0]
    if name in components or (name == BLEND and HYBRID in components):
        return name
    available = list(components) + ([BLEND] if HYBRID in components else [])
    raise ConfigError(f"component {name!r} is not in this artifact; it has: {', '.join(available)}")


class _ComponentView:
    """One component (or ``"blend"``) of a pipeline as a model whose ``recommend`` is the
    pipeline's one recommend path (:meth:`Pipeline.recommend_block`): what the evaluator
    ranks with."""

    def __init__(self, pipeline: Pipeline, name: str) -> None:
        self.pipeline = pipeline
        self.name = name

    def recommend(
        self, user_idx: ArrayLike, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        return self.pipeline.recommend_indices(
            user_idx, k, model=self.name, exclude_seen=exclude_seen
        )


class Pipeline:
    """A trained set of components over one user/item vocabulary.

    Build with :meth:`fit` or :meth:`load`. ``recommend`` uses the primary component for
    known users and popularity for unknown users; pass ``model=`` to use one component.
    The primary is ``"hybrid"`` when the artifact has the hybrid ranker (the default
    configuration), else the first configured retriever.

    Stability: provisional

    Examples
    --------
    >>> from recsys.data import load_dataset
    >>> from recsys.config import load_config
    >>> data = load_dataset("ml-100k")
    >>> cfg = load_config(pipeline={"retrievers": ["itemknn", "popular"], "rankers": [],
    ...                             "hybrid": False})
    >>> pipe = Pipeline.fit(data.interactions, items=data.items, config=cfg,
    ...                     show_progress=False)
    >>> recs = pipe.recommend([196, 186], k=5)
    >>> list(recs.columns)
    ['user_id', 'item_id', 'rank', 'score', 'sources']
    """

    def __init__(
        self,
        config: RecsysConfig,
        user_map: IdMap,
        item_map: IdMap,
        models: dict[str, Any],
        *,
        components: Sequence[str] | None = None,
        features: Any | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        if not models:
            raise ConfigError("Pipeline needs at least one fitted component")
        self.config = config
        self.user_map = user_map
        self.item_map = item_map
        self.models = models
        self.components = list(components or models)
        self.features = features
        self.manifest = manifest or {}

    def __repr__(self) -> str:
        return (
            f"Pipeline(components={self.components}, n_users={len(self.user_map)}, "
            f"n_items={len(self.item_map)})"
        )

    @property
    def primary(self) -> str:
        """The component that answers known users by default (``"hybrid"`` when present)."""
        return self.components[0]

    @property
    def hybrid(self) -> Any | None:
        """The :class:`~recsys.ranking.HybridRecommender`, when the artifact has one."""
        return self.models.get(HYBRID)

    @property
    def version(self) -> str:
        """Model version: the artifact's creation time and data fingerprint prefix."""
        return model_version(self.manifest)

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(
        cls,
        interactions: pd.DataFrame,
        *,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        item_relations: pd.DataFrame | None = None,
        config: RecsysConfig | None = None,
        models: Sequence[str] | None = None,
        show_progress: bool = True,
    ) -> Pipeline:
        """Train the feature store, every component and (by default) the hybrid.

        Parameters
        ----------
        interactions
            Validated interactions (see :func:`recsys.data.read_interactions`).
        items, users, item_relations
            Optional item catalogue, user attributes and item knowledge-graph triples.
        config
            The configuration; default: :func:`recsys.config.load_config` defaults (the
            full hybrid pipeline).
        models
            Train only these components (CLI ``--models``), in this order; the first is
            the primary. Name ``"hybrid"`` among them to also train the hybrid over the
            others. Default: the whole pipeline of the config.

        Notes
        -----
        Without explicit ``models``, a component that cannot be trained on this data is
        left out with a warning and recorded in the manifest (``skipped_components``):
        ``svdpp`` when the interactions have no ratings, ``doc2vec`` when no item has a
        document (no items file), and any component whose training fails (the reason is
        the error). Named explicitly, such a component fails instead.
        """
        from recsys.features import FeatureStore
        from recsys.ranking.components import fit_components

        config = config or load_config()
        explicit = bool(models)
        names = list(models) if models else config.components()
        with_hybrid = HYBRID in names if explicit else config.pipeline.hybrid
        names = [n for n in names if n != HYBRID]
        if not names:
            raise ConfigError("the pipeline needs at least one component besides 'hybrid'")
        for name in names:
            get_model_class(name)  # unknown names fail before any work
        if with_hybrid and COLD_START_SOURCE not in names:
            names.append(COLD_START_SOURCE)  # the hybrid's cold-start answer
        data = TrainingData.from_frame(interactions, items=items, users=users)
        t0 = time.perf_counter()
        features = FeatureStore.build(
            interactions,
            items=items,
            users=users,
            item_relations=item_relations,
            sequence_length=max(config.data.sequence_length, config.retrieval.recent_items),
            show_progress=show_progress,
        )
        timings: dict[str, float] = {"features": time.perf_counter() - t0}
        skipped = _unavailable(names, data, features) if not explicit else {}
        for name, reason in skipped.items():
            logger.warning("skipping component=%s: %s", name, reason)
        names = [n for n in names if n not in skipped]
        metrics: dict[str, Any] = {}
        fitted: dict[str, Any]
        if with_hybrid:
            from recsys.ranking import HybridRecommender

            t0 = time.perf_counter()
            hybrid = HybridRecommender(config, names).fit(
                data,
                show_progress=show_progress,
                features=features,
                skip_unrated=not explicit,
                skip_failed=not explicit,
            )
            timings[HYBRID] = time.perf_counter() - t0
            timings.update(hybrid.fit_seconds_)
            skipped.update(hybrid.skipped_)
            fitted = {HYBRID: hybrid, **hybrid.components}
            metrics["ranker"] = hybrid.training_metrics_
            component_names = [HYBRID, *hybrid.components]
        else:
            fitted, seconds, more = fit_components(
                names,
                data,
                config,
                store=features,
                show_progress=show_progress,
                skip_unrated=not explicit,
                skip_failed=not explicit,
            )
            timings.update(seconds)
            skipped.update(more)
            component_names = list(fitted)
        if not component_names:
            raise DataError("no component could be trained on this data: " + json.dumps(skipped))
        metrics["fit_seconds"] = timings
        manifest = {
            "data_fingerprint": fingerprint_frame(interactions),
            "metrics": metrics,
            "data": {
                "n_users": data.n_users,
                "n_items": data.n_items,
                "n_interactions": data.n_interactions,
            },
            "skipped_components": skipped,
        }
        return cls(
            config,
            data.user_map,
            data.item_map,
            fitted,
            components=component_names,
            features=features,
            manifest=manifest,
        )

    # ------------------------------------------------------------------ recommending
    def _model(self, name: str | None) -> tuple[str, Any]:
        name = resolve_component(self.components, name)
        if name == BLEND:
            return BLEND, _ComponentView(self, BLEND)
        return name, self.models[name]

    def recommend_block(
        self,
        queries: RecommendQueries,
        k: int = 10,
        *,
        model: str | None = None,
        exclude_seen: bool = True,
    ) -> Recommendations:
        """The one recommend path: top-``k`` lists of a block of queries (known users, or
        histories to fold in, with exclusions, allow sets and filters); see
        :func:`recsys.recommend.recommend_block`. Every other recommend call of the
        pipeline, the service, the batch job and the evaluator goes through it."""
        return recommend_block(self, queries, k, model=model, exclude_seen=exclude_seen)

    def recommend_indices(
        self,
        user_idx: ArrayLike,
        k: int = 10,
        *,
        model: str | None = None,
        exclude_seen: bool = True,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` item indices and scores for user indices (``-1`` = unknown user)."""
        out = self.recommend_block(
            RecommendQueries.for_users(user_idx), k, model=model, exclude_seen=exclude_seen
        )
        return out.items, out.scores

    def recommend_lists(
        self,
        user_idx: ArrayLike,
        k: int = 10,
        *,
        model: str | None = None,
        exclude_seen: bool = True,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[Any]]:
        """:meth:`recommend_indices` plus the ``sources`` of every item, ``(n, k)`` object.

        For the hybrid, an item's sources are the candidate sources that proposed it
        (``"covisit|itemknn@recent"``); for one component, its name (``"popular"`` for
        unknown users); ``None`` pads.
        """
        out = self.recommend_block(
            RecommendQueries.for_users(user_idx), k, model=model, exclude_seen=exclude_seen
        )
        return out.items, out.scores, out.sources

    def recommend(
        self,
        user_ids: ArrayLike,
        k: int = 10,
        *,
        model: str | None = None,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-``k`` recommendations for external user ids, as a long frame.

        Parameters
        ----------
        user_ids
            External ids; unknown ones get the cold-start answer.
        k
            Items per user.
        model
            ``None``: the full pipeline (the hybrid when the artifact has one);
            ``"hybrid"``, ``"blend"`` or a component name.
        exclude_seen
            Leave each user's training items out.

        Returns
        -------
        pandas.DataFrame
            Columns ``user_id``, ``item_id`` (ids as given), ``rank`` (1..k), ``score``,
            ``sources``; users in input order, ``k`` rows each (fewer only when the
            catalogue has fewer eligible items). Unknown users get the popularity list
            with ``sources == "popular"``; hybrid items carry the sources that proposed
            them, ``|``-separated.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        ids = np.atleast_1d(np.asarray(user_ids))
        idx = self.user_map.to_index(ids)
        items, scores, sources = self.recommend_lists(
            idx, k, model=model, exclude_seen=exclude_seen
        )
        return self._to_frame(ids, items, scores, sources)

    def explain(
        self, user_ids: ArrayLike, k: int = 10, *, exclude_seen: bool = True
    ) -> pd.DataFrame:
        """The hybrid's recommendations with what drove each item.

        Returns
        -------
        pandas.DataFrame
            The columns of :meth:`recommend`, then ``blend`` (the reciprocal-rank blend
            score) and every ranker feature: ``score:<component>`` (each component's
            score), ``rank:<component>``, ``rank@<source>`` (rank in each candidate
            source, missing when it did not propose the item), popularity, recency and
            content features.

        Raises
        ------
        ConfigError
            If the artifact has no hybrid ranker.
        """
        if self.hybrid is None:
            raise ConfigError("explain needs the hybrid ranker; this artifact has none")
        ids = np.atleast_1d(np.asarray(user_ids))
        idx = self.user_map.to_index(ids)
        out = self.hybrid.explain(idx, k, exclude_seen=exclude_seen)
        frame = self._to_frame(ids, out["items"], out["scores"], out["sources"])
        valid = out["items"] >= 0
        extra = {"blend": out["blend"][valid]}
        feats = out["features"][valid]
        for j, name in enumerate(out["feature_names"]):
            extra[name] = feats[:, j]
        return pd.concat([frame, pd.DataFrame(extra)], axis=1)

    def score_pairs(self, user_ids: ArrayLike, item_ids: ArrayLike) -> pd.DataFrame:
        """Every component's score of given user-item pairs.

        Returns
        -------
        pandas.DataFrame
            ``user_id``, ``item_id`` and one float column per component, named after it:
            ``svdpp`` holds the predicted rating (``predict_rating``), ``deepfm``/``din``
            the click probability, ``hybrid`` the ranker's score, the others their
            ranking score. NaN for unknown users or items (and, for ``svdpp``, a
            bias-only rating falls back as ``predict_rating`` documents, only when both
            ids are known).
        """
        users = np.atleast_1d(np.asarray(user_ids))
        items = np.atleast_1d(np.asarray(item_ids))
        if users.shape != items.shape:
            raise DataError(
                f"score_pairs: {users.shape[0]} user ids and {items.shape[0]} item ids; give "
                "one of each per pair"
            )
        u = self.user_map.to_index(users)
        i = self.item_map.to_index(items)
        both = (u >= 0) & (i >= 0)
        out: dict[str, Any] = {"user_id": users, "item_id": items}
        for name in self.components:
            model = self.models[name]
            col = np.full(len(u), np.nan, np.float64)
            if both.any():
                if hasattr(model, "predict_rating"):
                    col[both] = model.predict_rating(u[both], i[both])
                else:
                    col[both] = model.score(u[both], i[both])
            out[name] = col
        return pd.DataFrame(out)

    def history_of(self, user_id: Any) -> NDArray[Any]:
        """External ids of the items a known user interacted with in training (empty if unknown)."""
        idx = int(self.user_map.to_index([user_id])[0])
        if idx < 0:
            return self.item_map.ids[:0]
        seen = self.training_matrix()
        return self.item_map.to_ids(seen.indices[seen.indptr[idx] : seen.indptr[idx + 1]])

    def training_matrix(self) -> sp.csr_matrix:
        """The binary ``(n_users, n_items)`` training matrix (the seen items)."""
        for name in self.components:
            seen = getattr(self.models[name], "user_items_", None)
            if seen is not None:
                return sp.csr_matrix(seen)
        hybrid = self.hybrid
        if hybrid is not None and hybrid.seen_ is not None:
            return sp.csr_matrix(hybrid.seen_)
        raise ConfigError("no component of this pipeline holds the training matrix")

    def histories_matrix(self, histories: Sequence[Sequence[Any]]) -> sp.csr_matrix:
        """A binary ``(len(histories), n_items)`` matrix of item-id lists; unknown ids skipped."""
        return self._histories(histories, ordered=False)

    def _item_rows(self, histories: Sequence[Sequence[Any]]) -> list[NDArray[np.int64]]:
        """Item-id lists as item-index arrays, unknown ids skipped."""
        dtype = self.item_map.ids.dtype
        out = []
        for h in histories:
            idx = self.item_map.to_index(np.asarray(h, dtype=dtype)) if len(h) else np.empty(0)
            out.append(np.asarray(idx, np.int64)[np.asarray(idx) >= 0])
        return out

    def _histories(self, histories: Sequence[Sequence[Any]], *, ordered: bool) -> sp.csr_matrix:
        """History rows; with ``ordered``, values are positions (1 = oldest, larger = later)."""
        from recsys.recommend import _history_matrix

        return _history_matrix(self._item_rows(histories), len(self.item_map), ordered=ordered)

    def recommend_for_history(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        model: str | None = None,
        exclude_items: Sequence[Sequence[Any]] | None = None,
    ) -> tuple[NDArray[Any], NDArray[np.float32], NDArray[Any]]:
        """Fold-in: recommendations for arbitrary item-id histories, without refitting.

        This is the path for users with fresh events and for unknown users who bring
        ``recent_items``. Items of each history (and of ``exclude_items``) are excluded.
        Histories are read oldest first (the last items are the most recent ones, which
        seed the hybrid's neighbour, co-visitation and content sources). When the
        component cannot fold in, the popularity list is used.

        Returns
        -------
        item_ids : (n, k) object
            External ids; ``None`` pads rows with fewer eligible items.
        scores : (n, k) float32
        sources : (n,) object
            The component that produced each list (``"popular"`` for empty histories).
            :meth:`recommend_for_history_lists` gives the sources of every item instead.
        """
        ids, scores, _, names = self._fold_in_lists(histories, k, model, exclude_items)
        return ids, scores, names

    def recommend_for_history_lists(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        model: str | None = None,
        exclude_items: Sequence[Sequence[Any]] | None = None,
    ) -> tuple[NDArray[Any], NDArray[np.float32], NDArray[Any]]:
        """:meth:`recommend_for_history` with the sources of every item, ``(n, k)`` object.

        For the hybrid, an item's sources are the candidate sources that proposed it
        (``"covisit|itemknn@recent"``); for one component, its name (``"popular"`` for
        empty histories); ``None`` pads.
        """
        ids, scores, sources, _ = self._fold_in_lists(histories, k, model, exclude_items)
        return ids, scores, sources

    def _fold_in_lists(
        self,
        histories: Sequence[Sequence[Any]],
        k: int,
        model: str | None,
        exclude_items: Sequence[Sequence[Any]] | None,
    ) -> tuple[NDArray[Any], NDArray[np.float32], NDArray[Any], NDArray[Any]]:
        """Fold-in lists through :meth:`recommend_block`: item ids, scores, per-item
        sources and per-row producer names."""
        from recsys.protocols import FoldIn

        queries = RecommendQueries.for_histories(
            self._item_rows(histories),
            exclude=self._item_rows(exclude_items) if exclude_items else None,
        )
        out = self.recommend_block(queries, k, model=model)
        name, m = self._model(model)
        if name == BLEND or not isinstance(m, FoldIn):
            name = COLD_START_SOURCE if COLD_START_SOURCE in self.models else self.primary
        names = np.where(out.strategy == FOLD_IN, name, COLD_START_SOURCE).astype(object)
        ids = np.full(out.items.shape, None, dtype=object)
        valid = out.items >= 0
        ids[valid] = self.item_map.to_ids(out.items[valid])
        return ids, out.scores, out.sources, names

    def similar_items(self, item_id: Any, k: int = 10) -> pd.DataFrame:
        """Items most similar to ``item_id`` from the first component that can tell.

        Returns ``item_id``, ``score``, ``rank``, ``sources`` (empty for unknown items).
        """
        from recsys.protocols import SimilarItems

        idx = self.item_map.to_index([item_id])
        for name in self.components:
            m = self.models[name]
            if isinstance(m, SimilarItems) and idx[0] >= 0:
                items, scores = m.similar_items(idx, k)
                ok = items[0] >= 0
                return pd.DataFrame(
                    {
                        "item_id": self.item_map.to_ids(items[0][ok]),
                        "score": scores[0][ok],
                        "rank": np.arange(1, int(ok.sum()) + 1, dtype=np.int32),
                        "sources": name,
                    }
                )
        return pd.DataFrame({"item_id": [], "score": [], "rank": [], "sources": []})

    def _to_frame(
        self,
        user_ids: NDArray[Any],
        items: NDArray[np.int64],
        scores: NDArray[np.float32],
        sources: NDArray[Any],
    ) -> pd.DataFrame:
        n = items.shape[0]
        valid = items >= 0
        rows = np.repeat(np.arange(n), valid.sum(axis=1))
        ranks = np.cumsum(valid, axis=1)[valid]
        src = np.asarray(sources, dtype=object)
        src = src[valid] if src.ndim == 2 else src[rows]
        return pd.DataFrame(
            {
                "user_id": user_ids[rows],
                "item_id": self.item_map.to_ids(items[valid]),
                "rank": ranks.astype(np.int32),
                "score": scores[valid].astype(np.float32),
                "sources": src,
            }
        )

    def training_data(self) -> TrainingData:
        """The training interactions as :class:`TrainingData` (binary, from the seen matrix)."""
        coo = sp.coo_matrix(self.training_matrix())
        return TrainingData(
            self.user_map, self.item_map, coo.row.astype(np.int64), coo.col.astype(np.int64)
        )

    def evaluate(
        self,
        test: pd.DataFrame,
        ks: Sequence[int] = (10,),
        *,
        models: Sequence[str] | None = None,
        item_vectors: Any = None,
    ) -> pd.DataFrame:
        """Top-N metrics of every component on ``test`` (full ranking, seen items excluded).

        By default every component, the hybrid, and (after it) ``blend``, the hybrid's
        reciprocal-rank baseline.

        Returns one row per component, flat metric columns (``"ndcg@10"``, ...).
        """
        from recsys.eval import evaluate_model

        train = self.training_data()
        if item_vectors is None and self.features is not None:
            try:
                item_vectors = _genre_vectors(self.features, self.item_map)
            except Exception:  # a store without genres: the runner's default
                item_vectors = None
        names = list(models) if models else list(self.components)
        if not models and self.hybrid is not None:
            names.insert(names.index(HYBRID) + 1, BLEND)
        rows = {}
        for name in names:
            self._model(name)  # unknown names fail here
            view: Any = _ComponentView(self, name)  # evaluate_model calls recommend only
            rows[name] = evaluate_model(view, train, test, ks=tuple(ks), item_vectors=item_vectors)
        return pd.DataFrame.from_dict(rows, orient="index")

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> Path:
        """Write the artifact directory (atomically) with a checksummed manifest."""
        path = Path(path)

        def fill(tmp: Path) -> None:
            (tmp / "vocab").mkdir()
            self.user_map.save(vocabulary_path(tmp, "users"))
            self.item_map.save(vocabulary_path(tmp, "items"))
            if self.features is not None:
                self.features.save(tmp / "features")
            for name, model in self.models.items():
                if name == HYBRID:
                    model.save(tmp)  # index/ and ranker/
                else:
                    model.save(tmp / "models" / name)
            (tmp / PIPELINE_FILE).write_text(
                json.dumps({"components": self.components}, indent=2) + "\n"
            )

        manifest = write_artifact(
            path,
            fill,
            config=self.config.model_dump(mode="json"),
            data_fingerprint=str(self.manifest.get("data_fingerprint", "")),
            metrics=self.manifest.get("metrics", {}),
            extra={
                "data": self.manifest.get("data", {}),
                "skipped_components": self.manifest.get("skipped_components", {}),
            },
        )
        self.manifest = manifest
        return path

    @classmethod
    def load(cls, path: Path) -> Pipeline:
        """Load an artifact, verifying every checksum first.

        Raises
        ------
        ArtifactError
            If the directory is missing, damaged or of another format version.
        FeatureSchemaError
            If the feature store no longer gives the features the hybrid ranker was
            trained on.
        """
        path = Path(path)
        manifest = verify_artifact(path)
        config = RecsysConfig(**manifest["config"])
        components = read_components(path)
        user_map = IdMap.load(vocabulary_path(path, "users"))
        item_map = IdMap.load(vocabulary_path(path, "items"))
        models: dict[str, Any] = {
            name: get_model_class(name).load(path / "models" / name)
            for name in components
            if name != HYBRID
        }
        features = None
        if (path / "features").is_dir():
            from recsys.features import FeatureStore

            features = FeatureStore.load(path / "features")
        if HYBRID in components:
            from recsys.ranking import HybridRecommender

            seen = next(
                m.user_items_
                for m in models.values()
                if getattr(m, "user_items_", None) is not None
            )
            models[HYBRID] = HybridRecommender.load_from(
                path, config, models, features, seen, user_map, item_map
            )
        models = {name: models[name] for name in components}
        logger.info("loaded artifact path=%s components=%s", path, components)
        return cls(
            config,
            user_map,
            item_map,
            models,
            components=components,
            features=features,
            manifest=manifest,
        )


def _genre_vectors(store: Any, item_map: IdMap) -> sp.csr_matrix:
    """Item genre vectors in the pipeline's item order (for diversity@k)."""
    from recsys.ranking.features import _item_rows

    return _item_rows(store.item_genre_matrix(), store.item_map, item_map)


def _unavailable(names: Sequence[str], data: TrainingData, store: Any) -> dict[str, str]:
    """Default components this data cannot train, and why."""
    from recsys.ranking.components import requires_ratings

    out: dict[str, str] = {}
    for name in names:
        if data.rating is None and requires_ratings(name):
            out[name] = "needs explicit ratings; the training data has none"
        if name == "doc2vec":
            docs = store.item_documents()["tokens"]
            if not any(len(t) for t in docs):
                out[name] = "needs item documents (titles, text, genres); no items file given"
    return out
