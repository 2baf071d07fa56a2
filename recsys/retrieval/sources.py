"""Candidate sources and the multi-source candidate generator (the retrieval stage).

A :class:`CandidateGenerator` is built from configuration over fitted components; it does
not own or subclass them. The sources follow from ``[pipeline] retrievers`` and
``[retrieval]`` (see :class:`recsys.config.RetrievalConfig`):

========================  ==================================================================
source                    proposes
========================  ==================================================================
``<embedding model>``     FAISS search over the model's ``item_factors`` (``bpr``, ``als``,
                          ``svdpp``) with the user's vector; fold-in rows use the model's
                          fold-in vector (``fold_in``) or its ``recommend_for_history``
``popular``               the most popular unseen items (also every cold row's answer)
``<other model>``         the model's own top list (``itemknn``, ``userknn``, ``ease``, ...)
``<model>@recent``        neighbours of the user's recent items: the model's fold-in of the
                          last ``recent_items`` items alone (``itemknn``, ``ease``)
``<content model>``       nearest items (cosine of item vectors) to the recency-weighted
                          mean of the recent items' vectors (``doc2vec``); reaches items
                          with text but no interactions
``covisit``               :class:`~recsys.retrieval.covisit.CoVisitation` of recent items
========================  ==================================================================

Every source answers a whole :class:`~recsys.retrieval.candidates.Queries` batch with one
vectorised call; :meth:`CandidateSet.merge` then applies quotas, removes seen items and
duplicates, and keeps the provenance of every candidate.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.artifacts import read_component_meta
from recsys.config import RetrievalConfig
from recsys.errors import ArtifactError, ConfigError
from recsys.models.base import csr_rows
from recsys.protocols import EmbeddingModel, FoldIn
from recsys.retrieval.candidates import CandidateSet, Queries, SourceList
from recsys.retrieval.covisit import CoVisitation
from recsys.retrieval.index import IndexConfig, ItemIndex
from recsys.types import TrainingData

__all__ = [
    "COLD_START_SOURCE",
    "COVISIT_SOURCE",
    "CandidateGenerator",
    "FoldInVectors",
    "Retriever",
    "SourceSpec",
]

logger = logging.getLogger(__name__)

COLD_START_SOURCE = "popular"
COVISIT_SOURCE = "covisit"
RECENT_SUFFIX = "@recent"
SourceKind = Literal["popular", "embedding", "model", "recent", "content", "covisit"]
_FORMAT_VERSION = 1


@runtime_checkable
class Retriever(Protocol):
    """The retrieval stage: queries in, a :class:`CandidateSet` with provenance out."""

    @property
    def source_names(self) -> tuple[str, ...]:
        """Names of the sources, in merge order."""
        ...

    def generate(
        self, queries: Queries, *, exclude_seen: bool = True, limit: int | None = None
    ) -> CandidateSet:
        """Candidates for every query row (at most ``limit`` per row)."""
        ...


@runtime_checkable
class FoldInVectors(Protocol):
    """Embedding models that turn a history into a user vector (e.g. BPR, ALS)."""

    def fold_in(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        """``(n, dim) float32`` user vectors for the rows of a history matrix."""
        ...


@dataclass(frozen=True)
class SourceSpec:
    """One candidate source: its name, kind, the component it reads and its quota.

    Stability: provisional
    """

    name: str
    kind: SourceKind
    component: str | None
    quota: int


def _normalise_rows(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(
        np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0), np.float32
    )


def plan_sources(
    components: Mapping[str, object],
    retrievers: Sequence[str],
    config: RetrievalConfig,
    candidates: int,
) -> list[SourceSpec]:
    """The sources of a configuration, in merge order (see the module docstring).

    Retrievers that were not fitted (absent from ``components``) are skipped.

    Raises
    ------
    ConfigError
        A quota names no source of the configuration.
    """
    specs: list[SourceSpec] = []

    def quota(name: str) -> int:
        return int(config.quotas.get(name, candidates))

    for name in retrievers:
        model = components.get(name)
        if model is None:
            continue
        if name == COLD_START_SOURCE:
            kind: SourceKind = "popular"
        elif name in config.content and isinstance(model, EmbeddingModel):
            kind = "content"
        elif isinstance(model, EmbeddingModel):
            kind = "embedding"
        else:
            kind = "model"
        specs.append(SourceSpec(name, kind, name, quota(name)))
    for name in config.recent:
        model = components.get(name)
        if name in retrievers and isinstance(model, FoldIn):
            specs.append(
                SourceSpec(name + RECENT_SUFFIX, "recent", name, quota(name + RECENT_SUFFIX))
            )
    for name in config.content:
        model = components.get(name)
        already = any(s.component == name and s.kind == "content" for s in specs)
        if model is not None and not already and isinstance(model, EmbeddingModel):
            specs.append(SourceSpec(name, "content", name, quota(name)))
    if config.covisitation:
        specs.append(SourceSpec(COVISIT_SOURCE, "covisit", None, quota(COVISIT_SOURCE)))
    if COLD_START_SOURCE in components and not any(s.kind == "popular" for s in specs):
        specs.append(SourceSpec(COLD_START_SOURCE, "popular", COLD_START_SOURCE, candidates))
    names = {s.name for s in specs}
    unknown = sorted(q for q in set(config.quotas) - names if not _possible_source(q))
    if unknown:
        raise ConfigError(
            f"[retrieval] quotas name unknown sources {unknown}; the sources of this "
            f"configuration are {sorted(names)}"
        )
    return specs


def _possible_source(name: str) -> bool:
    """Whether ``name`` could be a source of some configuration (quotas of sources that a
    configuration does not have, such as the default ``doc2vec`` quota, are ignored)."""
    from recsys.models import MODEL_REGISTRY

    base = name.removesuffix(RECENT_SUFFIX)
    return name == COVISIT_SOURCE or base in MODEL_REGISTRY


class CandidateGenerator:
    """Multi-source candidate retrieval over fitted components.

    Build with :meth:`fit` (after the components are fitted) or :meth:`load`. It reads
    the components it was built over and owns only its own structures: a FAISS
    :class:`~recsys.retrieval.index.ItemIndex` per embedding or content source and the
    :class:`~recsys.retrieval.covisit.CoVisitation` counts.

    Stability: provisional

    Parameters
    ----------
    components
        Fitted components by name.
    specs
        The sources, in merge order (see :func:`plan_sources`).
    config
        The ``[retrieval]`` configuration.
    candidates
        Default candidates per row after merging.
    indexes
        ``source name -> ItemIndex`` for embedding and content sources.
    covisitation
        The fitted co-visitation counts, when a ``covisit`` source is configured.
    """

    def __init__(
        self,
        components: Mapping[str, Any],
        specs: Sequence[SourceSpec],
        config: RetrievalConfig,
        candidates: int,
        indexes: Mapping[str, ItemIndex],
        covisitation: CoVisitation | None,
    ) -> None:
        if not specs:
            raise ConfigError("CandidateGenerator needs at least one source")
        self.components = dict(components)
        self.specs = list(specs)
        self.config = config
        self.candidates = int(candidates)
        self.indexes = dict(indexes)
        self.covisitation = covisitation
        self._user_vectors: dict[str, NDArray[np.float32]] = {}
        self._content_vectors: dict[str, NDArray[np.float32]] = {}
        self.timings: dict[str, float] = {}
        for spec in self.specs:
            if spec.component is not None and spec.component not in self.components:
                raise ConfigError(
                    f"source {spec.name!r} reads component {spec.component!r}, which is not "
                    f"fitted; fitted: {', '.join(self.components)}"
                )
            if spec.kind in ("embedding", "content") and spec.name not in self.indexes:
                raise ConfigError(f"source {spec.name!r} has no item index")
            if spec.kind == "covisit" and covisitation is None:
                raise ConfigError("the covisit source needs fitted co-visitation counts")

    def __repr__(self) -> str:
        return (
            f"CandidateGenerator(sources={list(self.source_names)}, candidates={self.candidates})"
        )

    @property
    def source_names(self) -> tuple[str, ...]:
        """Names of the sources, in merge order."""
        return tuple(s.name for s in self.specs)

    def index_config(self) -> IndexConfig:
        """The FAISS index settings of ``[retrieval]``."""
        return _index_config(self.config)

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(
        cls,
        components: Mapping[str, Any],
        data: TrainingData,
        *,
        retrievers: Sequence[str],
        config: RetrievalConfig,
        candidates: int,
    ) -> CandidateGenerator:
        """Plan the sources and build their indexes and co-visitation counts.

        Parameters
        ----------
        components
            Fitted components by name (over ``data``'s vocabularies).
        data
            The training data the components were fitted on (for co-visitation).
        retrievers
            ``[pipeline] retrievers``, in order.
        config
            ``[retrieval]``.
        candidates
            ``[pipeline] candidates``.
        """
        specs = plan_sources(components, retrievers, config, candidates)
        indexes: dict[str, ItemIndex] = {}
        index_config = _index_config(config)
        for spec in specs:
            if spec.kind == "embedding":
                model = components[spec.name]
                indexes[spec.name] = ItemIndex.build(model.item_factors, index_config)
            elif spec.kind == "content":
                vectors = _normalise_rows(np.asarray(components[spec.name].item_factors))
                indexes[spec.name] = ItemIndex.build(vectors, index_config)
        covis = None
        if any(s.kind == "covisit" for s in specs):
            covis = CoVisitation(config.covisitation_window, config.covisitation_neighbors).fit(
                data
            )
        gen = cls(components, specs, config, candidates, indexes, covis)
        logger.info("built candidate generator sources=%s", ",".join(gen.source_names))
        return gen

    # ------------------------------------------------------------------ generating
    def generate(
        self, queries: Queries, *, exclude_seen: bool = True, limit: int | None = None
    ) -> CandidateSet:
        """Candidates for every query row, with provenance.

        Cold rows (no history) get the popularity source only. Known and fold-in rows
        get every source that can answer them.

        Parameters
        ----------
        queries
            The batch.
        exclude_seen
            Leave each row's ``history`` items out.
        limit
            Candidates per row (default ``candidates``); the popularity source proposes
            at least ``limit`` items so a row can always be filled.
        """
        limit = self.candidates if limit is None else int(limit)
        if limit < 1:
            raise ConfigError(f"CandidateGenerator.generate: limit must be >= 1, got {limit}")
        lists = []
        for spec in self.specs:
            start = time.perf_counter()
            quota = max(spec.quota, limit) if spec.kind == "popular" else spec.quota
            lists.append(self._propose(spec, queries, quota, exclude_seen))
            self.timings[spec.name] = time.perf_counter() - start
        exclude = queries.history if exclude_seen else None
        return CandidateSet.merge(lists, queries.n_items, limit=limit, exclude=exclude)

    def _propose(self, spec: SourceSpec, q: Queries, k: int, exclude_seen: bool) -> SourceList:
        n = q.n_rows
        has_recent = np.diff(q.recent.indptr) > 0
        warm = ~q.cold
        if spec.kind == "popular":
            model = self.components[spec.name]
            # popularity is history-independent; over-fetch by the longest history so k
            # unseen items remain after the merge removes the seen ones
            extra = int(q.history_lengths.max(initial=0)) if exclude_seen else 0
            items, scores = model.recommend(
                np.full(1, -1, np.int64), min(k + extra, q.n_items), exclude_seen=False
            )
            items = np.broadcast_to(items, (n, items.shape[1]))
            scores = np.broadcast_to(scores, (n, scores.shape[1]))
            if exclude_seen:
                items, scores = _first_unseen(items, scores, q.history, k)
            return SourceList(spec.name, items.copy(), scores.copy())
        if spec.kind == "covisit":
            assert self.covisitation is not None
            rows = has_recent & warm
            if not rows.any():
                return SourceList.empty(spec.name, n)
            sel = np.flatnonzero(rows)
            ex = csr_rows(q.history, sel) if exclude_seen else None
            items, scores = self.covisitation.recommend(csr_rows(q.recent, sel), k, exclude=ex)
            return SourceList.scatter(spec.name, n, rows, items, scores)
        model = self.components[spec.component or spec.name]
        if spec.kind == "recent":
            rows = has_recent & warm
            if not rows.any():
                return SourceList.empty(spec.name, n)
            sel = np.flatnonzero(rows)
            seeds = csr_rows(q.recent, sel)
            # the fold-in excludes the seeds only: over-fetch by the rest of the history
            extra = (q.history_lengths[rows] - np.diff(seeds.indptr)).max(initial=0)
            fetch = min(k + (int(extra) if exclude_seen else 0), q.n_items)
            items, scores = model.recommend_for_history(seeds, fetch, exclude_seen=True)
            if exclude_seen:
                items, scores = _first_unseen(items, scores, csr_rows(q.history, sel), k)
            return SourceList.scatter(spec.name, n, rows, items, scores)
        if spec.kind == "content":
            rows = has_recent & warm
            if not rows.any():
                return SourceList.empty(spec.name, n)
            vectors = self._content(spec.name)
            sel = np.flatnonzero(rows)
            seeds = sp.csr_matrix(csr_rows(q.recent, sel), dtype=np.float32)
            query = _normalise_rows(np.asarray(seeds @ vectors, np.float32))
            ex = csr_rows(q.history, sel) if exclude_seen else None
            items, scores = self.indexes[spec.name].search(query, k, exclude=ex)
            return SourceList.scatter(spec.name, n, rows, items, scores)
        # embedding and model sources: stored users, then fold-in rows
        items = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), np.nan, np.float32)
        known = q.known
        if known.any():
            users = q.user_idx[known]
            if spec.kind == "embedding":
                ex = csr_rows(q.history, np.flatnonzero(known)) if exclude_seen else None
                qv = self._users(spec.name)[users]
                items[known], scores[known] = self.indexes[spec.name].search(qv, k, exclude=ex)
            else:
                items[known], scores[known] = model.recommend(users, k, exclude_seen=exclude_seen)
        fold = q.fold_in & warm
        if fold.any():
            hist = csr_rows(q.history, np.flatnonzero(fold))
            if spec.kind == "embedding" and isinstance(model, FoldInVectors):
                qv = np.asarray(model.fold_in(hist), np.float32)
                ex = hist if exclude_seen else None
                items[fold], scores[fold] = self.indexes[spec.name].search(qv, k, exclude=ex)
            elif isinstance(model, FoldIn):
                items[fold], scores[fold] = model.recommend_for_history(
                    hist, k, exclude_seen=exclude_seen
                )
        return SourceList(spec.name, items, scores)

    def _users(self, name: str) -> NDArray[np.float32]:
        """The user vectors of an embedding source (computed once: SVD++ derives them)."""
        if name not in self._user_vectors:
            self._user_vectors[name] = np.ascontiguousarray(
                self.components[name].user_factors, np.float32
            )
        return self._user_vectors[name]

    def _content(self, name: str) -> NDArray[np.float32]:
        if name not in self._content_vectors:
            self._content_vectors[name] = _normalise_rows(
                np.asarray(self.components[name].item_factors, np.float32)
            )
        return self._content_vectors[name]

    def content_vectors(self, name: str) -> NDArray[np.float32]:
        """Unit-norm ``(n_items, dim)`` item vectors of a content component."""
        return self._content(name)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write ``retrieval.json``, one directory per FAISS index, and ``covisit/``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": _FORMAT_VERSION,
            "candidates": self.candidates,
            "config": self.config.model_dump(mode="json"),
            "sources": [
                {"name": s.name, "kind": s.kind, "component": s.component, "quota": s.quota}
                for s in self.specs
            ],
        }
        (path / "retrieval.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name, index in self.indexes.items():
            index.save(path / _dir_name(name))
        if self.covisitation is not None:
            self.covisitation.save(path / COVISIT_SOURCE)

    @classmethod
    def load(cls, path: Path, components: Mapping[str, Any]) -> CandidateGenerator:
        """Read a generator written by :meth:`save`, over the given fitted components.

        Raises
        ------
        ArtifactError
            Missing or unreadable files, or another format version.
        """
        path = Path(path)
        meta = read_component_meta(path, "retrieval.json", "retrieval", _FORMAT_VERSION)
        specs = [SourceSpec(**s) for s in meta["sources"]]
        indexes = {
            s.name: ItemIndex.load(path / _dir_name(s.name))
            for s in specs
            if s.kind in ("embedding", "content")
        }
        covis = None
        if any(s.kind == "covisit" for s in specs):
            covis = CoVisitation.load(path / COVISIT_SOURCE)
        config = RetrievalConfig(**meta["config"])
        try:
            return cls(components, specs, config, int(meta["candidates"]), indexes, covis)
        except ConfigError as exc:
            raise ArtifactError(f"retrieval: {path}: {exc}") from exc


def _first_unseen(
    items: NDArray[np.int64], scores: NDArray[np.float32], history: sp.csr_matrix, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each row's first ``k`` entries that are not in its ``history`` row, in list order.

    Over-fetched lists (a batch fetches for its longest history) are cut back to what the
    row alone would get, so a row's candidates never depend on the other rows of a batch.
    """
    n, width = items.shape
    n_items = history.shape[1]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(history.indptr))
    seen = rows * n_items + history.indices.astype(np.int64)
    keys = np.arange(n, dtype=np.int64)[:, None] * n_items + np.maximum(items, 0)
    drop = (items < 0) | np.isin(keys, seen)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    out_i = np.take_along_axis(items, order, 1)
    out_s = np.take_along_axis(scores, order, 1).astype(np.float32)
    gone = np.take_along_axis(drop, order, 1)
    out_i[gone], out_s[gone] = -1, np.nan
    if width < k:
        out_i = np.pad(out_i, ((0, 0), (0, k - width)), constant_values=-1)
        out_s = np.pad(out_s, ((0, 0), (0, k - width)), constant_values=np.nan)
    return out_i, out_s


def _dir_name(source: str) -> str:
    return source.replace("@", "-at-")


def _index_config(config: RetrievalConfig) -> IndexConfig:
    return IndexConfig(
        kind=config.index,
        flat_max_items=config.flat_max_items,
        nlist=config.nlist or None,
        nprobe=config.nprobe,
        hnsw_m=config.hnsw_m,
        ef_construction=config.ef_construction,
        ef_search=config.ef_search,
        hnsw_norm_ranges=config.hnsw_norm_ranges,
    )
