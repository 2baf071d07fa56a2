"""Features of (query, candidate) pairs for the hybrid ranker.

One definition serves training and serving: the ranker's training rows are built by this
class over components and a feature store fitted on the earlier part of the training data,
and serving rows by the same class over the refitted components and the full store (the
feature store's *online* read of the state at the end of its data, which for the earlier
part is exactly the point-in-time state at the ranker's label cut).

Feature groups (``n_s`` sources, ``n_c`` scoring components):

* **retrieval** — ``rank@<source>`` (1-based rank in that source's list, missing when it
  did not propose the item), ``score@<source>``, ``n_sources``;
* **components** — ``score:<component>`` (the component's score of the pair:
  ``svdpp`` its predicted rating, ``deepfm``/``din`` a click probability, the others their
  ranking score) and ``rank:<component>`` (its rank among the row's candidates);
* **popularity and recency** (feature store) — ``item_count``, ``user_count``, with
  ratings ``item_mean_rating`` and ``user_mean_rating``, and with timestamps
  ``item_recency_days`` (the user's last interaction time minus the item's);
* **content** — ``genre_similarity`` (cosine of the item's genres with the genres of the
  user's recent items), ``genre_affinity`` and ``genre_affinity_max`` (the share of the
  user's whole history in each of the item's genres: summed, and the largest) and
  ``content:<component>`` for content components (cosine of item vectors with the recent
  items' mean vector);
* **attributes** — the scalar user and item attribute columns of the feature store
  (``user_age``, ``item_release_year``, ...).

Fold-in rows (a history instead of a stored user) get component scores from the
component's fold-in (``recommend_for_history``, top ``fold_in_depth`` items), their
history length as ``user_count``, and missing values for what only a stored user has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import FeatureSchemaError, format_examples
from recsys.protocols import FoldIn
from recsys.retrieval.candidates import CandidateSet, Queries
from recsys.types import IdMap

__all__ = ["FeatureBuilder", "check_feature_schema"]

logger = logging.getLogger(__name__)

_DAY = 86_400.0


def check_feature_schema(expected: Sequence[str], actual: Sequence[str], owner: str) -> None:
    """Raise :class:`FeatureSchemaError` listing missing and unexpected feature columns."""
    if list(expected) == list(actual):
        return
    missing = [c for c in expected if c not in actual]
    extra = [c for c in actual if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing {format_examples(missing)}")
    if extra:
        parts.append(f"unexpected {format_examples(extra)}")
    if not parts:
        parts.append("same columns in another order")
    raise FeatureSchemaError(
        f"{owner}: the features differ from those the ranker was trained on: "
        + "; ".join(parts)
        + ". Retrain the artifact with the current data and configuration"
    )


#: Candidate pairs per block of the content-similarity products.
_PAIR_BLOCK = 2048


def _pair_dots(
    left: NDArray[np.float64],
    left_idx: NDArray[np.int64],
    right: NDArray[np.floating],
    right_idx: NDArray[np.int64],
) -> NDArray[np.float64]:
    """``(n,) float64`` ``left[left_idx[i]] . right[right_idx[i]]`` (``right`` in float64).

    In blocks of pairs: the ``(pairs, dim)`` float64 operands of a batch job's ~190k pairs
    are ~100 MB each, fresh pages every call, and cost ~30x the products; each pair's sum
    is the same whatever the block.
    """
    out = np.empty(len(left_idx), np.float64)
    for lo in range(0, len(left_idx), _PAIR_BLOCK):
        a = left[left_idx[lo : lo + _PAIR_BLOCK]]
        b = right[right_idx[lo : lo + _PAIR_BLOCK]].astype(np.float64)
        out[lo : lo + _PAIR_BLOCK] = np.einsum("nd,nd->n", a, b)
    return out


def _rank_within_rows(
    values: NDArray[np.float64], rows: NDArray[np.int64], indptr: NDArray[np.int64]
) -> NDArray[np.float32]:
    """1-based rank of each value within its row, largest first; NaN ranks last."""
    v = np.where(np.isnan(values), -np.inf, values)
    order = np.lexsort((-v, rows))
    ranks = np.empty(len(values), np.float32)
    ranks[order] = (np.arange(len(values)) - indptr[rows[order]] + 1).astype(np.float32)
    return ranks


class FeatureBuilder:
    """Builds the ranker's feature matrix for a :class:`CandidateSet`.

    Stability: provisional

    Parameters
    ----------
    components
        Fitted components by name.
    scorers
        Components whose ``score`` is a feature (every configured component except
        ``popular``, whose score is ``item_count``).
    content
        Content components (``item_factors`` as content vectors).
    store
        The feature store (``None``: no store features).
    user_map, item_map
        The pipeline's vocabularies (the store's may differ by order or appended ids;
        ids are translated).
    source_names
        The retrieval sources, in merge order.
    fold_in_depth
        Top items of a component's fold-in that get its score for fold-in rows.
    """

    def __init__(
        self,
        components: Mapping[str, Any],
        scorers: Sequence[str],
        content: Sequence[str],
        store: Any | None,
        user_map: IdMap,
        item_map: IdMap,
        source_names: Sequence[str],
        *,
        fold_in_depth: int = 2000,
    ) -> None:
        self.components = dict(components)
        self.scorers = [s for s in scorers if s in self.components]
        self.content = [c for c in content if c in self.components]
        self.store = store
        self.user_map = user_map
        self.item_map = item_map
        self.source_names = tuple(source_names)
        self.fold_in_depth = int(fold_in_depth)
        self._genres: sp.csr_matrix | None = None
        self._content_vectors: dict[str, NDArray[np.float32]] = {}
        self._attr_tables: dict[str, NDArray[np.float64]] = {}
        self._translations: dict[str, tuple[tuple[int, ...], NDArray[np.int64]]] = {}
        self._user_attr_cols: list[str] = []
        self._item_attr_cols: list[str] = []
        self._has_genres = False
        self._has_time = False
        self._has_rating = False
        if store is not None:
            self._has_rating = bool(store.has_rating)
            self._user_attr_cols = _scalar_columns(store.user_attributes(user_map.ids[:1]))
            self._item_attr_cols = _scalar_columns(store.item_attributes(item_map.ids[:1]))
            self._has_time = bool(store.has_timestamp)
            try:
                self._genres = _item_rows(store.item_genre_matrix(), store.item_map, item_map)
                self._has_genres = self._genres.shape[1] > 0
            except FeatureSchemaError:
                self._has_genres = False
        self.names = self._names()

    def __repr__(self) -> str:
        return f"FeatureBuilder(n_features={len(self.names)}, scorers={self.scorers})"

    def _names(self) -> list[str]:
        names = [f"rank@{s}" for s in self.source_names]
        names += [f"score@{s}" for s in self.source_names]
        names.append("n_sources")
        for c in self.scorers:
            names += [f"score:{c}", f"rank:{c}"]
        if self.store is not None:
            names += ["item_count", "user_count"]
            if self._has_rating:
                names += ["item_mean_rating", "user_mean_rating"]
            if self._has_time:
                names.append("item_recency_days")
            if self._has_genres:
                names += ["genre_similarity", "genre_affinity", "genre_affinity_max"]
            names += self._user_attr_cols + self._item_attr_cols
        names += [f"content:{c}" for c in self.content]
        return names

    # ------------------------------------------------------------------ building
    def build(self, cands: CandidateSet, queries: Queries) -> NDArray[np.float32]:
        """``(cands.nnz, len(names)) float32`` features; NaN marks a missing value.

        Raises
        ------
        FeatureSchemaError
            If the candidates come from other sources than the builder's.
        """
        if tuple(cands.source_names) != self.source_names:
            check_feature_schema(self.source_names, cands.source_names, "FeatureBuilder")
        rows = cands.rows
        items = cands.items
        cols: list[NDArray[Any]] = [cands.source_ranks, cands.source_scores]
        cols.append(cands.proposed.sum(axis=1, keepdims=True).astype(np.float32))
        for c in self.scorers:
            s = self._component_scores(c, queries, rows, items)
            cols.append(s[:, None])
            cols.append(_rank_within_rows(s, rows, cands.indptr)[:, None])
        if self.store is not None:
            cols.append(self._store_features(queries, rows, items))
        for c in self.content:
            cols.append(self._content_similarity(c, queries, rows, items)[:, None])
        out = np.hstack([np.asarray(c, np.float32).reshape(len(items), -1) for c in cols])
        if out.shape[1] != len(self.names):  # an internal invariant, not user input
            raise FeatureSchemaError(
                f"FeatureBuilder built {out.shape[1]} columns for {len(self.names)} names"
            )
        return out

    def _component_scores(
        self, name: str, q: Queries, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        model = self.components[name]
        out = np.full(len(items), np.nan, np.float64)
        known = q.known[rows]
        if known.any():
            out[known] = model.score(q.user_idx[rows[known]], items[known])
        fold = (q.fold_in & ~q.cold)[rows]
        if fold.any() and isinstance(model, FoldIn):
            fold_rows = np.flatnonzero(q.fold_in & ~q.cold)
            depth = min(self.fold_in_depth, q.n_items)
            local = np.full(q.n_rows, -1, np.int64)
            local[fold_rows] = np.arange(len(fold_rows))
            pairs = getattr(model, "score_history_pairs", None)
            if depth >= q.n_items and pairs is not None:
                # the full-depth list's scores of just these pairs, without ranking the
                # catalogue (the same values: score_history_pairs says so)
                out[fold] = pairs(q.history[fold_rows], local[rows[fold]], items[fold])
            else:
                top_i, top_s = model.recommend_for_history(q.history[fold_rows], depth)
                out[fold] = _lookup_scores(top_i, top_s, local[rows[fold]], items[fold], q.n_items)
        return out

    def _store_features(
        self, q: Queries, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        store = self.store
        assert store is not None  # the caller checked
        n = len(items)
        uniq_items, item_inv = np.unique(items, return_inverse=True)
        itf = store.activity_arrays("item", self._store_index("item", uniq_items))
        cols: list[NDArray[np.float64]] = [itf["count"].astype(np.float64)[item_inv]]
        user_count = q.history_lengths.astype(np.float64)[rows]
        user_mean = np.full(n, np.nan)
        user_last = np.full(q.n_rows, np.nan)
        known_rows = np.flatnonzero(q.known)
        user_attrs = np.full((n, len(self._user_attr_cols)), np.nan)
        if len(known_rows):
            uf = store.activity_arrays("user", self._store_index("user", q.user_idx[known_rows]))
            pos = np.full(q.n_rows, -1, np.int64)
            pos[known_rows] = np.arange(len(known_rows))
            sel = pos[rows] >= 0
            p = pos[rows[sel]]
            user_count[sel] = uf["count"].astype(np.float64)[p]
            user_mean[sel] = uf["mean_rating"].astype(np.float64)[p]
            user_last[known_rows] = uf["last_timestamp"]
            if self._user_attr_cols:
                user_attrs[sel] = self._attribute_table("user")[q.user_idx[known_rows]][p]
        cols.append(user_count)
        if self._has_rating:
            cols += [itf["mean_rating"].astype(np.float64)[item_inv], user_mean]
        if self._has_time:
            cols.append((user_last[rows] - itf["last_timestamp"][item_inv]) / _DAY)
        if self._has_genres:
            cols.append(self._genre_similarity(q, rows, items))
            cols.extend(self._genre_affinity(q, rows, items))
        block = [np.column_stack(cols)] if cols else []
        if self._user_attr_cols:
            block.append(user_attrs)
        if self._item_attr_cols:
            block.append(self._attribute_table("item")[items])
        return np.hstack(block).astype(np.float32)

    def _store_index(self, entity: str, idx: NDArray[np.int64]) -> NDArray[np.int64]:
        """The store's indices of our users (or items) ``idx`` (-1 where it has none).

        The store's vocabulary may order ids differently or have appended ones; the
        translation table is built once per state of both vocabularies.
        """
        store = self.store
        assert store is not None
        ours = self.user_map if entity == "user" else self.item_map
        theirs = store.user_map if entity == "user" else store.item_map
        key = (id(theirs), len(theirs), id(ours), len(ours))
        cached = self._translations.get(entity)
        if cached is None or cached[0] != key:
            cached = (key, np.asarray(theirs.to_index(ours.ids), np.int64))
            self._translations[entity] = cached
        return cached[1][idx]

    def _attribute_table(self, entity: str) -> NDArray[np.float64]:
        """The scalar attributes of every user (or item) of the vocabulary, read once.

        Attributes are static metadata (events appended to the store change activity,
        not attributes), so the table is built on first use and kept.
        """
        if entity not in self._attr_tables:
            store = self.store
            assert store is not None
            if entity == "user":
                frame = store.user_attributes(self.user_map.ids)
                cols = self._user_attr_cols
            else:
                frame = store.item_attributes(self.item_map.ids)
                cols = self._item_attr_cols
            self._attr_tables[entity] = np.column_stack(
                [frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in cols]
            )
        return self._attr_tables[entity]

    def _genre_similarity(
        self, q: Queries, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        g = self._genre_rows(q.n_items)
        profile = np.asarray((sp.csr_matrix(q.recent, dtype=np.float64) @ g).toarray())
        pn = np.linalg.norm(profile, axis=1)
        item_g = g[items]
        dots = np.asarray(item_g.multiply(profile[rows]).sum(axis=1)).ravel()
        inorm = np.sqrt(np.asarray(item_g.multiply(item_g).sum(axis=1)).ravel())
        denom = pn[rows] * inorm
        return np.divide(dots, denom, out=np.full(len(items), np.nan), where=denom > 0)

    def _genre_affinity(
        self, q: Queries, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Share of each row's history in each of the item's genres: sum and maximum."""
        g = self._genre_rows(q.n_items)
        counts = np.asarray((sp.csr_matrix(q.history, dtype=np.float64) @ g).toarray())
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        per = sp.csr_matrix(g[items].multiply(share[rows]))
        total = np.asarray(per.sum(axis=1)).ravel()
        top = np.asarray(per.max(axis=1).toarray()).ravel()
        empty = q.cold[rows]
        total[empty] = np.nan
        top[empty] = np.nan
        return total, top

    def _genre_rows(self, n_items: int) -> sp.csr_matrix:
        g = self._genres
        assert g is not None
        if g.shape[0] < n_items:  # items appended to the vocabulary have no genres
            g = sp.csr_matrix(sp.vstack([g, sp.csr_matrix((n_items - g.shape[0], g.shape[1]))]))
        return g

    def _content_similarity(
        self, name: str, q: Queries, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        if name not in self._content_vectors:
            v = np.asarray(self.components[name].item_factors, np.float32)
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            self._content_vectors[name] = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
        v = self._content_vectors[name]
        profile = np.asarray(sp.csr_matrix(q.recent, dtype=np.float32) @ v, np.float64)
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        profile = np.divide(profile, norms, out=np.zeros_like(profile), where=norms > 0)
        sims = _pair_dots(profile, rows, v, items)
        sims[(norms[:, 0] == 0)[rows]] = np.nan
        return sims


def _lookup_scores(
    top_items: NDArray[np.int64],
    top_scores: NDArray[np.floating],
    rows: NDArray[np.int64],
    items: NDArray[np.int64],
    n_items: int,
) -> NDArray[np.float64]:
    """``top_scores[r, j]`` where ``top_items[r, j] == item`` for each ``(row, item)`` pair,
    NaN where the item is not in the row's list (``-1`` pads the lists).

    A dense ``(rows, n_items)`` table per block of rows: a few scatters and one gather,
    instead of sparse matrices built and indexed per call.
    """
    out = np.full(len(rows), np.nan, np.float64)
    n = top_items.shape[0]
    step = max(1, (1 << 21) // max(1, n_items))  # at most 16 MiB of table at once
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        block_items = top_items[lo:hi]
        table = np.full((hi - lo, n_items), np.nan, np.float64)
        valid = block_items >= 0
        r = np.repeat(np.arange(hi - lo), valid.sum(axis=1))
        table[r, block_items[valid]] = top_scores[lo:hi][valid].astype(np.float64)
        sel = (rows >= lo) & (rows < hi)
        out[sel] = table[rows[sel] - lo, items[sel]]
    return out


def _scalar_columns(frame: Any) -> list[str]:
    """Attribute columns holding one number per entity (codes or values), not lists."""
    out = []
    for c in frame.columns[1:]:
        if frame[c].dtype.kind in "biuf":
            out.append(str(c))
    return out


def _item_rows(matrix: sp.csr_matrix, store_map: IdMap, item_map: IdMap) -> sp.csr_matrix:
    """Rows of a store-indexed item matrix, reordered to the pipeline's item vocabulary."""
    idx = store_map.to_index(item_map.ids)
    if len(idx) == matrix.shape[0] and bool((idx == np.arange(len(idx))).all()):
        return sp.csr_matrix(matrix, dtype=np.float64)
    ok = idx >= 0
    sel = sp.csr_matrix(
        (np.ones(int(ok.sum())), (np.flatnonzero(ok), idx[ok])),
        shape=(len(item_map), matrix.shape[0]),
    )
    return sp.csr_matrix(sel @ matrix, dtype=np.float64)
