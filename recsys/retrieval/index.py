"""FAISS inner-product indexes over item vectors, with the index type following catalogue size.

Small catalogues get exact search (``IndexFlatIP``); large ones an inverted-file index
(IVF, the default above ``flat_max_items``) or an HNSW graph. The index *wraps* a fitted
embedding model's ``item_factors``; exact brute-force search (:func:`exact_search`) is its
test oracle and the benchmark's reference (``benchmarks/faiss_retrieval.py``).

Approximate indexes search the inner product directly (``METRIC_INNER_PRODUCT``):
``IndexIVFFlat`` with an inner-product coarse quantizer, or ``IndexHNSWFlat``. Both keep
the raw vectors, so every returned score is the exact inner product; approximation shows
only as missed items (recall < 1). The Euclidean reduction of inner-product search
(Bachrach et al., RecSys 2014: ``x -> [x, sqrt(M^2 - |x|^2)]``) was measured too and
lost recall on clustered data at every ``nprobe`` (0.89 vs 0.95 recall@100 at
``nprobe=64``, 100k items): its extra coordinate dominates the k-means cells.

Why IVF by default: on the 1M-item, 64-d clustered benchmark on two cores
(``benchmarks/faiss_retrieval.py --hnsw-norm-ranges 8,1``, 2026-11-29), IVF (4,000 cells)
trained and filled in 22 s and reached recall@100 0.99 at ``nprobe`` 64 with a 59x batch
and 61x single-query speed-up over exact search. One HNSW graph (M 32, efConstruction
128) took 253 s to build and reached only 0.73-0.81 recall@100 at ``efSearch`` 64-512:
graph search over raw inner products (no metric) strands queries in the wrong
neighbourhoods, and large-norm items crowd out the rest.

HNSW therefore splits the items by vector norm into ``hnsw_norm_ranges`` equal-size
ranges with one graph each (norm-range partitioning, Yan et al., NeurIPS 2018); a query
searches the graphs from the largest norms down, skips the rest once no item there can
reach its top k (Cauchy-Schwarz on each graph's largest norm), and the lists merge by
exact inner product. Within a range the norms are close, so inner-product order is close
to angular order and the graph search finds its way. In the same 1M run 8 ranges
(207 s to build) reached 0.83-0.91 at ``efSearch`` 64-512, and more recall than one graph
at the same time per query (0.85 in 2.5 ms against 0.81 in 2.4 ms), but still short of
IVF. On 100k items (``benchmarks/results/faiss_retrieval_100k.json``) one graph reached
0.91 at ``efSearch`` 256 and 0.93 at 512; 8 ranges 0.98 at 64 and 0.996 at 128, at
2.8 ms per single query against 0.2-1.0 ms for one graph (IVF: 0.95 in 0.4 ms). The
skipping pays when norms spread widely: with the benchmark's norms (log-normal sigma 0.3)
queries visit nearly all 8 graphs, with sigma 1.0 under 4 (``last_graphs_per_query``;
the unit tests check both).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from recsys.artifacts import check_format_version
from recsys.errors import ArtifactError, ConfigError, DataError
from recsys.models import _exact

__all__ = ["IndexConfig", "ItemIndex", "exact_search"]

logger = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "hnsw", "ivf"]
_FORMAT_VERSION = 2
_EXACT_BLOCK = 1 << 24  # query x item scores per block of the exact search (64 MiB float32)
_PART_FILE = re.compile(r"index(\.[0-9]+)?\.faiss")


class IndexConfig(BaseModel):
    """How an item index is built.

    Stability: provisional

    Attributes
    ----------
    kind
        ``"auto"`` picks ``"flat"`` up to ``flat_max_items`` items, else ``"ivf"``.
    flat_max_items
        Largest catalogue searched exactly under ``"auto"``.
    nlist
        IVF cells; ``None`` gives ``4 * sqrt(n_items)`` (the low end of the usual
        4-16 sqrt(N) range: fewer, fuller cells train faster and need fewer probes).
    nprobe
        IVF cells visited per query. 64 of ``4 sqrt(N)`` cells gives recall@100 0.99 against
        exact search on the clustered 1M-item benchmark (59x the batch throughput of exact
        search) and about 0.95 at 100k items.
    train_points_per_list
        k-means training sample per IVF cell (FAISS wants at least 39).
    hnsw_m, ef_construction, ef_search
        HNSW graph degree and beam widths (higher: better recall, slower); ``ef_search``
        applies to each graph.
    hnsw_norm_ranges
        HNSW graphs, one per range of item norms (equal item counts); 1 builds a single
        graph over every item.
    seed
        Seed of the k-means sample and initialisation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: IndexKind = "auto"
    flat_max_items: int = Field(default=100_000, ge=1)
    nlist: int | None = Field(default=None, ge=1)
    nprobe: int = Field(default=64, ge=1)
    train_points_per_list: int = Field(default=64, ge=39)
    hnsw_m: int = Field(default=32, ge=4)
    ef_construction: int = Field(default=128, ge=8)
    ef_search: int = Field(default=256, ge=8)
    hnsw_norm_ranges: int = Field(default=8, ge=1)
    seed: int = 42

    def resolve_kind(self, n_items: int) -> Literal["flat", "hnsw", "ivf"]:
        """The index type used for a catalogue of ``n_items``."""
        if self.kind == "auto":
            return "flat" if n_items <= self.flat_max_items else "ivf"
        return self.kind


def exact_search(
    item_vectors: NDArray[np.floating],
    queries: NDArray[np.floating],
    k: int,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Brute-force maximum inner-product search: the oracle of :class:`ItemIndex`.

    Parameters
    ----------
    item_vectors : (n_items, dim) float
    queries : (n, dim) float
    k
        Items per query (clipped to ``n_items``; the rest is padding).

    Returns
    -------
    items : (n, k) int64 and scores : (n, k) float32
        Best first, ties to the lower item index; ``-1``/NaN padding. Scores are the
        canonical inner products of :mod:`recsys.models._exact`, so the answer does not
        depend on the batch or the BLAS kernel.
    """
    items_v = np.ascontiguousarray(item_vectors, dtype=np.float32)
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    n = q.shape[0]
    out_i = np.empty((n, k), np.int64)
    out_s = np.empty((n, k), np.float32)
    vmax = _exact.max_norm(items_v)
    step = max(1, _EXACT_BLOCK // max(1, items_v.shape[0]))
    for start in range(0, n, step):
        qb = q[start : start + step]
        out_i[start : start + step], out_s[start : start + step] = _exact.rescore_topk(
            qb @ items_v.T, qb, items_v, k, max_item_norm=vmax
        )
    return out_i, out_s


class ItemIndex:
    """Maximum-inner-product search over ``(n_items, dim) float32`` item vectors.

    Build with :meth:`build` (or :meth:`load`). Row ``i`` of the vectors is item index
    ``i``. Scores returned by :meth:`search` are exact inner products for every index
    type; approximate types may miss some of the true top items (recall < 1).

    Stability: provisional

    Examples
    --------
    >>> vecs = np.eye(4, dtype=np.float32)
    >>> index = ItemIndex.build(vecs)
    >>> items, scores = index.search(np.array([[0, 1, 0, 0]], np.float32), k=1)
    >>> int(items[0, 0])
    1
    """

    def __init__(
        self,
        index: faiss.Index,
        kind: str,
        config: IndexConfig,
        range_norms: NDArray[np.float32] | None = None,
    ) -> None:
        self.index = index
        self.kind = kind
        self.config = config
        #: the largest item norm of each norm-range graph (``None``: one index)
        self.range_norms = range_norms
        #: graphs the last search visited per query (norm ranges; 1.0 for one index)
        self.last_graphs_per_query = 1.0
        self.build_seconds: float = 0.0
        self._vectors: NDArray[np.float32] | None = None  # flat kind: for canonical scores
        self._vmax = 0.0

    def __repr__(self) -> str:
        return f"ItemIndex(kind={self.kind!r}, n_items={self.n_items}, dim={self.dim})"

    @property
    def n_items(self) -> int:
        """Number of indexed items."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Dimension of the item (and query) vectors."""
        return int(self.index.d)

    @property
    def exact(self) -> bool:
        """Whether searches are exact (the flat index)."""
        return self.kind == "flat"

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the recall/speed trade-off of a built index (IVF ``nprobe``, HNSW ``efSearch``).

        Parameters that do not apply to the index type are ignored.
        """
        if nprobe is not None and isinstance(self.index, faiss.IndexIVF):
            self.index.nprobe = min(int(nprobe), int(self.index.nlist))
        if ef_search is not None:
            for graph in _graphs(self.index):
                graph.hnsw.efSearch = int(ef_search)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls, item_vectors: NDArray[np.floating], config: IndexConfig | None = None
    ) -> ItemIndex:
        """Build an index over item vectors (row ``i`` = item index ``i``).

        Raises
        ------
        DataError
            If the vectors are not a finite, non-empty 2-d array.
        ConfigError
            If ``nlist`` exceeds the number of items.
        """
        config = config or IndexConfig()
        vecs = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] == 0 or vecs.shape[1] == 0:
            raise DataError(f"ItemIndex.build: expected (n_items, dim) vectors, got {vecs.shape}")
        if not np.isfinite(vecs).all():
            raise DataError("ItemIndex.build: item vectors contain NaN or inf")
        start = time.perf_counter()
        n, d = vecs.shape
        kind = config.resolve_kind(n)
        index: faiss.Index
        range_norms = None
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
            index.add(vecs)
        elif kind == "hnsw":
            index, range_norms = _norm_range_graphs(vecs, config)
        else:
            nlist = config.nlist or max(1, round(4 * math.sqrt(n)))
            if nlist > n:
                raise ConfigError(
                    f"ItemIndex: nlist={nlist} exceeds the {n} items; use fewer cells or "
                    "kind='flat'"
                )
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = config.seed
            rng = np.random.default_rng(config.seed)
            size = min(n, config.train_points_per_list * nlist)
            index.train(vecs[np.sort(rng.choice(n, size=size, replace=False))])
            index.nprobe = min(config.nprobe, nlist)
            index.add(vecs)
        out = cls(index, kind, config, range_norms)
        out.build_seconds = time.perf_counter() - start
        logger.info(
            "built item index kind=%s n_items=%d dim=%d elapsed=%.2fs",
            kind,
            n,
            d,
            out.build_seconds,
        )
        return out

    # ------------------------------------------------------------------ search
    def search(
        self,
        queries: NDArray[np.floating],
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items by inner product for each query vector.

        Parameters
        ----------
        queries : (n, dim) float
        k
            Items per query.
        exclude : (n, n_items) sparse, optional
            Items to leave out per query (e.g. seen items); the search over-fetches by
            the longest exclusion row so ``k`` eligible items remain.

        Returns
        -------
        items : (n, k) int64, ``-1`` padded; scores : (n, k) float32, NaN padded.
            Best first by inner product, ties to the lower item index.

        Raises
        ------
        DataError
            Queries of the wrong dimension, non-finite queries, or an exclusion matrix of
            the wrong shape.
        ConfigError
            ``k < 1``.
        """
        if k < 1:
            raise ConfigError(f"ItemIndex.search: k must be >= 1, got {k}")
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise DataError(f"ItemIndex.search: queries have shape {q.shape}, dim {self.dim}")
        if not np.isfinite(q).all():
            raise DataError("ItemIndex.search: queries contain NaN or inf")
        n = q.shape[0]
        extra = 0
        if exclude is not None:
            exclude = sp.csr_matrix(exclude)
            if exclude.shape != (n, self.n_items):
                raise DataError(
                    f"ItemIndex.search: exclude has shape {exclude.shape}, expected "
                    f"({n}, {self.n_items})"
                )
            extra = int(np.diff(exclude.indptr).max(initial=0))
        if n == 0:
            return np.full((0, k), -1, np.int64), np.full((0, k), np.nan, np.float32)
        fetch = min(self.n_items, k + extra)
        if self.exact:  # a padded list for the canonical cut (recsys.models._exact)
            fetch = min(self.n_items, _exact.fetch_width(k) + extra)
        if self.range_norms is None:
            scores, items = self.index.search(q, fetch)
        else:
            scores, items = self._search_ranges(q, fetch)
        items = items.astype(np.int64)
        scores = scores.astype(np.float32)
        if exclude is not None and extra:
            rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(exclude.indptr))
            banned = rows * self.n_items + exclude.indices.astype(np.int64)
            keys = np.arange(n, dtype=np.int64)[:, None] * self.n_items + np.maximum(items, 0)
            items[np.isin(keys, banned)] = -1
        scores = np.where(items >= 0, scores, -np.inf).astype(np.float32)
        # best first, ties to the lower index (as the exact oracle), padding last
        order = np.lexsort((items, -scores), axis=1)
        items = np.take_along_axis(items, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        if self.exact:
            items, scores = self._canonical(q, items, scores, k, exclude)
        items, scores = items[:, :k], scores[:, :k]
        bad = ~np.isfinite(scores)
        items[bad] = -1
        scores[bad] = np.nan
        if items.shape[1] < k:
            pad = k - items.shape[1]
            items = np.pad(items, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=np.nan)
        return items, scores

    def _canonical(
        self,
        q: NDArray[np.float32],
        items: NDArray[np.int64],
        scores: NDArray[np.float32],
        k: int,
        exclude: sp.csr_matrix | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The flat index's answer with canonical scores (:mod:`recsys.models._exact`).

        ``items``/``scores`` are FAISS's sorted candidates (``-1``/``-inf`` for excluded
        ones, sorted last), at least :func:`~recsys.models._exact.fetch_width` eligible
        ones per row where the catalogue allows. Their near ties at the cut are rescored
        canonically; rows with more near ties than that are ranked from a full row.
        """
        vectors, vmax = self._flat_vectors()
        width = min(items.shape[1], _exact.fetch_width(k))
        if width <= k:  # the catalogue is the list: every item is a candidate
            cols = items[:, :width]
            return _exact.order_candidates(cols, _exact.canonical_dot(q, vectors, cols), k)
        approx = np.where(items[:, :width] >= 0, scores[:, :width], np.nan).astype(np.float32)
        err = _exact.rounding_bound(q, vmax)
        out_i, out_s, resolved = _exact.rescore_sorted(items[:, :width], approx, q, vectors, k, err)
        rest = np.flatnonzero(~resolved)
        if len(rest):
            block = np.asarray(q[rest] @ vectors.T, np.float32)
            if exclude is not None:
                ex = sp.csr_matrix(exclude[rest])
                rows = np.repeat(np.arange(len(rest)), np.diff(ex.indptr))
                block[rows, ex.indices] = -np.inf
            out_i[rest], out_s[rest] = _exact.rescore_topk(
                block, q[rest], vectors, k, max_item_norm=vmax
            )
        return out_i, out_s

    def _flat_vectors(self) -> tuple[NDArray[np.float32], float]:
        """The flat index's ``(n_items, dim) float32`` vectors (a view of FAISS's storage)
        and their largest norm."""
        if self._vectors is None:
            flat = faiss.downcast_index(self.index)
            n, d = self.n_items, self.dim
            xb = faiss.rev_swig_ptr(flat.get_xb(), n * d)  # type: ignore[attr-defined]
            self._vectors = np.asarray(xb, np.float32).reshape(n, d)
            self._vmax = _exact.max_norm(self._vectors)
        return self._vectors, self._vmax

    def _search_ranges(
        self, q: NDArray[np.float32], fetch: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Search the norm-range graphs, largest norms first, merging by inner product.

        A query skips the remaining graphs once its ``fetch``-th best score reaches
        ``|q|`` times a graph's largest item norm (Cauchy-Schwarz: no item there can beat
        it; a 1e-4 relative margin covers float32 rounding), so the small-norm graphs are
        searched only by the queries that still need them.
        """
        assert self.range_norms is not None
        parts = _parts(self.index)
        n = q.shape[0]
        best_s = np.full((n, fetch), -np.inf, np.float32)
        best_i = np.full((n, fetch), -1, np.int64)
        q_norm = np.linalg.norm(q, axis=1)
        searched = 0
        for b in np.argsort(-self.range_norms, kind="stable"):
            bound = q_norm * float(self.range_norms[b])
            rows = np.flatnonzero(best_s[:, -1] < bound + 1e-4 * np.abs(bound))
            if len(rows) == 0:  # the bounds only shrink from here
                break
            searched += len(rows)
            s, i = parts[b].search(q[rows], fetch)
            s = np.where(i >= 0, s, -np.inf).astype(np.float32)
            cand_s = np.hstack([best_s[rows], s])
            cand_i = np.hstack([best_i[rows], i.astype(np.int64)])
            order = np.argsort(-cand_s, axis=1, kind="stable")[:, :fetch]
            best_s[rows] = np.take_along_axis(cand_s, order, 1)
            best_i[rows] = np.take_along_axis(cand_i, order, 1)
        self.last_graphs_per_query = searched / max(n, 1)
        return best_s, best_i

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write ``index.faiss`` (FAISS's own binary format) and ``index.json``.

        An HNSW index of several norm ranges writes one graph per file: ``index.faiss``,
        ``index.1.faiss``, ... (listed under ``files`` in ``index.json``).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        parts = _parts(self.index)
        files = ["index.faiss"] + [f"index.{b}.faiss" for b in range(1, len(parts))]
        for part, name in zip(parts, files, strict=True):
            faiss.write_index(part, str(path / name))
        meta = {
            "format_version": _FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "n_items": self.n_items,
            "files": files,
            "config": self.config.model_dump(),
        }
        if self.range_norms is not None:
            meta["range_norms"] = [float(x) for x in self.range_norms]
        (path / "index.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ItemIndex:
        """Read an index written by :meth:`save`.

        Raises
        ------
        ArtifactError
            Missing or unreadable files, another format version, or an index that does
            not match its metadata.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"ItemIndex: cannot read index at {path}: {exc}") from exc
        check_format_version(meta, _FORMAT_VERSION, "ItemIndex", path, "; rebuild the artifact")
        files = meta.get("files", ["index.faiss"])  # a single file before norm ranges
        if not (
            isinstance(files, list)
            and files
            and all(isinstance(f, str) and _PART_FILE.fullmatch(f) for f in files)
        ):
            raise ArtifactError(f"ItemIndex: {path}/index.json lists bad index files {files!r}")
        try:
            parts = [faiss.read_index(str(path / name)) for name in files]
        except (OSError, RuntimeError) as exc:
            raise ArtifactError(f"ItemIndex: cannot read index at {path}: {exc}") from exc
        index = parts[0] if len(parts) == 1 else _shards(parts)
        range_norms = None
        if len(parts) > 1:
            range_norms = np.asarray(meta.get("range_norms", []), np.float32)
            if range_norms.shape != (len(parts),):
                raise ArtifactError(
                    f"ItemIndex: {path}/index.json has {len(parts)} index files but "
                    f"{range_norms.size} range_norms"
                )
        if int(index.ntotal) != int(meta["n_items"]) or int(index.d) != int(meta["dim"]):
            raise ArtifactError(
                f"ItemIndex: {path} holds {index.ntotal} vectors of dim {index.d}, its "
                f"metadata says {meta['n_items']} of dim {meta['dim']}"
            )
        config = {"hnsw_norm_ranges": len(parts), **meta["config"]}
        out = cls(index, meta["kind"], IndexConfig(**config), range_norms)
        out.set_search_params(nprobe=out.config.nprobe, ef_search=out.config.ef_search)
        return out


def _graph(dim: int, config: IndexConfig) -> faiss.IndexHNSWFlat:
    graph = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = config.ef_construction
    graph.hnsw.efSearch = config.ef_search
    return graph


def _norm_range_graphs(
    vecs: NDArray[np.float32], config: IndexConfig
) -> tuple[faiss.Index, NDArray[np.float32] | None]:
    """One inner-product HNSW graph per range of item norms (equal item counts) holding
    ``vecs``, and each graph's largest item norm (``None`` for a single graph)."""
    n, dim = vecs.shape
    ranges = min(config.hnsw_norm_ranges, n)
    if ranges == 1:
        graph = _graph(dim, config)
        graph.add(vecs)
        return graph, None
    norms = np.linalg.norm(vecs, axis=1)
    order = np.argsort(norms, kind="stable")
    parts = []
    tops = []
    for ids in np.array_split(order, ranges):
        tops.append(norms[ids[-1]])
        ids = np.sort(ids).astype(np.int64)
        part = faiss.IndexIDMap2(_graph(dim, config))
        part.add_with_ids(vecs[ids], ids)
        parts.append(part)
    return _shards(parts), np.asarray(tops, np.float32)


def _shards(parts: Sequence[faiss.Index]) -> faiss.IndexShards:
    """Indexes over disjoint item ids (their own ids), searched together: merged by score."""
    # (dim, threaded, successive_ids): FAISS's type stubs lack this constructor
    shards = faiss.IndexShards(int(parts[0].d), False, False)  # type: ignore[call-arg]
    for part in parts:
        shards.add_shard(part)  # FAISS's wrapper keeps a reference to the part
    return shards


def _parts(index: faiss.Index) -> list[faiss.Index]:
    """The indexes a search runs over: the shards, or the index itself."""
    if isinstance(index, faiss.IndexShards):
        n = index.count()  # type: ignore[attr-defined]  # (missing from FAISS's stubs)
        return [faiss.downcast_index(index.at(b)) for b in range(n)]  # type: ignore[attr-defined]
    return [index]


def _graphs(index: faiss.Index) -> list[faiss.IndexHNSW]:
    """The HNSW graphs of an index (none for flat and IVF indexes)."""
    out = []
    for part in _parts(index):
        if isinstance(part, faiss.IndexIDMap):
            part = faiss.downcast_index(part.index)
        if isinstance(part, faiss.IndexHNSW):
            out.append(part)
    return out
