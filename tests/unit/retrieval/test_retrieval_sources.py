"""The candidate generator over fitted components: sources, quotas, fold-in, persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import RetrievalConfig
from recsys.errors import ArtifactError, ConfigError
from recsys.models import ALS, ItemKNN, Popular
from recsys.retrieval import CandidateGenerator, Queries, plan_sources
from recsys.testing.datasets import block_dataset, block_labels
from recsys.types import TrainingData


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return block_dataset(n_blocks=3, users_per_block=12, items_per_block=10, density=0.5)


@pytest.fixture(scope="module")
def components(data: TrainingData) -> dict[str, Any]:
    return {
        "itemknn": ItemKNN(n_neighbors=20).fit(data, show_progress=False),
        "als": ALS(embedding_dim=8, epochs=5, num_threads=1).fit(data, show_progress=False),
        "popular": Popular().fit(data, show_progress=False),
    }


@pytest.fixture(scope="module")
def generator(components: dict[str, Any], data: TrainingData) -> CandidateGenerator:
    return CandidateGenerator.fit(
        components,
        data,
        retrievers=["itemknn", "als", "popular"],
        config=RetrievalConfig(recent=["itemknn"], recent_items=3, covisitation_window=3),
        candidates=15,
    )


def user_queries(data: TrainingData, users: np.ndarray) -> Queries:
    history = sp.csr_matrix(data.user_items[users])
    return Queries(users, history, history, np.zeros(len(users), bool))


def test_plan_follows_capabilities_and_config(components: dict[str, Any]) -> None:
    cfg = RetrievalConfig(recent=["itemknn", "als"], content=[], quotas={"als": 7})
    specs = plan_sources(components, ["itemknn", "als", "popular", "bpr"], cfg, 50)
    kinds = {s.name: (s.kind, s.quota) for s in specs}
    assert kinds == {
        "itemknn": ("model", 50),
        "als": ("embedding", 7),
        "popular": ("popular", 50),
        "itemknn@recent": ("recent", 50),
        "als@recent": ("recent", 50),  # ALS folds in too
        "covisit": ("covisit", 50),
    }
    as_content = plan_sources(components, ["als"], RetrievalConfig(content=["als"]), 10)
    assert (as_content[0].name, as_content[0].kind) == ("als", "content")
    with pytest.raises(ConfigError, match="quotas name unknown sources"):
        plan_sources(components, ["als"], RetrievalConfig(quotas={"alss": 3}), 10)
    # a quota for a source this configuration lacks (the default doc2vec one) is ignored
    assert plan_sources(components, ["als"], RetrievalConfig(quotas={"doc2vec": 3}), 10)


def test_candidates_are_unseen_sourced_and_capped(
    generator: CandidateGenerator, data: TrainingData
) -> None:
    users = np.arange(data.n_users)
    cands = generator.generate(user_queries(data, users))
    assert cands.counts.max() <= 15 and cands.counts.min() > 0
    seen = np.asarray(data.user_items[cands.rows, cands.items]).ravel()
    assert not seen.any()
    assert cands.proposed.any(axis=1).all()
    assert set(cands.source_names) == {"itemknn", "als", "popular", "itemknn@recent", "covisit"}
    # neighbour sources stay in the user's block on block data
    user_block, item_block = block_labels(data)
    col = cands.source_names.index("itemknn")
    by_knn = cands.source_scores[:, col] > 0  # the zero-score tail of a list is filler
    same = item_block[cands.items[by_knn]] == user_block[cands.rows[by_knn]]
    assert same.mean() > 0.95


def test_embedding_source_through_faiss_matches_the_model(
    generator: CandidateGenerator, components: dict[str, Any], data: TrainingData
) -> None:
    users = np.arange(6)
    items, _ = components["als"].recommend(users, 15)
    cands = generator.generate(user_queries(data, users), limit=200)
    col = cands.source_names.index("als")
    for r in range(len(users)):
        mine = cands.items[(cands.rows == r) & cands.proposed[:, col]]
        ranks = cands.source_ranks[(cands.rows == r) & cands.proposed[:, col], col]
        assert mine[np.argsort(ranks)].tolist() == items[r][items[r] >= 0].tolist()


def test_cold_rows_get_popularity_only(generator: CandidateGenerator, data: TrainingData) -> None:
    empty = sp.csr_matrix((2, data.n_items), dtype=np.float32)
    cands = generator.generate(Queries(np.array([-1, -1]), empty, empty, np.zeros(2, bool)))
    assert set(cands.sources().tolist()) == {"popular"}
    assert cands.counts.tolist() == [15, 15]


def test_fold_in_rows_use_the_history(generator: CandidateGenerator, data: TrainingData) -> None:
    user_block, item_block = block_labels(data)
    hist = sp.csr_matrix(data.user_items[[0]])
    q = Queries(np.array([-1]), hist, hist, np.array([True]))
    cands = generator.generate(q)
    assert set(cands.sources()[0].split("|")) > {"popular"} or cands.proposed.sum() > 15
    assert not set(cands.items) & set(hist.indices)
    top = cands.items[cands.source_scores[:, cands.source_names.index("itemknn")] > 0]
    assert len(top) and (item_block[top] == user_block[0]).all()


def test_save_load_round_trip(
    generator: CandidateGenerator, components: dict[str, Any], data: TrainingData, tmp_path: Path
) -> None:
    generator.save(tmp_path / "index")
    back = CandidateGenerator.load(tmp_path / "index", components)
    q = user_queries(data, np.arange(10))
    a, b = generator.generate(q), back.generate(q)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.source_ranks, b.source_ranks)
    with pytest.raises(ArtifactError, match=r"not fitted"):
        CandidateGenerator.load(tmp_path / "index", {"popular": components["popular"]})


def test_hnsw_norm_ranges_reach_the_embedding_index_and_persist(
    components: dict[str, Any], data: TrainingData, tmp_path: Path
) -> None:
    gen = CandidateGenerator.fit(
        components,
        data,
        retrievers=["als", "popular"],
        config=RetrievalConfig(index="hnsw", hnsw_norm_ranges=3, covisitation=False),
        candidates=15,
    )
    index = gen.indexes["als"]
    assert index.kind == "hnsw" and index.range_norms is not None
    assert len(index.range_norms) == 3
    gen.save(tmp_path / "index")
    back = CandidateGenerator.load(tmp_path / "index", components)
    assert back.indexes["als"].config.hnsw_norm_ranges == 3
    q = user_queries(data, np.arange(data.n_users))
    a, b = gen.generate(q, limit=200), back.generate(q, limit=200)
    np.testing.assert_array_equal(a.items, b.items)
    # 30 items in three graphs: the embedding source still returns the model's own lists
    items, _ = components["als"].recommend(np.arange(6), 15)
    col = a.source_names.index("als")
    for r in range(6):
        mine = (a.rows == r) & a.proposed[:, col]
        got = a.items[mine][np.argsort(a.source_ranks[mine, col])]
        assert got.tolist() == items[r][items[r] >= 0].tolist()
