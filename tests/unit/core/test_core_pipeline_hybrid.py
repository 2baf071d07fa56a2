"""The two-stage pipeline: one artifact with components, retrieval and the hybrid ranker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.config import RecsysConfig, load_config
from recsys.errors import ArtifactError, ConfigError, DataError
from recsys.pipeline import BLEND, HYBRID, RECOMMENDATION_COLUMNS, Pipeline
from recsys.testing.datasets import block_frame


def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Block interactions (string ids, ratings, timestamps), items with text, users."""
    inter = block_frame(n_blocks=3, users_per_block=12, items_per_block=10, density=0.6, noise=0.2)
    items = pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(30)] + ["i999"]})
    block = [i // 10 for i in range(30)] + [1]
    items["title"] = [f"film of block {b} number {i}" for i, b in enumerate(block)]
    items["genres"] = [f"g{b}" for b in block]
    items["text"] = [f"story block{b} words{b} tale{b}" for b in block]
    users = pd.DataFrame({"user_id": sorted(inter["user_id"].unique())})
    users["age"] = np.arange(len(users)) % 40 + 18
    return inter, items, users


def small_config(**pipeline: Any) -> RecsysConfig:
    return load_config(
        pipeline={
            "retrievers": ["itemknn", "als", "doc2vec", "popular"],
            "rankers": [],
            "candidates": 20,
            **pipeline,
        },
        ranker={"max_iter": 30, "min_samples_leaf": 10},
        models={
            "als": {"embedding_dim": 8, "epochs": 4, "num_threads": 1},
            "doc2vec": {"embedding_dim": 8, "epochs": 20, "min_count": 1},
        },
    )


@pytest.fixture(scope="module")
def fitted() -> Pipeline:
    inter, items, users = frames()
    return Pipeline.fit(inter, items=items, users=users, config=small_config(), show_progress=False)


@pytest.fixture(scope="module")
def artifact(fitted: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fitted.save(tmp_path_factory.mktemp("pipe") / "artifact")


def test_the_hybrid_is_the_primary_component(fitted: Pipeline) -> None:
    assert fitted.components[0] == HYBRID == fitted.primary
    assert fitted.components[1:] == ["itemknn", "als", "doc2vec", "popular"]
    ranker = fitted.manifest["metrics"]["ranker"]
    assert ranker["learner"] == "hgb" and "holdout_blend_ndcg@10" in ranker


def test_recommend_frame_carries_per_item_sources(fitted: Pipeline) -> None:
    recs = fitted.recommend(["u00", "u20", "nobody"], k=5)
    assert list(recs.columns) == RECOMMENDATION_COLUMNS
    assert recs.groupby("user_id", sort=False).size().tolist() == [5, 5, 5]
    sources = set(fitted.hybrid.generator.source_names)
    known = recs[recs["user_id"] != "nobody"]
    assert all(set(s.split("|")) <= sources for s in known["sources"])
    assert (recs.loc[recs["user_id"] == "nobody", "sources"] == "popular").all()
    one = fitted.recommend(["u00"], k=5, model="itemknn")
    assert (one["sources"] == "itemknn").all()
    blend = fitted.recommend(["u00"], k=5, model=BLEND)
    assert len(blend) == 5
    with pytest.raises(ConfigError, match="blend"):
        fitted.recommend(["u00"], k=5, model="nope")


def test_index_and_list_paths_agree(fitted: Pipeline) -> None:
    idx = fitted.user_map.to_index(["u00", "u05", "u33"])
    items, scores = fitted.recommend_indices(idx, 4)
    items2, scores2, sources = fitted.recommend_lists(idx, 4)
    np.testing.assert_array_equal(items, items2)
    np.testing.assert_array_equal(scores, scores2)
    frame = fitted.recommend(["u00", "u05", "u33"], k=4)
    assert frame["item_id"].tolist() == fitted.item_map.to_ids(items.ravel()).tolist()
    assert sources.shape == (3, 4)


def test_cold_start_and_cold_items(fitted: Pipeline) -> None:
    # a new user bringing recent items gets neighbours of those items, not popularity
    ids, _, src = fitted.recommend_for_history([["i010", "i011", "i012"], []], k=4)
    assert src.tolist() == [HYBRID, "popular"]
    assert sum(i.startswith("i01") for i in ids[0]) >= 3
    # item i999 has text but no interactions: the content source can still propose it
    doc = fitted.hybrid.components["doc2vec"]
    assert np.abs(doc.item_factors[fitted.item_map.to_index(["i999"])[0]]).sum() > 0
    q = fitted.hybrid.queries_for_histories(fitted._histories([["i010", "i011"]], ordered=True))
    cands = fitted.hybrid.generator.generate(q, limit=200)
    assert fitted.item_map.to_index(["i999"])[0] in cands.items


def test_exclude_items_on_fold_in(fitted: Pipeline) -> None:
    ids, _, _ = fitted.recommend_for_history([["i010", "i011"]], k=5)
    again, _, _ = fitted.recommend_for_history([["i010", "i011"]], k=5, exclude_items=[[ids[0][0]]])
    assert ids[0][0] not in again[0].tolist()


def test_explain_and_score_pairs(fitted: Pipeline) -> None:
    frame = fitted.explain(["u00"], k=3)
    assert list(frame.columns[:5]) == RECOMMENDATION_COLUMNS
    assert {"blend", "score:itemknn", "score:als", "rank@covisit", "item_count"} <= set(frame)
    scores = fitted.score_pairs(["u00", "u00", "nobody"], ["i001", "i999", "i001"])
    assert list(scores.columns) == ["user_id", "item_id", *fitted.components]
    assert scores.loc[2, fitted.components].isna().all()  # unknown user
    assert np.isfinite(scores.loc[0, ["itemknn", "als", HYBRID]].to_numpy(float)).all()
    with pytest.raises(DataError, match="one of each per pair"):
        fitted.score_pairs(["u00"], ["i001", "i002"])


def test_evaluate_has_every_component_the_hybrid_and_the_blend(fitted: Pipeline) -> None:
    inter, _, _ = frames()
    test = inter.groupby("user_id").tail(1)
    table = fitted.evaluate(test, ks=(5,))
    assert table.index.tolist() == [HYBRID, BLEND, "itemknn", "als", "doc2vec", "popular"]
    assert (table["ndcg@5"] >= 0).all()


def test_save_load_round_trip(fitted: Pipeline, artifact: Path) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    files = manifest["files"]
    assert "ranker/learner.npz" in files and "index/retrieval.json" in files
    assert "index/covisit/covisit.npz" in files and "index/als/index.faiss" in files
    assert "models/itemknn/state.npz" in files and "features/manifest.json" in files
    assert manifest["metrics"]["ranker"]["learner"] == "hgb"
    back = Pipeline.load(artifact)
    assert back.components == fitted.components
    users = ["u00", "u07", "u30", "nobody"]
    pd.testing.assert_frame_equal(back.recommend(users, k=6), fitted.recommend(users, k=6))


def test_the_hybrid_answers_the_model_protocols(fitted: Pipeline, artifact: Path) -> None:
    from recsys.protocols import FoldIn, Recommender
    from recsys.ranking import HybridRecommender, Ranker
    from recsys.retrieval import Retriever

    hybrid = HybridRecommender.load(artifact)
    assert isinstance(hybrid, Recommender) and isinstance(hybrid, FoldIn)
    assert isinstance(hybrid.generator, Retriever) and isinstance(hybrid.ranker, Ranker)
    users = fitted.user_map.to_index(["u01", "u02"])
    np.testing.assert_array_equal(
        hybrid.recommend(users, 4)[0], fitted.recommend_indices(users, 4)[0]
    )
    plain = Pipeline.fit(frames()[0], models=["popular"], show_progress=False)
    with pytest.raises(ArtifactError, match="no hybrid ranker"):
        HybridRecommender.load(plain.save(artifact.parent / "plain"))


def test_damaged_ranker_is_refused(artifact: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(artifact, tmp_path / "copy"))
    with open(copy / "ranker" / "learner.npz", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ArtifactError, match=r"ranker/learner.npz"):
        Pipeline.load(copy)


def test_named_models_train_only_those() -> None:
    inter, items, _ = frames()
    pipe = Pipeline.fit(
        inter,
        items=items,
        config=small_config(),
        models=["itemknn", "popular"],
        show_progress=False,
    )
    assert pipe.components == ["itemknn", "popular"] and pipe.hybrid is None
    with_hybrid = Pipeline.fit(
        inter,
        items=items,
        config=small_config(),
        models=[HYBRID, "itemknn"],
        show_progress=False,
    )
    assert with_hybrid.components == [HYBRID, "itemknn", "popular"]


def test_unavailable_default_components_are_skipped_and_recorded() -> None:
    inter, _, _ = frames()
    implicit = inter.drop(columns=["rating"])
    cfg = small_config(rankers=["svdpp"])
    pipe = Pipeline.fit(implicit, config=cfg, show_progress=False)  # no ratings, no items
    skipped = pipe.manifest["skipped_components"]
    assert set(skipped) == {"svdpp", "doc2vec"}
    assert "ratings" in skipped["svdpp"] and "documents" in skipped["doc2vec"]
    assert "svdpp" not in pipe.components and pipe.primary == HYBRID
    # named explicitly, the component's own error surfaces
    with pytest.raises(DataError, match="SVD\\+\\+ needs explicit ratings"):
        Pipeline.fit(implicit, config=cfg, models=["svdpp"], show_progress=False)


def test_default_config_is_the_full_hybrid() -> None:
    cfg = load_config()
    assert cfg.pipeline.hybrid
    assert {"itemknn", "ease", "als", "doc2vec", "popular", "svdpp"} <= set(cfg.components())
    with pytest.raises(ConfigError, match="hybrid = true"):
        load_config(pipeline={"retrievers": ["hybrid"]})


def test_config_sections_of_the_two_stages(tmp_path: Path) -> None:
    import recsys.config

    example = recsys.config.__doc__.split("Example::")[1]
    lines = [line[4:] for line in example.splitlines() if line.startswith("    ")]
    (tmp_path / "c.toml").write_text("\n".join(lines) + "\n")
    cfg = load_config(tmp_path / "c.toml")  # the documented example is a valid file
    assert cfg.retrieval.quotas == {"doc2vec": 30, "covisit": 150}  # added to the defaults
    assert cfg.components() == ["itemknn", "ease", "als", "svdpp", "popular"]
    for section, text, match in (
        ("retrieval", {"index": "annoy"}, "retrieval.index"),
        ("ranker", {"validation_frac": 1.5}, "ranker.validation_frac"),
        ("retrieval", {"quotas": {"covisit": 0}}, "quotas must be >= 1"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config(**{section: text})


def test_a_users_list_does_not_depend_on_the_batch(fitted: Pipeline) -> None:
    # the batch job and the serving warm-up compute lists in blocks of users; every user
    # must get the list a single call gives (sources over-fetch for the longest history)
    users = np.arange(len(fitted.user_map))
    items, scores, sources = fitted.recommend_lists(users, 5)
    for u in users[:: max(1, len(users) // 12)]:
        one_i, one_s, one_src = fitted.recommend_lists([u], 5)
        assert one_i[0].tolist() == items[u].tolist()
        np.testing.assert_allclose(one_s[0], scores[u], rtol=1e-5)
        assert one_src[0].tolist() == sources[u].tolist()


def test_candidates_of_a_row_do_not_depend_on_the_batch(fitted: Pipeline) -> None:
    # every source's list for a row, whatever else is in the batch (popular and the
    # neighbours of recent items over-fetch for the batch's longest history)
    hybrid = fitted.hybrid
    items = list(fitted.item_map.ids)
    histories = [items[:1], items[5:25], items[40:42], items[:30:3]]
    q_all = hybrid.queries_for_histories(fitted._histories(histories, ordered=True))
    for spec in hybrid.generator.specs:
        batch = hybrid.generator._propose(spec, q_all, 5, True)
        for r, h in enumerate(histories):
            q = hybrid.queries_for_histories(fitted._histories([h], ordered=True))
            one = hybrid.generator._propose(spec, q, 5, True)
            mine = [i for i in one.items[0].tolist() if i >= 0]
            assert mine == [i for i in batch.items[r].tolist() if i >= 0], spec.name


def test_ctr_rankers_score_known_and_fold_in_rows(tmp_path: Path) -> None:
    # DeepFM and DIN probabilities are ranker features; DIN also scores fold-in rows
    # (new users with recent items, users with fresh events) from their history
    import scipy.sparse as sp

    inter, items, users = frames()
    small = {"epochs": 2, "embedding_dim": 4, "batch_size": 64, "device": "cpu"}
    cfg = load_config(
        pipeline={"retrievers": ["itemknn", "popular"], "rankers": ["deepfm", "din"]},
        ranker={"max_iter": 30, "min_samples_leaf": 10},
        models={"deepfm": small, "din": {**small, "attention_units": [4]}},
    )
    pipe = Pipeline.fit(inter, items=items, users=users, config=cfg, show_progress=False)
    hybrid = pipe.hybrid
    names = hybrid.ranker.feature_names
    deepfm, din = names.index("score:deepfm"), names.index("score:din")
    q = hybrid.queries_for_users(np.arange(4))
    x = hybrid.ranker.builder.build(hybrid.generator.generate(q), q)
    assert ((x[:, [deepfm, din]] > 0) & (x[:, [deepfm, din]] < 1)).all()
    history = sp.csr_matrix(
        (np.arange(1.0, 5.0), ([0, 0, 0, 0], [0, 1, 2, 3])), shape=(1, hybrid.n_items)
    )
    qf = hybrid.queries_for_histories(history)
    xf = hybrid.ranker.builder.build(hybrid.generator.generate(qf), qf)
    assert ((xf[:, din] > 0) & (xf[:, din] < 1)).all()  # DIN folds the history in
    assert np.isnan(xf[:, deepfm]).all()  # DeepFM has no fold-in: a missing value
    loaded = Pipeline.load(pipe.save(tmp_path / "artifact"))
    for a, b in zip(
        pipe.recommend_for_history_lists([["i000", "i001", "i002"]], 5),
        loaded.recommend_for_history_lists([["i000", "i001", "i002"]], 5),
        strict=True,
    ):
        assert a.tolist() == b.tolist()


# ---------------------------------------------------------------------------- one path (#15)
def test_one_recommend_path_block_equals_single_rows(fitted: Pipeline) -> None:
    """A mixed block (known users, fold-ins, unknown users, exclusions, allow sets, filters)
    gives every row exactly the list it gets alone, and the wrappers agree with it."""
    from recsys.recommend import COLD_START, FOLD_IN, PERSONALIZED, RecommendQueries

    n_items = len(fitted.item_map)
    genre_block = np.zeros(n_items, bool)
    genre_block[:10] = True  # an attribute filter: block 0's items
    queries = RecommendQueries(
        np.array([0, 3, -1, -1, 5, 7, -1], np.int64),
        history=[None, np.array([1, 2]), np.array([11, 12, 13]), None, None, None, np.array([-1])],
        exclude=[None, None, np.array([14]), None, np.array([20, 21]), None, None],
        allow=[None, None, None, None, None, np.arange(0, 30, 2), None],
        blocked=[None, None, None, None, genre_block, None, None],
    )
    out = fitted.recommend_block(queries, 6)
    assert out.items.shape == (7, 6) and out.sources.shape == (7, 6)
    assert out.strategy.tolist() == [
        PERSONALIZED,
        PERSONALIZED,
        FOLD_IN,
        COLD_START,
        PERSONALIZED,
        PERSONALIZED,
        COLD_START,  # an unknown item is no history
    ]
    for r in range(len(queries)):
        one = RecommendQueries(
            queries.user_idx[r : r + 1],
            history=[queries.history[r]] if queries.history else None,
            exclude=[queries.exclude[r]] if queries.exclude else None,
            allow=[queries.allow[r]] if queries.allow else None,
            blocked=[queries.blocked[r]] if queries.blocked else None,
        )
        alone = fitted.recommend_block(one, 6)
        assert alone.items[0].tolist() == out.items[r].tolist()
        assert alone.scores[0].tobytes() == out.scores[r].tobytes()
        assert alone.sources[0].tolist() == out.sources[r].tolist()
    got = out.items[out.items >= 0]
    assert not set(out.items[2].tolist()) & {11, 12, 13, 14}  # history and exclusions left out
    assert not set(out.items[4].tolist()) & ({20, 21} | set(range(10)))  # filter + exclusion
    assert set(out.items[5][out.items[5] >= 0].tolist()) <= set(range(0, 30, 2))  # allow set
    assert len(got) > 0 and out.sources[3][0] == "popular"
    # the wrappers are the same path
    items, scores, sources = fitted.recommend_lists([0, -1], 6)
    assert scores.tobytes() == out.scores[[0, 3]].tobytes()
    assert items.tolist() == out.items[[0, 3]].tolist()
    assert sources.tolist() == out.sources[[0, 3]].tolist()
    ids, _, src = fitted.recommend_for_history_lists(
        [fitted.item_map.to_ids(np.array([11, 12, 13])).tolist()], 6, exclude_items=[["i014"]]
    )
    assert ids[0].tolist() == fitted.item_map.to_ids(out.items[2]).tolist()
    assert src[0].tolist() == out.sources[2].tolist()
