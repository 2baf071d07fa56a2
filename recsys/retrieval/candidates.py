"""The currency between the two stages: queries in, candidate lists with provenance out.

A :class:`Queries` batch describes who is asking (known users or fold-in histories); every
candidate source answers it with a :class:`SourceList` (``(n, k)`` item indices and scores,
best first); :meth:`CandidateSet.merge` interleaves the sources by rank, removes
duplicates and excluded items and caps each row, keeping for every candidate which sources
proposed it, at what rank and with what score. Everything is vectorised over the rows of
the batch; no Python loop runs per user or per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import DataError

__all__ = ["CandidateSet", "Queries", "SourceList"]


def _readonly(*arrays: NDArray[np.generic]) -> None:
    for a in arrays:
        a.setflags(write=False)


@dataclass(frozen=True, eq=False)
class Queries:
    """A batch of recommendation queries over one item vocabulary.

    Stability: provisional

    Attributes
    ----------
    user_idx : (n,) int64
        Internal user index, or ``-1`` for a fold-in history or an unknown user.
    history : (n, n_items) CSR, binary
        Each row's items: the training items of a known user, or the given history of a
        fold-in row. Excluded from the candidates when ``exclude_seen``.
    recent : (n, n_items) CSR
        The row's most recent items weighted ``decay ** age`` (age 0 = the latest); the
        seeds of the neighbour, co-visitation and content sources.
    fold_in : (n,) bool
        Rows answered from ``history`` (a fold-in), not from a stored user state.
    """

    user_idx: NDArray[np.int64]
    history: sp.csr_matrix
    recent: sp.csr_matrix
    fold_in: NDArray[np.bool_]
    _lengths: NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        if self.history.shape[0] != n or self.recent.shape[0] != n or len(self.fold_in) != n:
            raise DataError(
                f"Queries: {n} users but history has {self.history.shape[0]} rows, recent "
                f"{self.recent.shape[0]} and fold_in {len(self.fold_in)}"
            )
        if self.history.shape[1] != self.recent.shape[1]:
            raise DataError("Queries: history and recent must have the same number of items")
        object.__setattr__(self, "_lengths", np.diff(self.history.indptr).astype(np.int64))

    @property
    def n_rows(self) -> int:
        """Number of queries."""
        return len(self.user_idx)

    @property
    def n_items(self) -> int:
        """Items of the vocabulary."""
        return int(self.history.shape[1])

    @property
    def history_lengths(self) -> NDArray[np.int64]:
        """``(n,)`` number of items in each row's history."""
        return self._lengths

    @property
    def cold(self) -> NDArray[np.bool_]:
        """``(n,)`` rows with no history at all (popularity is their answer)."""
        return self._lengths == 0

    @property
    def known(self) -> NDArray[np.bool_]:
        """``(n,)`` rows answered from a stored user state (not fold-in, not cold)."""
        return (self.user_idx >= 0) & ~self.fold_in & ~self.cold

    def select(self, rows: NDArray[np.int64]) -> Queries:
        """The queries of ``rows``, in that order."""
        return Queries(
            self.user_idx[rows],
            sp.csr_matrix(self.history[rows]),
            sp.csr_matrix(self.recent[rows]),
            self.fold_in[rows],
        )


@dataclass(frozen=True, eq=False)
class SourceList:
    """One source's proposals for a batch: ``(n, k)`` items and scores, best first.

    ``items`` is ``-1`` (and ``scores`` NaN) where the source proposes fewer than ``k``
    items for a row, or nothing at all.

    Stability: provisional
    """

    name: str
    items: NDArray[np.int64]
    scores: NDArray[np.float32]

    def __post_init__(self) -> None:
        if self.items.shape != self.scores.shape or self.items.ndim != 2:
            raise DataError(
                f"SourceList {self.name!r}: items {self.items.shape} and scores "
                f"{self.scores.shape} must be equal 2-d shapes"
            )

    @classmethod
    def empty(cls, name: str, n_rows: int) -> SourceList:
        """A source that proposes nothing for any of ``n_rows`` rows."""
        return cls(
            name, np.full((n_rows, 0), -1, np.int64), np.full((n_rows, 0), np.nan, np.float32)
        )

    @classmethod
    def scatter(
        cls,
        name: str,
        n_rows: int,
        rows: NDArray[np.bool_],
        items: NDArray[np.int64],
        scores: NDArray[np.float32],
    ) -> SourceList:
        """A list for all ``n_rows`` rows from the lists of the rows where ``rows`` is set."""
        k = items.shape[1] if items.ndim == 2 else 0
        all_items = np.full((n_rows, k), -1, np.int64)
        all_scores = np.full((n_rows, k), np.nan, np.float32)
        all_items[rows] = items
        all_scores[rows] = scores
        return cls(name, all_items, all_scores)


@dataclass(frozen=True, eq=False)
class CandidateSet:
    """Candidates of a batch of queries, row-compressed (CSR-like), immutable.

    Row ``r`` holds ``items[indptr[r]:indptr[r + 1]]`` in merge order (sources
    interleaved by rank). For candidate ``j`` and source ``s`` (``source_names[s]``),
    ``source_ranks[j, s]`` is its 1-based rank in that source's list and
    ``source_scores[j, s]`` the source's score, both NaN when the source did not propose
    it (candidates added with :meth:`with_pairs` have no source at all).

    Stability: provisional
    """

    indptr: NDArray[np.int64]
    items: NDArray[np.int64]
    source_names: tuple[str, ...]
    source_ranks: NDArray[np.float32]
    source_scores: NDArray[np.float32]

    def __post_init__(self) -> None:
        nnz = len(self.items)
        shape = (nnz, len(self.source_names))
        if self.source_ranks.shape != shape or self.source_scores.shape != shape:
            raise DataError(
                f"CandidateSet: source arrays must have shape {shape}, got "
                f"{self.source_ranks.shape} and {self.source_scores.shape}"
            )
        if int(self.indptr[-1]) != nnz:
            raise DataError(f"CandidateSet: indptr ends at {self.indptr[-1]}, {nnz} candidates")
        _readonly(self.indptr, self.items, self.source_ranks, self.source_scores)

    # ------------------------------------------------------------------ shape
    @property
    def n_rows(self) -> int:
        """Number of query rows."""
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        """Total number of candidates."""
        return len(self.items)

    @property
    def counts(self) -> NDArray[np.int64]:
        """``(n_rows,)`` candidates per row."""
        return np.diff(self.indptr)

    @property
    def rows(self) -> NDArray[np.int64]:
        """``(nnz,)`` the query row of every candidate."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts)

    @property
    def proposed(self) -> NDArray[np.bool_]:
        """``(nnz, n_sources)`` whether each source proposed each candidate."""
        return ~np.isnan(self.source_ranks)

    def sources(self, sep: str = "|") -> NDArray[np.object_]:
        """``(nnz,)`` names of the sources that proposed each candidate, joined by ``sep``.

        Names appear in the order of :attr:`source_names`; a candidate no source proposed
        has an empty string.
        """
        proposed = self.proposed
        codes = proposed @ (1 << np.arange(len(self.source_names), dtype=np.int64))
        out = np.empty(self.nnz, dtype=object)
        for code in np.unique(codes):
            names = [n for s, n in enumerate(self.source_names) if code >> s & 1]
            out[codes == code] = sep.join(names)
        return out

    # ------------------------------------------------------------------ building
    @classmethod
    def merge(
        cls,
        lists: Sequence[SourceList],
        n_items: int,
        *,
        limit: int,
        exclude: sp.csr_matrix | None = None,
    ) -> CandidateSet:
        """Interleave source lists by rank into at most ``limit`` distinct items per row.

        Entries are visited in round-robin order (every source's rank 1, then every
        source's rank 2, ..., sources in the given order within a rank); an item joins a
        row's candidates the first time it is visited, unless ``exclude`` holds it for
        that row, until the row has ``limit`` candidates. Every source that lists a kept
        candidate is recorded with its rank and score, even when it was not the first.

        Parameters
        ----------
        lists
            One :class:`SourceList` per source, all with the same number of rows.
        n_items
            Size of the item vocabulary.
        limit
            Most candidates per row.
        exclude : (n_rows, n_items) sparse, optional
            Items never to propose (the rows' seen items).

        Raises
        ------
        DataError
            Lists with different row counts, item indices outside the vocabulary, or an
            exclusion matrix of the wrong shape.
        """
        if not lists:
            raise DataError("CandidateSet.merge: no source lists")
        n_rows = lists[0].items.shape[0]
        names = tuple(sl.name for sl in lists)
        if len(set(names)) != len(names):
            raise DataError(f"CandidateSet.merge: duplicate source names {names}")
        rows_l, items_l, ranks_l, scores_l, src_l = [], [], [], [], []
        for s, sl in enumerate(lists):
            if sl.items.shape[0] != n_rows:
                raise DataError(
                    f"CandidateSet.merge: source {sl.name!r} has {sl.items.shape[0]} rows, "
                    f"expected {n_rows}"
                )
            r, p = np.nonzero(sl.items >= 0)
            it = sl.items[r, p]
            if len(it) and int(it.max()) >= n_items:
                raise DataError(
                    f"CandidateSet.merge: source {sl.name!r} proposed item {int(it.max())}, "
                    f"outside the vocabulary of {n_items} items"
                )
            rows_l.append(r.astype(np.int64))
            items_l.append(it.astype(np.int64))
            ranks_l.append(p.astype(np.int64))
            scores_l.append(sl.scores[r, p].astype(np.float32))
            src_l.append(np.full(len(r), s, np.int64))
        rows = np.concatenate(rows_l)
        items = np.concatenate(items_l)
        ranks = np.concatenate(ranks_l)
        scores = np.concatenate(scores_l)
        srcs = np.concatenate(src_l)
        keys = rows * n_items + items
        if exclude is not None:
            exclude = sp.csr_matrix(exclude)
            if exclude.shape != (n_rows, n_items):
                raise DataError(
                    f"CandidateSet.merge: exclude has shape {exclude.shape}, expected "
                    f"({n_rows}, {n_items})"
                )
            ex_rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(exclude.indptr))
            banned = ex_rows * n_items + exclude.indices.astype(np.int64)
            keep = ~np.isin(keys, banned)
            rows, items, ranks, srcs, keys = (
                rows[keep],
                items[keep],
                ranks[keep],
                srcs[keep],
                keys[keep],
            )
            scores = scores[keep]
        # round-robin visiting order: by row, then rank, then source
        order = np.lexsort((srcs, ranks, rows))
        ordered_keys = keys[order]
        _, first = np.unique(ordered_keys, return_index=True)
        first.sort()  # first visits, back in visiting order
        cand_pos = order[first]
        cand_rows = rows[cand_pos]
        # cap each row at `limit` in visiting order
        counts = np.bincount(cand_rows, minlength=n_rows)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        within = np.arange(len(cand_pos)) - starts[cand_rows]
        cand_pos = cand_pos[within < limit]
        cand_rows = rows[cand_pos]
        cand_items = items[cand_pos]
        counts = np.bincount(cand_rows, minlength=n_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # every listing of a kept candidate, by its key
        cand_keys = keys[cand_pos]
        sorter = np.argsort(cand_keys, kind="stable")
        loc = np.searchsorted(cand_keys, keys, sorter=sorter)
        loc = np.minimum(loc, max(len(cand_keys) - 1, 0))
        hit = cand_keys[sorter[loc]] == keys if len(cand_keys) else np.zeros(len(keys), np.bool_)
        pos = sorter[loc[hit]]
        n_src = len(lists)
        source_ranks = np.full((len(cand_pos), n_src), np.nan, np.float32)
        source_scores = np.full((len(cand_pos), n_src), np.nan, np.float32)
        source_ranks[pos, srcs[hit]] = (ranks[hit] + 1).astype(np.float32)
        source_scores[pos, srcs[hit]] = scores[hit]
        return cls(indptr, cand_items, names, source_ranks, source_scores)

    def with_pairs(self, rows: NDArray[np.int64], items: NDArray[np.int64]) -> CandidateSet:
        """A set that also holds the given ``(row, item)`` pairs (no source for new ones).

        Pairs already present are not repeated; new ones are appended at the end of
        their rows.
        """
        n_items_bound = int(max(self.items.max(initial=-1), items.max(initial=-1))) + 1
        old_rows = self.rows
        old_keys = old_rows * n_items_bound + self.items
        new_keys = np.unique(rows.astype(np.int64) * n_items_bound + items.astype(np.int64))
        new_keys = new_keys[~np.isin(new_keys, old_keys)]
        all_rows = np.concatenate([old_rows, new_keys // n_items_bound])
        all_items = np.concatenate([self.items, new_keys % n_items_bound])
        order = np.argsort(all_rows, kind="stable")
        n_src = len(self.source_names)
        pad = np.full((len(new_keys), n_src), np.nan, np.float32)
        ranks = np.vstack([self.source_ranks, pad])[order]
        scores = np.vstack([self.source_scores, pad])[order]
        counts = np.bincount(all_rows, minlength=self.n_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return CandidateSet(indptr, all_items[order], self.source_names, ranks, scores)

    # ------------------------------------------------------------------ ranking
    def top(
        self, scores: NDArray[np.floating], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
        """Each row's ``k`` best candidates by ``scores`` (one per candidate).

        Ties go to the lower item index; rows with fewer candidates are padded.

        Returns
        -------
        items : (n_rows, k) int64
            ``-1`` padded.
        scores : (n_rows, k) float32
            NaN padded.
        positions : (n_rows, k) int64
            Index of each chosen candidate in this set (``-1`` padded), to look up its
            sources and features.
        """
        given = np.asarray(scores, dtype=np.float64)
        if given.shape != (self.nnz,):
            raise DataError(f"CandidateSet.top: {given.shape} scores for {self.nnz} candidates")
        s = np.where(np.isnan(given), -np.inf, given)
        rows = self.rows
        order = np.lexsort((self.items, -s, rows))
        within = np.arange(self.nnz) - self.indptr[rows[order]]
        keep = within < k
        chosen = order[keep]
        out_pos = np.full((self.n_rows, k), -1, np.int64)
        out_pos[rows[chosen], within[keep]] = chosen
        if self.nnz == 0:  # no row has a candidate (every user saw every item): padding only
            return out_pos.copy(), np.full(out_pos.shape, np.nan, np.float32), out_pos
        valid = out_pos >= 0
        out_items = np.where(valid, self.items[np.maximum(out_pos, 0)], -1)
        out_scores = np.where(valid, given[np.maximum(out_pos, 0)], np.nan).astype(np.float32)
        return out_items.astype(np.int64), out_scores, out_pos
