"""The pipeline gives content models the feature store's documents (knowledge-graph tokens)."""

from __future__ import annotations

import pandas as pd

from recsys.config import load_config
from recsys.pipeline import Pipeline


def test_doc2vec_is_fitted_on_feature_store_documents() -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b", "c", "c"],
            "item_id": [1, 2, 2, 3, 1, 3],
            "timestamp": [1, 2, 3, 4, 5, 6],
        }
    )
    items = pd.DataFrame({"item_id": [1, 2, 3], "title": ["Alpha", "Beta", "Gamma"]})
    relations = pd.DataFrame(
        {"item_id": [1, 2, 3], "relation": ["film.director"] * 3, "entity": ["m.x", "m.x", "m.y"]}
    )
    config = load_config(None, models={"doc2vec": {"min_count": 1, "sample": 0.0, "epochs": 5}})
    pipe = Pipeline.fit(
        log,
        items=items,
        item_relations=relations,
        config=config,
        models=["doc2vec"],
        show_progress=False,
    )
    vocabulary = set(pipe.models["doc2vec"].vocabulary_.tolist())
    assert "film.director:m.x" in vocabulary  # a relation token: only the store's documents have it
