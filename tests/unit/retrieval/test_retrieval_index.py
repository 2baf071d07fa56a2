"""FAISS item indexes against their oracle, exact brute-force inner-product search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ArtifactError, ConfigError, DataError
from recsys.retrieval import IndexConfig, ItemIndex, exact_search
from recsys.retrieval.index import _graphs


def clustered(rng: np.random.Generator, n: int, dim: int, n_clusters: int) -> np.ndarray:
    """Vectors around Gaussian centres with log-normal norms (the shape of factor vectors)."""
    centres = rng.normal(size=(n_clusters, dim))
    x = centres[rng.integers(0, n_clusters, n)] + 0.6 * rng.normal(size=(n, dim))
    x *= rng.lognormal(0.0, 0.3, n)[:, None] / np.sqrt(dim)
    return x.astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([np.intersect1d(f, t).size / t.size for f, t in zip(found, truth, strict=True)])
    )


def test_exact_search_oracle_on_a_known_answer() -> None:
    items = np.array([[1, 0], [0, 1], [2, 0], [1, 1]], np.float32)
    found, scores = exact_search(items, np.array([[1, 0], [0, 1]], np.float32), k=3)
    assert found.tolist() == [[2, 0, 3], [1, 3, 0]]  # ties (0 and 3 for query 2) to the lower
    assert scores.tolist() == [[2, 1, 1], [1, 1, 0]]
    padded, pad_scores = exact_search(items, np.ones((1, 2), np.float32), k=6)
    assert padded[0, 4:].tolist() == [-1, -1] and np.isnan(pad_scores[0, 4:]).all()


def test_flat_index_equals_the_oracle(rng: np.random.Generator) -> None:
    items = clustered(rng, 2000, 16, 20)
    queries = clustered(rng, 50, 16, 20)
    index = ItemIndex.build(items, IndexConfig(kind="flat"))
    found, scores = index.search(queries, 25)
    want, want_scores = exact_search(items, queries, 25)
    np.testing.assert_array_equal(found, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def test_auto_kind_follows_catalogue_size(rng: np.random.Generator) -> None:
    items = clustered(rng, 600, 8, 10)
    assert ItemIndex.build(items).kind == "flat"
    cfg = IndexConfig(flat_max_items=500, nlist=8)
    assert ItemIndex.build(items, cfg).kind == "ivf"
    assert IndexConfig().resolve_kind(10**6) == "ivf"


@pytest.mark.slow
def test_ivf_default_recall_at_100_above_095(rng: np.random.Generator) -> None:
    # 40k items in 40 clusters: about 1000 per cluster and 50 per IVF cell (nlist = 4 sqrt N)
    items = clustered(rng, 40_000, 32, 40)
    base = items[rng.choice(len(items), 200, replace=False)]
    queries = base + 0.3 * rng.normal(size=base.shape).astype(np.float32) / np.sqrt(32)
    index = ItemIndex.build(items, IndexConfig(kind="ivf"))
    assert index.index.nlist == round(4 * np.sqrt(len(items)))
    found, scores = index.search(queries, 100)
    want, _ = exact_search(items, queries, 100)
    assert recall(found, want) >= 0.95
    # every returned score is the exact inner product
    np.testing.assert_allclose(
        scores, np.einsum("nd,nkd->nk", queries, items[found]), rtol=1e-4, atol=1e-5
    )


def test_ivf_recall_at_100_on_a_small_catalogue(rng: np.random.Generator) -> None:
    items = clustered(rng, 5000, 16, 10)
    queries = items[rng.choice(len(items), 50, replace=False)]
    index = ItemIndex.build(items, IndexConfig(kind="ivf"))
    found, _ = index.search(queries, 100)
    want, _ = exact_search(items, queries, 100)
    assert recall(found, want) >= 0.95
    index.set_search_params(nprobe=1)  # one cell: recall drops, the knob works
    low, _ = index.search(queries, 100)
    assert recall(low, want) < recall(found, want)


def test_hnsw_recall_on_a_small_catalogue(rng: np.random.Generator) -> None:
    items = clustered(rng, 3000, 16, 10)
    queries = items[rng.choice(len(items), 50, replace=False)]
    index = ItemIndex.build(items, IndexConfig(kind="hnsw"))
    found, _ = index.search(queries, 50)
    want, _ = exact_search(items, queries, 50)
    assert recall(found, want) >= 0.95


def test_norm_ranges_lift_hnsw_recall_over_one_graph(rng: np.random.Generator) -> None:
    # 40 clusters with log-normal norms: one inner-product graph misses many true top items
    items = clustered(rng, 20_000, 32, 40)
    base = items[rng.choice(len(items), 100, replace=False)]
    queries = (base + 0.3 * rng.normal(size=base.shape) / np.sqrt(32)).astype(np.float32)
    want, _ = exact_search(items, queries, 100)
    one = ItemIndex.build(items, IndexConfig(kind="hnsw", hnsw_norm_ranges=1))
    ranged = ItemIndex.build(items, IndexConfig(kind="hnsw"))  # 8 norm ranges
    assert len(_graphs(one.index)) == 1 and len(_graphs(ranged.index)) == 8
    assert ranged.n_items == len(items)
    found_one, _ = one.search(queries, 100)
    found, scores = ranged.search(queries, 100)
    assert recall(found_one, want) < 0.9
    assert recall(found, want) >= 0.95
    # every score is the exact inner product of the returned (original) item index
    np.testing.assert_allclose(
        scores, np.einsum("nd,nkd->nk", queries, items[found]), rtol=1e-4, atol=1e-5
    )
    assert (np.diff(scores, axis=1) <= 0).all()
    # skipping the graphs whose norms cannot reach a query's top 100 loses nothing: the
    # same lists as searching every graph (FAISS's merge of all of them)
    all_scores, all_items = ranged.index.search(queries, 100)
    np.testing.assert_array_equal(found, all_items)
    np.testing.assert_allclose(scores, all_scores, rtol=1e-6)
    assert ranged.last_graphs_per_query > 4  # norms of sigma 0.3: little to skip
    # widely spread norms: most queries' top 100 fill up from the large-norm graphs
    spread = items * rng.lognormal(0.0, 1.0, len(items)).astype(np.float32)[:, None]
    wide = ItemIndex.build(spread, IndexConfig(kind="hnsw"))
    found, scores = wide.search(queries, 100)
    assert wide.last_graphs_per_query < 4
    all_scores, all_items = wide.index.search(queries, 100)
    np.testing.assert_array_equal(found, all_items)
    ranged.set_search_params(ef_search=40)
    assert {g.hnsw.efSearch for g in _graphs(ranged.index)} == {40}


def test_hnsw_exclusion_and_round_trip_of_its_graphs(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    items = clustered(rng, 2000, 8, 5)
    queries = clustered(rng, 4, 8, 5)
    index = ItemIndex.build(items, IndexConfig(kind="hnsw", hnsw_norm_ranges=3))
    top, _ = index.search(queries, 10)
    exclude = sp.csr_matrix(
        (np.ones(12), (np.repeat(np.arange(4), 3), top[:, :3].ravel())), (4, 2000)
    )
    found, _ = index.search(queries, 10, exclude=exclude)
    for r in range(4):
        assert not set(found[r]) & set(top[r, :3])
        assert found[r, :7].tolist() == top[r, 3:].tolist()
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["files"] == ["index.faiss", "index.1.faiss", "index.2.faiss"]
    back = ItemIndex.load(tmp_path / "ix")
    assert back.kind == "hnsw" and back.config.hnsw_norm_ranges == 3
    for a, b in zip(index.search(queries, 10), back.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "ix" / "index.2.faiss").unlink()
    with pytest.raises(ArtifactError, match="cannot read index"):
        ItemIndex.load(tmp_path / "ix")
    meta["files"] = ["index.faiss", "../elsewhere.faiss"]
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="bad index files"):
        ItemIndex.load(tmp_path / "ix")


def test_single_graph_index_of_the_earlier_layout_loads(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    items = clustered(rng, 500, 8, 5)
    index = ItemIndex.build(items, IndexConfig(kind="hnsw", hnsw_norm_ranges=1))
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    del meta["files"], meta["config"]["hnsw_norm_ranges"]  # as written before norm ranges
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    back = ItemIndex.load(tmp_path / "ix")
    assert back.config.hnsw_norm_ranges == 1 and len(_graphs(back.index)) == 1
    q = items[:3]
    for a, b in zip(index.search(q, 5), back.search(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_exclusion_leaves_k_eligible_items(kind: str, rng: np.random.Generator) -> None:
    items = clustered(rng, 400, 8, 4)
    queries = clustered(rng, 3, 8, 4)
    index = ItemIndex.build(items, IndexConfig(kind=kind, nlist=4, nprobe=4))
    top, _ = index.search(queries, 10)
    exclude = sp.csr_matrix(
        (np.ones(15), (np.repeat([0, 1, 2], 5), top[:, :5].ravel())), shape=(3, 400)
    )
    found, scores = index.search(queries, 10, exclude=exclude)
    assert (found >= 0).all() and np.isfinite(scores).all()
    for r in range(3):
        assert not set(found[r]) & set(top[r, :5])
        assert found[r, :5].tolist() == top[r, 5:].tolist()


def test_save_load_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    items = clustered(rng, 1000, 8, 5)
    queries = clustered(rng, 5, 8, 5)
    index = ItemIndex.build(items, IndexConfig(kind="ivf", nlist=16, nprobe=3))
    index.save(tmp_path / "ix")
    back = ItemIndex.load(tmp_path / "ix")
    assert back.kind == "ivf" and back.index.nprobe == 3
    for a, b in zip(index.search(queries, 7), back.search(queries, 7), strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "ix" / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(ArtifactError, match="cannot read index"):
        ItemIndex.load(tmp_path / "ix")


def test_bad_inputs_are_refused(rng: np.random.Generator) -> None:
    with pytest.raises(DataError, match="NaN or inf"):
        ItemIndex.build(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(DataError, match="expected"):
        ItemIndex.build(np.zeros((0, 4), np.float32))
    with pytest.raises(ConfigError, match="nlist=50 exceeds the 10 items"):
        ItemIndex.build(np.ones((10, 2), np.float32), IndexConfig(kind="ivf", nlist=50))
    index = ItemIndex.build(clustered(rng, 20, 4, 2))
    with pytest.raises(DataError, match="dim 4"):
        index.search(np.ones((1, 3), np.float32), 2)
    with pytest.raises(ConfigError, match="k must be >= 1"):
        index.search(np.ones((1, 4), np.float32), 0)
    with pytest.raises(DataError, match="exclude has shape"):
        index.search(np.ones((1, 4), np.float32), 2, exclude=sp.csr_matrix((2, 20)))
