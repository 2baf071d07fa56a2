"""The ranker's features: component scores, retrieval provenance, feature-store columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import RetrievalConfig
from recsys.errors import FeatureSchemaError
from recsys.features import FeatureStore
from recsys.models import ALS, ItemKNN, Popular
from recsys.ranking import FeatureBuilder, check_feature_schema
from recsys.ranking.components import training_frame
from recsys.retrieval import CandidateGenerator, CandidateSet, Queries
from recsys.testing.datasets import block_dataset
from recsys.types import TrainingData


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    data = block_dataset(n_blocks=3, users_per_block=8, items_per_block=8)
    comps = {
        "itemknn": ItemKNN(n_neighbors=10).fit(data, show_progress=False),
        "als": ALS(embedding_dim=4, epochs=3, num_threads=1).fit(data, show_progress=False),
        "popular": Popular().fit(data, show_progress=False),
    }
    store = FeatureStore.build(
        training_frame(data), items=data.items, users=data.users, show_progress=False
    )
    gen = CandidateGenerator.fit(
        comps,
        data,
        retrievers=["itemknn", "als", "popular"],
        config=RetrievalConfig(recent=["itemknn"]),
        candidates=12,
    )
    builder = FeatureBuilder(
        comps, ["itemknn", "als"], [], store, data.user_map, data.item_map, gen.source_names
    )
    return {"data": data, "comps": comps, "store": store, "gen": gen, "builder": builder}


def known_queries(data: TrainingData, users: np.ndarray) -> Queries:
    h = sp.csr_matrix(data.user_items[users])
    return Queries(users, h, h, np.zeros(len(users), bool))


def column(builder: FeatureBuilder, x: np.ndarray, name: str) -> np.ndarray:
    return x[:, builder.names.index(name)]


def test_feature_names_cover_every_group(setup: dict[str, Any]) -> None:
    names = setup["builder"].names
    for expected in (
        "rank@itemknn",
        "score@covisit",
        "n_sources",
        "score:itemknn",
        "rank:als",
        "item_count",
        "item_mean_rating",
        "user_count",
        "user_mean_rating",
        "item_recency_days",
        "genre_similarity",
    ):
        assert expected in names
    assert "score:popular" not in names  # popularity is item_count
    assert any(
        n.startswith("user_") and n not in ("user_count", "user_mean_rating") for n in names
    )  # the users frame's attribute (block)


def test_values_match_their_definitions(setup: dict[str, Any]) -> None:
    data, comps, builder = setup["data"], setup["comps"], setup["builder"]
    users = np.arange(6)
    q = known_queries(data, users)
    cands = setup["gen"].generate(q)
    x = builder.build(cands, q)
    assert x.shape == (cands.nnz, len(builder.names)) and x.dtype == np.float32
    rows, items = users[cands.rows], cands.items
    np.testing.assert_allclose(
        column(builder, x, "score:itemknn"), comps["itemknn"].score(rows, items), rtol=1e-6
    )
    np.testing.assert_allclose(
        column(builder, x, "score:als"), comps["als"].score(rows, items), rtol=1e-5
    )
    pop = np.asarray(data.user_items.sum(axis=0)).ravel()
    np.testing.assert_array_equal(column(builder, x, "item_count"), pop[items])
    np.testing.assert_array_equal(
        column(builder, x, "user_count"), np.diff(data.user_items.indptr)[rows]
    )
    np.testing.assert_array_equal(column(builder, x, "n_sources"), cands.proposed.sum(axis=1))
    for r in range(len(users)):
        ranks = column(builder, x, "rank:itemknn")[cands.rows == r]
        assert sorted(ranks.tolist()) == list(range(1, len(ranks) + 1))
    sim = column(builder, x, "genre_similarity")
    assert np.nanmin(sim) >= 0 and np.nanmax(sim) <= 1 + 1e-6


def test_fold_in_rows_score_from_the_fold_in(setup: dict[str, Any]) -> None:
    data, comps, builder = setup["data"], setup["comps"], setup["builder"]
    h = sp.csr_matrix(data.user_items[[3]])
    q = Queries(np.array([-1]), h, h, np.array([True]))
    cands = setup["gen"].generate(q)
    x = builder.build(cands, q)
    top, scores = comps["itemknn"].recommend_for_history(h, data.n_items)
    want = dict(zip(top[0].tolist(), scores[0].tolist(), strict=True))
    got = column(builder, x, "score:itemknn")
    np.testing.assert_allclose(got, [want[i] for i in cands.items], rtol=1e-6)
    assert np.isnan(column(builder, x, "user_mean_rating")).all()  # only stored users have it


def test_schema_mismatch_lists_the_columns(setup: dict[str, Any]) -> None:
    with pytest.raises(FeatureSchemaError, match=r"missing 'a'; unexpected 'c'"):
        check_feature_schema(["a", "b"], ["b", "c"], "test")
    check_feature_schema(["a"], ["a"], "test")
    other = CandidateSet.merge([_single_source()], n_items=setup["data"].n_items, limit=3)
    with pytest.raises(FeatureSchemaError, match="features differ"):
        setup["builder"].build(other, known_queries(setup["data"], np.arange(1)))


def _single_source() -> Any:
    from recsys.retrieval import SourceList

    return SourceList("x", np.array([[0, 1]]), np.array([[1.0, 0.5]], np.float32))


def test_pair_dots_in_blocks_equal_one_product_bit_for_bit(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.ranking import features

    left = rng.normal(size=(30, 24))
    right = rng.normal(size=(50, 24)).astype(np.float32)
    left_idx = np.sort(rng.integers(0, 30, 5000))
    right_idx = rng.integers(0, 50, 5000)
    one = np.einsum("nd,nd->n", left[left_idx], right[right_idx].astype(np.float64))
    for block in (5000, 2048, 7):
        monkeypatch.setattr(features, "_PAIR_BLOCK", block)
        np.testing.assert_array_equal(features._pair_dots(left, left_idx, right, right_idx), one)
