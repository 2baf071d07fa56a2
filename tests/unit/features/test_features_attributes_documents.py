"""Attribute encoding, item documents with knowledge-graph tokens, and vocabularies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.errors import DataError, FeatureSchemaError
from recsys.features import FeatureStore, tokenize
from recsys.types import TrainingData

INTERACTIONS = pd.DataFrame(
    {
        "user_id": ["u2", "u1", "u2"],
        "item_id": [20, 10, 30],
        "rating": np.array([3, 4, 5], np.float32),
        "timestamp": np.array([1, 2, 3], np.int64),
    }
)
ITEMS = pd.DataFrame(
    {
        "item_id": [10, 20, 30, 40],
        "title": ["Toy Story (1995)", "GoldenEye", None, "Heat"],
        "genres": ["Animation|Children's|Comedy", "Action|Sci-Fi", "Film Noir", None],
        "text": ["Woody and Buzz.", None, "a dark city", ""],
        "year": [1995, 1995, None, 1995],
        "studio": ["pixar", None, "rko", "wb"],
    }
)
USERS = pd.DataFrame(
    {"user_id": ["u1", "u2", "u9"], "age": [24, 53, 30], "occupation": ["writer", "tech", "x"]}
)
RELATIONS = pd.DataFrame(
    {
        "item_id": [10, 10, 10, 99],
        "relation": ["film.film.directed_by", "film.film.actor", "Film.Film.Genre", "x"],
        "entity": ["m.0bxtg", "m.02vxxgs", "M.0Hcr", "y"],
    }
)


@pytest.fixture(scope="module")
def store() -> FeatureStore:
    return FeatureStore.build(INTERACTIONS, ITEMS, USERS, RELATIONS, show_progress=False)


def test_item_map_includes_catalogue_and_matches_training_data(store: FeatureStore) -> None:
    assert store.item_map.ids.tolist() == [10, 20, 30, 40]
    data = TrainingData.from_frame(INTERACTIONS, items=ITEMS)
    assert store.item_map == data.item_map and store.user_map == data.user_map
    np.testing.assert_array_equal(store.offline_features()["item_idx"], data.item_idx)
    np.testing.assert_array_equal(store.offline_features()["user_idx"], data.user_idx)


def test_item_documents_hold_title_genre_text_and_kg_tokens(store: FeatureStore) -> None:
    docs = store.item_documents()
    assert docs["item_id"].tolist() == [10, 20, 30, 40]
    assert docs["tokens"][0] == [
        "toy", "story", "1995",
        "genre:animation", "genre:children's", "genre:comedy",
        "woody", "and", "buzz",
        "film.film.directed_by:m.0bxtg", "film.film.actor:m.02vxxgs", "film.film.genre:m.0hcr",
    ]  # fmt: skip
    assert docs["tokens"][1] == ["goldeneye", "genre:action", "genre:sci-fi"]
    assert docs["tokens"][2] == ["genre:film_noir", "a", "dark", "city"]
    assert docs["tokens"][3] == ["heat"]
    assert tokenize(None) == [] and tokenize("Él, ÇA!") == ["él", "ça"]


def test_categoricals_reserve_zero_and_numbers_are_float32(store: FeatureStore) -> None:
    users = store.user_attributes(["u1", "u2", "stranger"])
    assert users["user_id"].tolist() == ["u1", "u2", "stranger"]
    assert users["user_age"].dtype == np.float32
    np.testing.assert_array_equal(users["user_age"], [24.0, 53.0, np.nan])
    # sorted values of the users in the vocabulary (u9 has no interactions): tech=1, writer=2
    assert store.vocabularies["user_occupation"] == ["tech", "writer"]
    assert users["user_occupation"].tolist() == [2, 1, 0]
    items = store.item_attributes()
    assert items["item_studio"].tolist() == [1, 0, 2, 3]  # pixar, missing, rko, wb
    assert items["item_year"].isna().tolist() == [False, False, True, False]
    assert "item_title" not in items and "item_text" not in items


def test_genres_as_code_lists_and_multi_hot(store: FeatureStore) -> None:
    vocab = store.vocabularies["item_genres"]
    assert vocab == ["Action", "Animation", "Children's", "Comedy", "Film Noir", "Sci-Fi"]
    genres = store.item_attributes()["item_genres"]
    assert [g.tolist() for g in genres] == [[2, 3, 4], [1, 6], [5], []]
    m = store.item_genre_matrix()
    assert m.shape == (4, 6) and m.dtype == np.float32
    np.testing.assert_array_equal(m.toarray()[1], [1, 0, 0, 0, 0, 1])
    store2 = FeatureStore.build(INTERACTIONS, show_progress=False)
    with pytest.raises(FeatureSchemaError, match="genres"):
        store2.item_genre_matrix()


def test_attribute_frames_are_validated() -> None:
    with pytest.raises(DataError, match="duplicated user_id"):
        FeatureStore.build(
            INTERACTIONS, users=pd.concat([USERS, USERS.iloc[:1]]), show_progress=False
        )
    with pytest.raises(DataError, match="no 'user_id' column"):
        FeatureStore.build(INTERACTIONS, users=USERS.drop(columns="user_id"), show_progress=False)
    with pytest.raises(FeatureSchemaError, match="reserved"):
        FeatureStore.build(INTERACTIONS, users=USERS.assign(count=1), show_progress=False)
    with pytest.raises(DataError, match="entity"):
        FeatureStore.build(
            INTERACTIONS, item_relations=RELATIONS.drop(columns="entity"), show_progress=False
        )
