"""The store on the bundled MovieLens 100K: knowledge-graph documents and no leakage."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.features import INTERACTION_VIEW, FeatureStore

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def movielens() -> tuple[object, FeatureStore]:
    data_module = pytest.importorskip("recsys.data")
    data = data_module.load_dataset("ml-100k")
    store = FeatureStore.build(
        data.interactions, data.items, data.users, data.item_relations, show_progress=False
    )
    return data, store


def test_documents_hold_genres_and_kg_relations(movielens: tuple[object, FeatureStore]) -> None:
    data, store = movielens
    docs = store.item_documents().set_index("item_id")["tokens"]
    relations = data.item_relations  # type: ignore[attr-defined]
    first = relations.iloc[0]
    token = f"{first['relation']}:{first['entity']}".lower()
    assert token in docs[first["item_id"]]
    assert any(t.startswith("genre:") for t in docs[first["item_id"]])
    with_kg = {i for i, toks in docs.items() if any(t.startswith("film.") for t in toks)}
    assert len(with_kg) == relations["item_id"].nunique()


def test_sampled_rows_see_only_the_past(movielens: tuple[object, FeatureStore]) -> None:
    data, store = movielens
    log = data.interactions  # type: ignore[attr-defined]
    features = store.offline_features()
    INTERACTION_VIEW.schema.check(features)
    users, t, r = log["user_id"].to_numpy(), log["timestamp"].to_numpy(), log["rating"].to_numpy()
    rows = np.random.default_rng(0).choice(len(log), 200, replace=False)
    seqs = store.sequences(rows)
    for row, seq in zip(rows.tolist(), seqs, strict=True):
        before = (users == users[row]) & (t < t[row])
        assert features["user_count"][row] == before.sum()
        if before.any():
            assert features["user_mean_rating"][row] == pytest.approx(r[before].mean(), rel=1e-5)
        mine = np.flatnonzero(before)
        mine = mine[np.lexsort((mine, t[mine]))][-store.sequence_length :]
        want = store.item_map.to_index(log["item_id"].to_numpy()[mine]).tolist()
        assert seq[seq >= 0].tolist() == want
