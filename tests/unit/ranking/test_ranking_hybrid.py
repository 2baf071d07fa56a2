"""The hybrid recommender: training scheme, both stages, protocol behaviour, persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.config import RecsysConfig, load_config
from recsys.errors import FeatureSchemaError, NotFittedError
from recsys.features import FeatureStore
from recsys.models import get_model_class
from recsys.ranking import FeatureBuilder, HybridRanker, HybridRecommender, label_slice
from recsys.ranking.components import training_frame
from recsys.testing.datasets import block_dataset, block_labels
from recsys.types import IdMap, TrainingData


def config(**ranker: Any) -> RecsysConfig:
    return load_config(
        pipeline={"retrievers": ["itemknn", "als", "popular"], "rankers": [], "candidates": 20},
        retrieval={"recent": ["itemknn"], "recent_items": 4},
        ranker={"max_iter": 40, "min_samples_leaf": 10, **ranker},
        models={"als": {"embedding_dim": 8, "epochs": 5, "num_threads": 1}},
    )


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return block_dataset(n_blocks=3, users_per_block=15, items_per_block=12, density=0.6, noise=0.2)


@pytest.fixture(scope="module")
def hybrid(data: TrainingData) -> HybridRecommender:
    return HybridRecommender(config()).fit(data, show_progress=False)


def test_label_slice_takes_each_users_latest_share() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a"] * 5 + ["b"] * 10 + ["c"],
            "item_id": [0, 1, 2, 3, 4, *range(10), 0],
            "timestamp": [5, 4, 3, 2, 1] + [1] * 9 + [0] + [7],
        }
    )
    data = TrainingData.from_frame(frame)
    mask = label_slice(data, 0.2)
    labelled = frame[mask]
    # a: its earliest-listed row is its latest; b: ties at t=1 broken by item (8, 9 latest
    # among the t=1 rows; item 9 at t=0 is earliest); c: one interaction stays in the fit part
    assert labelled.groupby("user_id")["item_id"].apply(sorted).to_dict() == {
        "a": [0],
        "b": [7, 8],
    }


def test_labels_are_later_than_the_fit_part(data: TrainingData) -> None:
    mask = label_slice(data, 0.2)
    assert data.timestamp is not None
    for u in np.unique(data.user_idx):
        mine = data.user_idx == u
        if (mine & mask).any():
            assert data.timestamp[mine & mask].min() >= data.timestamp[mine & ~mask].max()


def test_fit_records_the_scheme(hybrid: HybridRecommender, data: TrainingData) -> None:
    m = hybrid.training_metrics_
    assert m["learner"] == "hgb" and m["n_training_positives"] > 0
    assert 0 < m["candidate_recall"] <= 1
    assert {"holdout_ndcg@10", "holdout_blend_ndcg@10", "holdout_source:covisit_ndcg@10"} <= set(m)
    # serving components are refitted on all the data, not the fit part
    assert hybrid.components["itemknn"].user_items_.nnz == data.user_items.nnz
    assert hybrid.generator.source_names == (
        "itemknn",
        "als",
        "popular",
        "itemknn@recent",
        "covisit",
    )


def test_recommendations_are_unseen_in_block_and_sourced(
    hybrid: HybridRecommender, data: TrainingData
) -> None:
    users = np.arange(data.n_users)
    items, scores, sources = hybrid.recommend_lists(users, 5)
    assert items.shape == (data.n_users, 5) and (items >= 0).all()
    assert not np.asarray(data.user_items[np.repeat(users, 5), items.ravel()]).any()
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # best first
    known = set(hybrid.generator.source_names)
    assert all(set(s.split("|")) <= known for s in sources.ravel())
    user_block, item_block = block_labels(data)
    assert (item_block[items[:, :3]] == user_block[:, None]).mean() > 0.7


def test_batch_equals_single_and_score_agrees(hybrid: HybridRecommender) -> None:
    items, scores = hybrid.recommend(np.arange(12), 5)
    for u in (0, 7, 11):
        one_i, one_s = hybrid.recommend([u], 5)
        np.testing.assert_array_equal(one_i[0], items[u])
        np.testing.assert_allclose(one_s[0], scores[u], rtol=1e-6)
        np.testing.assert_allclose(hybrid.score(np.full(5, u), items[u]), scores[u], rtol=1e-5)
    assert np.isnan(hybrid.score([-1, 0], [0, 10_000])).all()


def test_unknown_users_get_popularity(hybrid: HybridRecommender) -> None:
    items, _, sources = hybrid.recommend_lists([-1, 10_000], 4)
    pop_items, _ = hybrid.components["popular"].recommend([-1], 4)
    np.testing.assert_array_equal(items, np.vstack([pop_items, pop_items]))
    assert set(sources.ravel()) == {"popular"}


def test_fold_in_uses_the_history_order(hybrid: HybridRecommender, data: TrainingData) -> None:
    _, item_block = block_labels(data)
    block1 = np.flatnonzero(item_block == 1)[:4]
    h = sp.csr_matrix(
        (np.arange(1, 5, dtype=np.float32), (np.zeros(4, int), block1)), shape=(1, data.n_items)
    )
    items, _ = hybrid.recommend_for_history(sp.vstack([h, sp.csr_matrix((1, data.n_items))]), 4)
    assert not set(items[0]) & set(block1)
    assert (item_block[items[0]] == 1).mean() >= 0.75
    q = hybrid.queries_for_histories(h)
    assert q.recent.toarray()[0, block1[-1]] == 1.0  # the last item is the most recent


def test_blend_baseline_and_explain(hybrid: HybridRecommender) -> None:
    blend_items, _, _ = hybrid.recommend_lists(np.arange(5), 5, learned=False)
    assert (blend_items >= 0).all()
    out = hybrid.explain([0, -1], 3)
    names = out["feature_names"]
    assert out["features"].shape == (2, 3, len(names))
    col = names.index("score:itemknn")
    want = hybrid.components["itemknn"].score(np.zeros(3, int), out["items"][0])
    np.testing.assert_allclose(out["features"][0, :, col], want, rtol=1e-6)
    assert np.isnan(out["features"][1]).all()  # the cold-start row has no features


def test_logistic_and_blend_learners(data: TrainingData) -> None:
    lr = HybridRecommender(config(learner="logistic")).fit(data, show_progress=False)
    assert lr.ranker.kind == "logistic"
    blend = HybridRecommender(config(learner="blend")).fit(data, show_progress=False)
    assert blend.ranker.kind == "blend"
    a, _, _ = blend.recommend_lists(np.arange(4), 5)
    b, _, _ = blend.recommend_lists(np.arange(4), 5, learned=False)
    np.testing.assert_array_equal(a, b)


def test_one_class_training_falls_back_to_the_blend(caplog: pytest.LogCaptureFixture) -> None:
    x = np.zeros((10, 2), np.float32)
    with caplog.at_level("WARNING"):
        assert HybridRanker.fit_learner(config().ranker, x, np.zeros(10, bool), 0) is None
    assert "one class only" in caplog.text


def test_save_and_load_give_the_same_answers(
    hybrid: HybridRecommender, data: TrainingData, tmp_path: Path
) -> None:
    hybrid.save(tmp_path)
    comps = {}
    for name, model in hybrid.components.items():
        model.save(tmp_path / "models" / name)
        comps[name] = get_model_class(name).load(tmp_path / "models" / name)
    back = HybridRecommender.load_from(
        tmp_path,
        hybrid.recsys_config,
        comps,
        hybrid.store_,
        data.user_items,
        data.user_map,
        data.item_map,
    )
    a = hybrid.recommend_lists(np.arange(10), 6)
    b = back.recommend_lists(np.arange(10), 6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    assert back.training_metrics_["learner"] == "hgb"
    # a feature store without the item genres makes other features: refused by name
    bare = FeatureStore.build(training_frame(data), show_progress=False)
    with pytest.raises(FeatureSchemaError, match="genre_similarity"):
        HybridRecommender.load_from(
            tmp_path,
            hybrid.recsys_config,
            comps,
            bare,
            data.user_items,
            data.user_map,
            data.item_map,
        )


def test_unfitted_is_an_error() -> None:
    with pytest.raises(NotFittedError):
        HybridRecommender(config()).recommend([0], 3)
    assert isinstance(
        FeatureBuilder({}, [], [], None, IdMap(["u"]), IdMap(["i"]), ("a",)).names, list
    )
