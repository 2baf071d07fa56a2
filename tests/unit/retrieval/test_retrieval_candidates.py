"""Candidate lists between the stages: merging with quotas, provenance, exclusion, ranking."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import DataError
from recsys.retrieval import CandidateSet, Queries, SourceList

NAN = np.nan


def lists() -> list[SourceList]:
    a = SourceList(
        "a",
        np.array([[5, 3, 1], [2, -1, -1]], np.int64),
        np.array([[0.9, 0.8, 0.7], [0.5, NAN, NAN]], np.float32),
    )
    b = SourceList(
        "b",
        np.array([[3, 4, -1], [7, 2, 6]], np.int64),
        np.array([[9.0, 8.0, NAN], [3.0, 2.0, 1.0]], np.float32),
    )
    return [a, b]


def test_merge_interleaves_by_rank_and_keeps_provenance() -> None:
    cs = CandidateSet.merge(lists(), n_items=10, limit=10)
    # row 0 visits a1=5, b1=3, a2=3 (dup), b2=4, a3=1; row 1 visits a1=2, b1=7, b2=2 (dup), b3=6
    assert cs.indptr.tolist() == [0, 4, 7]
    assert cs.items.tolist() == [5, 3, 4, 1, 2, 7, 6]
    assert cs.source_names == ("a", "b")
    ranks = np.nan_to_num(cs.source_ranks, nan=0).tolist()
    assert ranks == [[1, 0], [2, 1], [0, 2], [3, 0], [1, 2], [0, 1], [0, 3]]
    assert cs.source_scores[1].tolist() == pytest.approx([0.8, 9.0])
    assert cs.sources().tolist() == ["a", "a|b", "b", "a", "a|b", "b", "b"]
    assert cs.rows.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert cs.proposed.sum() == 9


def test_merge_limit_and_exclusion() -> None:
    exclude = sp.csr_matrix((np.ones(2), ([0, 1], [3, 2])), shape=(2, 10))
    cs = CandidateSet.merge(lists(), n_items=10, limit=2, exclude=exclude)
    assert cs.items.tolist() == [5, 4, 7, 6]  # seen 3 and 2 never appear; two per row
    assert cs.counts.tolist() == [2, 2]


def test_candidate_sets_are_immutable() -> None:
    cs = CandidateSet.merge(lists(), n_items=10, limit=10)
    with pytest.raises(ValueError, match="read-only"):
        cs.items[0] = 1
    with pytest.raises(AttributeError):
        cs.items = np.zeros(7, np.int64)  # type: ignore[misc]


def test_top_orders_by_score_with_ties_to_the_lower_item() -> None:
    cs = CandidateSet.merge(lists(), n_items=10, limit=10)
    scores = np.array([1.0, 3.0, 3.0, NAN, 0.5, 0.1, 0.9])
    items, top_scores, pos = cs.top(scores, 3)
    assert items.tolist() == [[3, 4, 5], [6, 2, 7]]
    np.testing.assert_allclose(top_scores, [[3, 3, 1], [0.9, 0.5, 0.1]], rtol=1e-6)
    assert cs.items[pos].tolist() == items.tolist()
    wide, _, wide_pos = cs.top(scores, 5)
    assert wide[1, 3:].tolist() == [-1, -1] and wide_pos[1, 3:].tolist() == [-1, -1]
    assert wide[0, 3] == 1  # a NaN score ranks last but stays a candidate


def test_with_pairs_adds_unsourced_candidates_once() -> None:
    cs = CandidateSet.merge(lists(), n_items=10, limit=10)
    more = cs.with_pairs(np.array([0, 0, 1]), np.array([9, 5, 0]))
    assert more.counts.tolist() == [5, 4]
    new = (more.rows == 0) & (more.items == 9)
    assert new.sum() == 1 and np.isnan(more.source_ranks[new]).all()
    assert ((more.rows == 0) & (more.items == 5)).sum() == 1  # already there: not repeated


def test_merge_rejects_bad_lists() -> None:
    a, b = lists()
    with pytest.raises(DataError, match="outside the vocabulary"):
        CandidateSet.merge([a], n_items=4, limit=5)
    with pytest.raises(DataError, match="duplicate source names"):
        CandidateSet.merge([a, a], n_items=10, limit=5)
    short = SourceList("c", b.items[:1], b.scores[:1])
    with pytest.raises(DataError, match="has 1 rows, expected 2"):
        CandidateSet.merge([a, short], n_items=10, limit=5)
    with pytest.raises(DataError, match="equal 2-d shapes"):
        SourceList("d", np.zeros(3, np.int64), np.zeros(3, np.float32))


def test_queries_views() -> None:
    history = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 1, 0]], np.float32))
    recent = sp.csr_matrix(np.array([[0.9, 1, 0], [0, 0, 0], [0, 1, 0]], np.float32))
    q = Queries(np.array([4, -1, -1]), history, recent, np.array([False, False, True]))
    assert q.cold.tolist() == [False, True, False]
    assert q.known.tolist() == [True, False, False]
    assert q.history_lengths.tolist() == [2, 0, 1]
    sub = q.select(np.array([2, 0]))
    assert sub.user_idx.tolist() == [-1, 4] and sub.fold_in.tolist() == [True, False]
    with pytest.raises(DataError, match="3 users but history has 2 rows"):
        Queries(np.arange(3), history[:2], recent, np.zeros(3, bool))
