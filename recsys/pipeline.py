"""The pipeline: fit every configured component on one training set, recommend, save/load.

One artifact, trained once, serves the batch job, the online API and offline evaluation;
all three call :meth:`Pipeline.recommend`.
"""

from __future__ import annotations

import inspect
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
from recsys.models import BaseRecommender, get_model_class
from recsys.types import IdMap, TrainingData

__all__ = ["RECOMMENDATION_COLUMNS", "Pipeline"]

logger = logging.getLogger(__name__)

#: Columns of every recommendation file and frame (the file contract).
RECOMMENDATION_COLUMNS = ["user_id", "item_id", "rank", "score", "sources"]
COLD_START_SOURCE = "popular"


class Pipeline:
    """A trained set of components over one user/item vocabulary.

    Build with :meth:`fit` or :meth:`load`. ``recommend`` uses the primary component (the
    first configured retriever) for known users and popularity for unknown users; pass
    ``model=`` to use one component.

    Stability: provisional

    Examples
    --------
    >>> from recsys.data import load_dataset
    >>> data = load_dataset("ml-100k")
    >>> pipe = Pipeline.fit(data.interactions, items=data.items, show_progress=False)
    >>> recs = pipe.recommend([196, 186], k=5)
    >>> list(recs.columns)
    ['user_id', 'item_id', 'rank', 'score', 'sources']
    """

    def __init__(
        self,
        config: RecsysConfig,
        user_map: IdMap,
        item_map: IdMap,
        models: dict[str, BaseRecommender],
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
        """The component that answers known users by default."""
        return self.components[0]

    @property
    def version(self) -> str:
        """Model version: the artifact's creation time and data fingerprint prefix."""
        fp = str(self.manifest.get("data_fingerprint", ""))[:12]
        return f"{self.manifest.get('created', 'unsaved')}:{fp}"

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
        """Train the feature store and every component on validated interactions.

        Parameters
        ----------
        interactions
            Validated interactions (see :func:`recsys.data.read_interactions`).
        items, users, item_relations
            Optional item catalogue, user attributes and item knowledge-graph triples.
        config
            The configuration; default: :func:`recsys.config.load_config` defaults.
        models
            Train only these components (CLI ``--models``), in this order; the first is
            the primary. Default: every component of the config.
        """
        config = config or load_config()
        names = list(models) if models else config.components()
        for name in names:
            get_model_class(name)  # unknown names fail before any work
        data = TrainingData.from_frame(interactions, items=items, users=users)
        from recsys.features import FeatureStore

        t0 = time.perf_counter()
        features = FeatureStore.build(
            interactions,
            items=items,
            users=users,
            item_relations=item_relations,
            sequence_length=config.data.sequence_length,
            show_progress=show_progress,
        )
        timings = {"features": time.perf_counter() - t0}
        fitted: dict[str, BaseRecommender] = {}
        for name in names:
            model_cls = get_model_class(name)
            params = config.model_params(name)
            if "device" in model_cls.Config.model_fields:
                params.setdefault("device", config.training.device)
            logger.info("training component=%s params=%s", name, params)
            t0 = time.perf_counter()
            fit_kwargs: dict[str, Any] = {}
            if "documents" in inspect.signature(model_cls.fit).parameters:
                # content models read the feature store's item documents (KG tokens included)
                fit_kwargs["documents"] = features.item_documents()
            fitted[name] = model_cls(**params).fit(data, show_progress=show_progress, **fit_kwargs)
            timings[name] = time.perf_counter() - t0
        manifest = {
            "data_fingerprint": fingerprint_frame(interactions),
            "metrics": {"fit_seconds": timings},
            "data": {
                "n_users": data.n_users,
                "n_items": data.n_items,
                "n_interactions": data.n_interactions,
            },
        }
        return cls(
            config,
            data.user_map,
            data.item_map,
            fitted,
            components=names,
            features=features,
            manifest=manifest,
        )

    # ------------------------------------------------------------------ recommending
    def _model(self, name: str | None) -> tuple[str, BaseRecommender]:
        name = name or self.primary
        if name not in self.models:
            raise ConfigError(
                f"component {name!r} is not in this artifact; it has: {', '.join(self.components)}"
            )
        return name, self.models[name]

    def recommend_indices(
        self,
        user_idx: ArrayLike,
        k: int = 10,
        *,
        model: str | None = None,
        exclude_seen: bool = True,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` item indices and scores for user indices (``-1`` = unknown user)."""
        _, m = self._model(model)
        return m.recommend(user_idx, k, exclude_seen=exclude_seen)

    def recommend(
        self,
        user_ids: ArrayLike,
        k: int = 10,
        *,
        model: str | None = None,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-``k`` recommendations for external user ids, as a long frame.

        Returns
        -------
        pandas.DataFrame
            Columns ``user_id``, ``item_id`` (ids as given), ``rank`` (1..k), ``score``,
            ``sources``; users in input order, ``k`` rows each (fewer only when the
            catalogue has fewer eligible items). Unknown users get the popularity list
            with ``sources == "popular"``.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        name, m = self._model(model)
        ids = np.atleast_1d(np.asarray(user_ids))
        idx = self.user_map.to_index(ids)
        items, scores = m.recommend(idx, k, exclude_seen=exclude_seen)
        return self._to_frame(ids, items, scores, np.where(idx >= 0, name, COLD_START_SOURCE))

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
        seen = next(iter(self.models.values())).user_items_
        assert seen is not None
        return seen

    def histories_matrix(self, histories: Sequence[Sequence[Any]]) -> sp.csr_matrix:
        """A binary ``(len(histories), n_items)`` matrix of item-id lists; unknown ids skipped."""
        lengths = [len(h) for h in histories]
        flat = np.concatenate([np.asarray(h, dtype=self.item_map.ids.dtype) for h in histories])
        cols = self.item_map.to_index(flat) if len(flat) else np.empty(0, np.int64)
        rows = np.repeat(np.arange(len(histories)), lengths)
        ok = cols >= 0
        m = sp.csr_matrix(
            (np.ones(int(ok.sum()), np.float32), (rows[ok], cols[ok])),
            shape=(len(histories), len(self.item_map)),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

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
        When the component cannot fold in, the popularity list is used.

        Returns
        -------
        item_ids : (n, k) object
            External ids; ``None`` pads rows with fewer eligible items.
        scores : (n, k) float32
        sources : (n,) object
            The component that produced each list (``"popular"`` for empty histories).
        """
        from recsys.models.base import topk
        from recsys.protocols import FoldIn

        name, m = self._model(model)
        if not isinstance(m, FoldIn):
            name, m = self._model(COLD_START_SOURCE if COLD_START_SOURCE in self.models else None)
        h = self.histories_matrix(histories)
        if isinstance(m, FoldIn):
            extra = self.histories_matrix(exclude_items) if exclude_items else None
            n_extra = 0 if extra is None else int(np.diff(extra.indptr).max(initial=0))
            items, scores = m.recommend_for_history(h, k + n_extra, exclude_seen=True)
            if extra is not None and n_extra:
                block = np.where(items >= 0, scores, -np.inf).astype(np.float32)
                n_items = len(self.item_map)
                rows = np.repeat(np.arange(extra.shape[0]), np.diff(extra.indptr))
                excluded = rows * n_items + extra.indices
                keys = np.arange(len(items))[:, None] * n_items + np.maximum(items, 0)
                block[np.isin(keys, excluded)] = -np.inf
                pos, scores = topk(block, k)
                items = np.where(pos >= 0, np.take_along_axis(items, np.maximum(pos, 0), 1), -1)
        else:
            items, scores = m.recommend(np.full(len(histories), -1), k, exclude_seen=True)
        out = np.full(items.shape, None, dtype=object)
        valid = items >= 0
        out[valid] = self.item_map.to_ids(items[valid])
        empty = np.diff(h.indptr) == 0
        sources = np.where(empty, COLD_START_SOURCE, name).astype(object)
        return out, scores, sources

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
        return pd.DataFrame(
            {
                "user_id": user_ids[rows],
                "item_id": self.item_map.to_ids(items[valid]),
                "rank": ranks.astype(np.int32),
                "score": scores[valid].astype(np.float32),
                "sources": np.asarray(sources, dtype=object)[rows],
            }
        )

    def training_data(self) -> TrainingData:
        """The training interactions as :class:`TrainingData` (binary, from the seen matrix)."""
        coo = sp.coo_matrix(self.training_matrix())
        return TrainingData(
            self.user_map, self.item_map, coo.row.astype(np.int64), coo.col.astype(np.int64)
        )

    def evaluate(
        self, test: pd.DataFrame, ks: Sequence[int] = (10,), *, models: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Top-N metrics of every component on ``test`` (full ranking, seen items excluded).

        Returns one row per component, flat metric columns (``"ndcg@10"``, ...).
        """
        from recsys.eval import evaluate_model

        train = self.training_data()
        rows = {}
        for name in models or self.components:
            _, m = self._model(name)
            rows[name] = evaluate_model(m, train, test, ks=tuple(ks))
        return pd.DataFrame.from_dict(rows, orient="index")

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> Path:
        """Write the artifact directory (atomically) with a checksummed manifest."""
        path = Path(path)

        def fill(tmp: Path) -> None:
            (tmp / "vocab").mkdir()
            self.user_map.save(tmp / "vocab" / "users.parquet")
            self.item_map.save(tmp / "vocab" / "items.parquet")
            if self.features is not None:
                self.features.save(tmp / "features")
            for name, model in self.models.items():
                model.save(tmp / "models" / name)
            (tmp / "pipeline.json").write_text(
                json.dumps({"components": self.components}, indent=2) + "\n"
            )

        manifest = write_artifact(
            path,
            fill,
            config=self.config.model_dump(mode="json"),
            data_fingerprint=str(self.manifest.get("data_fingerprint", "")),
            metrics=self.manifest.get("metrics", {}),
            extra={"data": self.manifest.get("data", {})},
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
        """
        path = Path(path)
        manifest = verify_artifact(path)
        config = RecsysConfig(**manifest["config"])
        try:
            components = json.loads((path / "pipeline.json").read_text())["components"]
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"artifact {path}: cannot read pipeline.json ({exc})") from exc
        user_map = IdMap.load(path / "vocab" / "users.parquet")
        item_map = IdMap.load(path / "vocab" / "items.parquet")
        models = {name: get_model_class(name).load(path / "models" / name) for name in components}
        features = None
        if (path / "features").is_dir():
            from recsys.features import FeatureStore

            features = FeatureStore.load(path / "features")
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
