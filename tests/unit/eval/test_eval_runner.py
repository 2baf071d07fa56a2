"""Evaluation runners (models, recommendation files) and the text table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import ConfigError, DataError, DataWarning
from recsys.eval import (
    evaluate_model,
    evaluate_models,
    evaluate_recommendations,
    format_table,
    genre_vectors,
    sampled_topn_metrics,
)
from recsys.eval.runner import _rank_to_item, _sample_ranks
from recsys.models import ItemKNN, Popular
from recsys.types import IdMap, TrainingData

L2 = math.log2


# ----------------------------------------------------------------- recommendation files
def _recs(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rank"])


def test_string_ids_are_compared_verbatim() -> None:
    test = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["007", "x"]})
    # "7" is not "007": the hit is at rank 2 only
    recs = _recs([("u1", "7", 1), ("u1", "007", 2)])
    m = evaluate_recommendations(recs, test, ks=2)
    assert m["precision@2"] == pytest.approx(0.5)
    assert m["mrr@2"] == pytest.approx(0.5)
    # ideal list of 2 hits: DCG 1/log2(3), IDCG 1 + 1/log2(3)
    assert m["ndcg@2"] == pytest.approx((1 / L2(3)) / (1 + 1 / L2(3)))
    # catalogue: "7", "007", "x"
    assert m["coverage@2"] == pytest.approx(2 / 3)


def test_ranks_order_the_list_and_missing_users_score_zero() -> None:
    test = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 12]})
    # user 1's rows are shuffled: ranks 3, 1, 2 -> list 13, 11, 10 (ranks need not be 1..k)
    recs = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 9],
            "item_id": [10, 13, 11, 14, 10],
            "rank": [30, 10, 20, 1, 1],
            "score": [0.1, 0.9, 0.5, 1.0, 1.0],
        }
    )
    m = evaluate_recommendations(recs, test, ks=(1, 3))
    # user 1: hits at ranks 2, 3 of 2 test items; user 2: miss; user 3: no recs (all misses)
    # user 9 has no test items and is ignored
    assert m["n_users"] == 3
    assert m["n_users_without_recs"] == 1
    assert m["precision@1"] == 0.0
    assert m["recall@3"] == pytest.approx(1 / 3)
    assert m["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 2 / 3)
    assert m["mrr@3"] == pytest.approx(0.5 / 3)


def test_train_and_catalogue_from_files() -> None:
    train = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["i1", "i2", "i1", "i1"]})
    test = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["i3", "i2"]})
    recs = _recs([("a", "i3", 1), ("a", "i4", 2), ("b", "i2", 1), ("b", "i3", 2)])
    m = evaluate_recommendations(recs, test, train, ks=2)
    # 3 train users; counts i1 3, i2 1, i3 0 (-> 1), i4 0 (-> 1)
    # slots i3, i4, i2, i3: novelty -log2(1/3) each; popularity (0 + 0 + 1 + 0) / 4
    assert m["novelty@2"] == pytest.approx(L2(3))
    assert m["avg_popularity@2"] == pytest.approx(0.25)
    # catalogue = train ∪ test ∪ recs = i1..i4; recommended i2, i3, i4
    assert m["coverage@2"] == pytest.approx(3 / 4)
    # diversity over train columns: i3, i4 have no train users (distance 1 to anything)
    assert m["diversity@2"] == pytest.approx(1.0)

    items = pd.DataFrame(
        {"item_id": ["i1", "i2", "i3", "i4", "i5"], "genres": ["A|B", "A", "B", None, "A"]}
    )
    m = evaluate_recommendations(recs, test, train, ks=2, items=items)
    assert m["coverage@2"] == pytest.approx(3 / 5)
    # genre cosine: (i3 B, i4 none) -> distance 1; (i2 A, i3 B) -> distance 1
    assert m["diversity@2"] == pytest.approx(1.0)
    recs_same_genre = _recs([("a", "i2", 1), ("a", "i5", 2)])
    m = evaluate_recommendations(recs_same_genre, test, train, ks=2, items=items)
    assert m["diversity@2"] == pytest.approx(0.0)


def test_items_outside_the_catalogue_warn_and_do_not_count() -> None:
    test = pd.DataFrame({"user_id": ["a"], "item_id": ["i1"]})
    items = pd.DataFrame({"item_id": ["i1", "i2"]})
    with pytest.warns(DataWarning, match="not in items"):
        recs = _recs([("a", "zz", 1), ("a", "i1", 2)])
        m = evaluate_recommendations(recs, test, ks=2, items=items)
    assert m["coverage@2"] == pytest.approx(1 / 2)


def test_ids_of_different_types_follow_the_one_id_rule() -> None:
    # issue 14: 7 finds "7" and "196" finds 196, but "007" never becomes 7
    test = pd.DataFrame({"user_id": ["a"], "item_id": ["7"]})
    recs = pd.DataFrame({"user_id": ["a"], "item_id": [7], "rank": [1]})
    assert evaluate_recommendations(recs, test, ks=1)["hit_rate@1"] == 1.0
    test = pd.DataFrame({"user_id": [196, 196], "item_id": [7, 8]})
    recs = _recs([("196", "007", 1), ("196", "8", 2)])
    m = evaluate_recommendations(recs, test, ks=2)
    assert m["hit_rate@2"] == 1.0 and m["precision@2"] == pytest.approx(0.5)
    assert m["n_users_without_recs"] == 0


def test_recs_without_any_test_user_warn() -> None:
    test = pd.DataFrame({"user_id": [7], "item_id": ["x"]})
    recs = _recs([("007", "x", 1)])
    with pytest.warns(DataWarning, match=r"recs: none of the 1 user_id values.*'007'"):
        m = evaluate_recommendations(recs, test, ks=1)
    assert m["hit_rate@1"] == 0.0


@pytest.mark.parametrize(
    ("recs", "match"),
    [
        (pd.DataFrame({"user_id": ["a"], "item_id": ["x"]}), r"missing column.*'rank'"),
        (pd.DataFrame({"user_id": ["a"], "rank": [1]}), r"missing column.*'item_id'"),
        (_recs([("a", "x", 1), ("a", "y", 1)]), "same 'rank'"),
        (_recs([("a", "x", 1), ("a", "x", 2)]), "same 'item_id'"),
        (pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "rank": ["first"]}), "'rank' must be"),
        (pd.DataFrame({"user_id": [None], "item_id": ["x"], "rank": [1]}), "missing 'user_id'"),
    ],
)
def test_malformed_recs_are_rejected(recs: pd.DataFrame, match: str) -> None:
    test = pd.DataFrame({"user_id": ["a"], "item_id": ["x"]})
    with pytest.raises(DataError, match=match):
        evaluate_recommendations(recs, test)


def test_malformed_test_and_items_are_rejected() -> None:
    recs = _recs([("a", "x", 1)])
    with pytest.raises(DataError, match=r"test is missing column.*'user_id'"):
        evaluate_recommendations(recs, pd.DataFrame({"item_id": ["x"]}))
    with pytest.raises(DataError, match="items lists 1 item_id values twice"):
        evaluate_recommendations(
            recs,
            pd.DataFrame({"user_id": ["a"], "item_id": ["x"]}),
            items=pd.DataFrame({"item_id": ["x", "x"]}),
        )


def test_genre_vectors() -> None:
    items = pd.DataFrame({"item_id": [2, 1, 3], "genres": ["Drama| Comedy", "Drama", None]})
    v = genre_vectors(items, IdMap([1, 2, 3, 4]))
    # genres in first-seen order: Drama, Comedy
    assert v.toarray().tolist() == [[1, 0], [1, 1], [0, 0], [0, 0]]


# ----------------------------------------------------------------- models
@pytest.fixture(scope="module")
def tiny() -> tuple[TrainingData, pd.DataFrame, Popular]:
    # popularity: i1 3 users; i2, i3, i4 one each (ties -> lower index first)
    train = pd.DataFrame(
        {"user_id": ["a", "a", "b", "b", "c", "d"], "item_id": ["i1", "i2", "i1", "i3", "i1", "i4"]}
    )
    # user e is unknown to train; item i9 is unknown to train
    test = pd.DataFrame({"user_id": ["a", "b", "b", "e"], "item_id": ["i3", "i2", "i9", "i1"]})
    data = TrainingData.from_frame(train)
    return data, test, Popular().fit(data, show_progress=False)


def test_evaluate_model_hand_computed(tiny: tuple[TrainingData, pd.DataFrame, Popular]) -> None:
    data, test, model = tiny
    m = evaluate_model(model, data, test, ks=2)
    # a (seen i1, i2): [i3, i4] hit@1; b (seen i1, i3): [i2, i4] hit@1, |T|=2 (i9 unreachable)
    # e (cold start): [i1, i2] hit@1
    assert m["n_users"] == 3
    assert m["n_cold_start_users"] == 1
    assert m["n_unknown_test_items"] == 1
    assert m["precision@2"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / (1 + 1 / L2(3)) + 1) / 3)
    assert m["mrr@2"] == 1.0
    # catalogue: 4 train items + i9; recommended i1..i4
    assert m["coverage@2"] == pytest.approx(4 / 5)
    # 4 train users; slots i3 i4 | i2 i4 | i1 i2 -> five at -log2(1/4) = 2, one at -log2(3/4)
    assert m["novelty@2"] == pytest.approx((5 * 2 - L2(3 / 4)) / 6)
    assert m["avg_popularity@2"] == pytest.approx(8 / 6)


def test_evaluate_model_matches_evaluate_recommendations(
    tiny: tuple[TrainingData, pd.DataFrame, Popular],
) -> None:
    data, test, model = tiny
    users = IdMap.from_values(test["user_id"].to_numpy())
    items, _ = model.recommend(data.user_map.to_index(users.ids), 3)
    rows = [
        (users.ids[u], data.item_map.ids[i], r + 1)
        for u in range(len(users))
        for r, i in enumerate(items[u])
        if i >= 0
    ]
    train_frame = pd.DataFrame(
        {
            "user_id": data.user_map.to_ids(data.user_idx),
            "item_id": data.item_map.to_ids(data.item_idx),
        }
    )
    from_file = evaluate_recommendations(_recs(rows), test, train_frame, ks=(1, 3))
    in_memory = evaluate_model(model, data, test, ks=(1, 3))
    shared = from_file.keys() & in_memory.keys()
    assert {"ndcg@3", "coverage@3", "novelty@3", "diversity@3", "n_users"} <= shared
    for key in shared:
        assert in_memory[key] == pytest.approx(from_file[key], abs=1e-12, nan_ok=True), key


def test_batch_size_does_not_change_results(
    tiny: tuple[TrainingData, pd.DataFrame, Popular],
) -> None:
    data, test, model = tiny
    assert evaluate_model(model, data, test, ks=2, batch_size=1) == evaluate_model(
        model, data, test, ks=2
    )


def test_evaluate_models_and_table(tiny: tuple[TrainingData, pd.DataFrame, Popular]) -> None:
    data, test, model = tiny
    models = {"popular": model, "itemknn": ItemKNN().fit(data, show_progress=False)}
    frame = evaluate_models(models, data, test, ks=2, diversity=False)
    assert list(frame.index) == ["popular", "itemknn"]
    assert frame.index.name == "model"
    single = evaluate_model(model, data, test, 2)
    assert frame.loc["popular", "ndcg@2"] == pytest.approx(single["ndcg@2"])
    text = format_table(frame, ["precision@2", "n_users"])
    assert text.splitlines() == [
        "model    precision@2  n_users",
        "popular       0.5000        3",
        f"itemknn  {frame.loc['itemknn', 'precision@2']:11.4f}        3",
    ]


# ----------------------------------------------------------------- sampled metrics
@pytest.fixture(scope="module")
def distinct_popularity() -> tuple[TrainingData, pd.DataFrame, Popular]:
    # item j (0..5) is used by 6 - j users, so popularity scores are all distinct
    rows = [(f"u{u}", f"i{j}") for j in range(6) for u in range(6 - j)]
    train = pd.DataFrame(rows, columns=["user_id", "item_id"])
    test = pd.DataFrame({"user_id": ["u3", "u3", "u5", "new"], "item_id": ["i5", "i4", "i1", "i2"]})
    data = TrainingData.from_frame(train)
    return data, test, Popular().fit(data, show_progress=False)


def test_sampled_keys_are_labelled_and_full_ranking_is_default(
    distinct_popularity: tuple[TrainingData, pd.DataFrame, Popular],
) -> None:
    data, test, model = distinct_popularity
    full = evaluate_model(model, data, test, ks=(1, 2))
    assert not any(key.startswith("sampled") for key in full)
    both = evaluate_model(model, data, test, ks=(1, 2), sampled_negatives=2, seed=3)
    sampled = {k: v for k, v in both.items() if k.startswith("sampled2_")}
    assert set(sampled) == {
        f"sampled2_{name}@{k}"
        for k in (1, 2)
        for name in ("precision", "recall", "f1", "ndcg", "map", "hit_rate", "mrr")
    }
    again = sampled_topn_metrics(model, data, test, (1, 2), n_negatives=2, seed=3)
    assert again == sampled


def test_sampling_every_negative_equals_full_ranking(
    distinct_popularity: tuple[TrainingData, pd.DataFrame, Popular],
) -> None:
    data, test, model = distinct_popularity
    # with more negatives than items, every unseen item is a candidate: the full ranking
    # (the cold-start user is left out: its scores are NaN, so its order is random)
    known = test[test["user_id"] != "new"]
    full = evaluate_model(model, data, known, ks=(1, 3))
    sampled = sampled_topn_metrics(model, data, known, (1, 3), n_negatives=50)
    for key, value in sampled.items():
        assert value == pytest.approx(full[key.removeprefix("sampled50_")], abs=1e-12), key


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20))
def test_sampled_ranks_are_distinct_and_in_range(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    eligible = rng.integers(0, 6 * n, size=12)
    ranks = _sample_ranks(eligible, n, rng)
    assert ranks.shape == (12, n)
    for row, e in zip(ranks, eligible, strict=True):
        taken = row[row >= 0]
        assert len(taken) == min(n, e)
        assert len(np.unique(taken)) == len(taken)
        assert taken.size == 0 or (taken.min() >= 0 and taken.max() < e)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_items=st.integers(1, 30))
def test_rank_to_item_enumerates_the_complement(seed: int, n_items: int) -> None:
    rng = np.random.default_rng(seed)
    forbidden = sp.csr_matrix(rng.random((5, n_items)) < 0.4, dtype=float)
    forbidden.sort_indices()
    eligible = n_items - np.diff(forbidden.indptr)
    ranks = np.where(np.arange(n_items)[None, :] < eligible[:, None], np.arange(n_items), -1)
    items = _rank_to_item(forbidden, ranks)
    for u in range(5):
        allowed = np.setdiff1d(np.arange(n_items), forbidden[u].indices)
        assert items[u][items[u] >= 0].tolist() == allowed.tolist()


# ----------------------------------------------------------------- table
def test_format_table_from_dicts() -> None:
    results = {
        "popular": {"ndcg@10": 0.11111, "recall@10": 0.05932, "n_users": 943},
        "bpr": {"ndcg@10": 0.15849, "diversity@10": float("nan"), "n_users": 943},
    }
    assert format_table(results) == "\n".join(
        [
            "model    ndcg@10  recall@10  n_users  diversity@10",
            "popular   0.1111     0.0593      943             -",
            "bpr       0.1585          -      943             -",
        ]
    )
    assert format_table(results, ["recall@10"], digits=2).splitlines()[1] == "popular       0.06"
    with pytest.raises(DataError, match="no result has metric"):
        format_table(results, ["auc"])


def test_bad_runner_options_are_rejected(
    tiny: tuple[TrainingData, pd.DataFrame, Popular],
) -> None:
    data, test, model = tiny
    with pytest.raises(ConfigError, match="sampled_negatives must be a positive integer"):
        evaluate_model(model, data, test, sampled_negatives=0)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        evaluate_model(model, data, test, batch_size=0)
    with pytest.raises(ConfigError, match="models is empty"):
        evaluate_models({}, data, test)
    with pytest.raises(DataError, match="test is empty"):
        evaluate_model(model, data, test.iloc[:0])
