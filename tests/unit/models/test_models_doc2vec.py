"""Doc2Vec and item2vec: the shared contract, documents from the feature store, cold-start
inference, user profiles, determinism and safe persistence."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError
from recsys.features import FeatureStore
from recsys.features.documents import build_item_documents
from recsys.models import MODEL_REGISTRY, Doc2VecRetriever, Item2Vec, get_model_class
from recsys.protocols import EmbeddingModel, FoldIn, Recommender, SimilarItems
from recsys.testing import RecommenderContract
from recsys.testing.datasets import block_dataset, block_frame, block_labels
from recsys.types import TrainingData

# The block documents are six tokens ("item 5 of block 0" + "genre:block0") over 24 items:
# such a tiny corpus needs many passes, and no down-sampling (every token is "frequent").
TINY = {"embedding_dim": 8, "min_count": 1, "sample": 0.0, "epochs": 100, "seed": 0}


class TestDoc2VecContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    # Profiles are built from the history, so fold-in reproduces the fitted lists exactly.
    # The documents name their block ("genre:block1"): PV-DBOW reached 1.0 for seeds 0-4.
    min_block_precision = 1.0

    def make_model(self) -> Recommender:
        return Doc2VecRetriever(**TINY)


class TestDoc2VecDMContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    # PV-DM's paragraph vectors share the prediction with the context tokens, so they
    # separate the blocks less sharply than PV-DBOW on six-token documents (0.9 to 1.0
    # for seeds 0-4).
    min_block_precision = 0.9

    def make_model(self) -> Recommender:
        return Doc2VecRetriever(**TINY, dm=True, window=2)


class TestItem2VecContract(RecommenderContract):
    exact_scores = True  # one routine computes every score (#14)
    min_block_precision = 1.0  # users never leave their block: 1.0 for seeds 0-4

    def make_model(self) -> Recommender:
        return Item2Vec(embedding_dim=8, epochs=50, sample=0.0, seed=0)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return block_dataset(seed=0)


@pytest.fixture(scope="module")
def model(data: TrainingData) -> Doc2VecRetriever:
    return Doc2VecRetriever(**TINY).fit(data, show_progress=False)


@pytest.fixture(scope="module")
def labels(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    return block_labels(data)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- registry
def test_registered_under_component_names() -> None:
    assert MODEL_REGISTRY["doc2vec"] is Doc2VecRetriever
    assert get_model_class("doc2vec") is Doc2VecRetriever
    assert MODEL_REGISTRY["item2vec"] is Item2Vec


def test_satisfies_optional_protocols(model: Doc2VecRetriever) -> None:
    for protocol in (EmbeddingModel, FoldIn, SimilarItems):
        assert isinstance(model, protocol)


def test_config_rejects_rising_learning_rate() -> None:
    with pytest.raises(ConfigError, match="min_learning_rate"):
        Doc2VecRetriever(learning_rate=0.01, min_learning_rate=0.1)
    with pytest.raises(ConfigError):
        Doc2VecRetriever(embedding_dim=0)


# ----------------------------------------------------------------------------- documents
def test_feature_store_documents_give_the_same_model(
    data: TrainingData, model: Doc2VecRetriever
) -> None:
    """documents= from the feature store and data.items alone build the same documents."""
    store = FeatureStore.build(block_frame(seed=0), items=data.items, show_progress=False)
    docs = store.item_documents()
    refit = Doc2VecRetriever(**TINY).fit(data, documents=docs, show_progress=False)
    np.testing.assert_array_equal(refit.item_factors, model.item_factors)
    np.testing.assert_array_equal(refit.user_factors, model.user_factors)


def test_documents_are_matched_by_item_id(data: TrainingData, model: Doc2VecRetriever) -> None:
    docs = pd.DataFrame(
        {
            "item_id": data.item_map.ids,
            "tokens": build_item_documents(data.item_map, data.items, None),
        }
    )
    shuffled = docs.iloc[np.random.default_rng(0).permutation(len(docs))]
    extra = pd.DataFrame({"item_id": ["not-an-item"], "tokens": [["block", "0"]]})
    refit = Doc2VecRetriever(**TINY).fit(
        data, documents=pd.concat([shuffled, extra], ignore_index=True), show_progress=False
    )
    # gensim sees the documents in item-index order either way: identical vectors
    np.testing.assert_array_equal(refit.item_factors, model.item_factors)


def test_relations_become_tokens(data: TrainingData) -> None:
    relations = pd.DataFrame(
        {
            "item_id": data.item_map.ids[:8],
            "relation": "directed_by",
            "entity": ["Ada Lovelace"] * 4 + ["Alan Turing"] * 4,
        }
    )
    store = FeatureStore.build(
        block_frame(seed=0), items=data.items, item_relations=relations, show_progress=False
    )
    fitted = Doc2VecRetriever(**TINY).fit(
        data, documents=store.item_documents(), show_progress=False
    )
    vocabulary = set(fitted.vocabulary_.tolist())
    assert {"directed_by:ada_lovelace", "directed_by:alan_turing", "genre:block2"} <= vocabulary


def test_items_without_documents_get_no_vector(data: TrainingData) -> None:
    docs = build_item_documents(data.item_map, data.items, None)
    frame = pd.DataFrame({"item_id": data.item_map.ids[:16], "tokens": docs[:16]})
    fitted = Doc2VecRetriever(**TINY).fit(data, documents=frame, show_progress=False)
    assert (fitted.item_factors[16:] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(fitted.item_factors[:16], axis=1), 1.0, rtol=1e-5)
    # they score 0 for every user, are nobody's content neighbour and have none
    assert (fitted.score(np.zeros(8, np.int64), np.arange(16, 24)) == 0).all()
    neighbours, _ = fitted.similar_items(np.arange(24), k=23)
    assert (neighbours[16:] == -1).all()
    assert not np.isin(neighbours[:16], np.arange(16, 24)).any()


def test_fit_without_documents_raises(data: TrainingData) -> None:
    bare = TrainingData(data.user_map, data.item_map, data.user_idx, data.item_idx)
    with pytest.raises(DataError, match="documents"):
        Doc2VecRetriever(**TINY).fit(bare, show_progress=False)


def test_bad_documents_frames_raise(data: TrainingData) -> None:
    with pytest.raises(DataError, match="tokens"):
        Doc2VecRetriever(**TINY).fit(
            data, documents=pd.DataFrame({"item_id": ["i000"]}), show_progress=False
        )
    twice = pd.DataFrame({"item_id": ["i000", "i000"], "tokens": [["a"], ["b"]]})
    with pytest.raises(DataError, match="repeats"):
        Doc2VecRetriever(**TINY).fit(data, documents=twice, show_progress=False)
    with pytest.raises(DataError, match="min_count"):
        Doc2VecRetriever(**{**TINY, "min_count": 1000}).fit(data, show_progress=False)


def test_pv_dm_keeps_token_vectors(data: TrainingData, model: Doc2VecRetriever) -> None:
    dm = Doc2VecRetriever(**TINY, dm=True).fit(data, show_progress=False)
    assert dm.token_vectors_.shape == (len(dm.vocabulary_), 8)
    assert model.token_vectors_.shape == (0, 8)  # PV-DBOW inference does not need them
    assert model.output_weights_.shape == (len(model.vocabulary_), 8)
    assert model.token_counts_.dtype == np.int64
    assert (np.diff(model.token_counts_) <= 0).all(), "vocabulary is most frequent first"


# ----------------------------------------------------------------------------- inference
@pytest.mark.parametrize("dm", [False, True])
def test_inferred_training_documents_land_on_their_items(
    data: TrainingData, labels: tuple[np.ndarray, np.ndarray], dm: bool
) -> None:
    _, item_block = labels
    fitted = Doc2VecRetriever(**TINY, dm=dm).fit(data, show_progress=False)
    inferred = fitted.infer_item_vectors(build_item_documents(data.item_map, data.items, None))
    assert inferred.shape == (24, 8) and inferred.dtype == np.float32
    sims = inferred @ fitted.item_factors.T
    nearest = np.argmax(sims, axis=1)
    np.testing.assert_array_equal(item_block[nearest], item_block)
    if not dm:  # PV-DBOW: the document vector alone predicts the tokens, as in training
        assert float(np.mean(np.diag(sims))) > 0.9


def test_inference_is_a_pure_function_of_the_document(model: Doc2VecRetriever) -> None:
    docs = [["item", "3", "of", "block", "1", "genre:block1"], ["genre:block2"], ["block"]]
    together = model.infer_item_vectors(docs)
    for k, doc in enumerate(docs):
        alone = model.infer_item_vectors([doc])
        np.testing.assert_allclose(alone[0], together[k], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(model.infer_item_vectors(docs), together)


def test_inference_of_unknown_tokens_is_zero(model: Doc2VecRetriever) -> None:
    out = model.infer_item_vectors([["zzz", "qqq"], [], ["genre:block0"]])
    assert (out[:2] == 0).all()
    assert np.linalg.norm(out[2]) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(DataError, match="token lists"):
        model.infer_item_vectors(["item 1 of block 0"])


def test_cold_start_item_lands_in_its_block(
    data: TrainingData, labels: tuple[np.ndarray, np.ndarray]
) -> None:
    user_block, item_block = labels
    fitted = Doc2VecRetriever(**TINY).fit(data, show_progress=False)
    new = pd.DataFrame(
        {
            "item_id": ["n1", "n2"],
            "title": ["item 5 of block 1", "a new thing"],
            "genres": ["block1", None],
        }
    )
    idx = fitted.add_items(new)
    np.testing.assert_array_equal(idx, [24, 25])
    assert fitted.n_items == 26 and fitted.item_factors.shape == (26, 8)
    neighbours, _ = fitted.similar_items([24], k=6)
    assert (item_block[neighbours[0][neighbours[0] < 24]] == 1).all()
    # block-1 users rank the new block-1 item above every item of the other blocks
    block1 = np.flatnonzero(user_block == 1)
    scores = fitted.score(np.repeat(block1, 26), np.tile(np.arange(26), len(block1)))
    scores = scores.reshape(len(block1), 26)
    assert (scores[:, 24] > scores[:, :24][:, item_block != 1].max(axis=1)).all()
    items, _ = fitted.recommend(block1, k=5)
    assert (items == 24).any(axis=1).all(), "the cold-start item is in every block-1 top 5"
    # fold-in and seen-item exclusion work on the widened catalogue
    hist = sp.csr_matrix(([1.0], ([0], [24])), shape=(1, 26))
    items, _ = fitted.recommend_for_history(hist, k=5)
    assert 24 not in items[0] and (item_block[items[0]] == 1).all()


def test_add_items_from_documents_equals_from_metadata(
    model: Doc2VecRetriever, tmp_path: Path
) -> None:
    meta = pd.DataFrame({"item_id": [7], "title": ["item 9 of block 2"], "genres": ["block2"]})
    tokens = ["item", "9", "of", "block", "2", "genre:block2"]
    docs = pd.DataFrame({"item_id": [7], "tokens": [tokens]})
    model.save(tmp_path)  # two independent copies: add_items changes the model
    a, b = Doc2VecRetriever.load(tmp_path), Doc2VecRetriever.load(tmp_path)
    a.add_items(meta)
    b.add_items(docs)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    with pytest.raises(DataError):
        a.add_items(pd.DataFrame({"item_id": ["x", "x"], "title": ["a", "b"]}))


# ----------------------------------------------------------------------------- profiles
def test_profile_is_the_normalised_mean_of_item_vectors(
    data: TrainingData, model: Doc2VecRetriever
) -> None:
    hist = data.user_items
    for u in (0, 13, 29):
        expected = _unit(model.item_factors[hist[u].indices].mean(axis=0))
        np.testing.assert_allclose(model.user_factors[u], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.score(np.zeros(24, np.int64), np.arange(24)),
        model.item_factors @ model.user_factors[0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_rating_and_recency_weighted_profiles(data: TrainingData) -> None:
    half_life = 0.5  # days; the block timestamps are a minute apart over about two hours
    weighted = Doc2VecRetriever(**TINY, rating_weight=True, recency_half_life_days=half_life)
    weighted.fit(data, show_progress=False)
    assert data.rating is not None and data.timestamp is not None
    for u in (0, 13, 29):
        rows = np.flatnonzero(data.user_idx == u)
        age = (data.timestamp[rows].max() - data.timestamp[rows]) / 86_400.0
        w = data.rating[rows] * 0.5 ** (age / half_life)
        expected = _unit(w @ weighted.item_factors[data.item_idx[rows]])
        np.testing.assert_allclose(weighted.user_factors[u], expected, rtol=1e-5, atol=1e-6)
        # fold-in reads a history's values as the weights
        hist = sp.csr_matrix((w, (np.zeros(len(rows)), data.item_idx[rows])), shape=(1, 24))
        np.testing.assert_allclose(weighted.profiles(hist)[0], expected, rtol=1e-5, atol=1e-6)


def test_weighting_needs_the_columns(data: TrainingData) -> None:
    implicit = block_dataset(seed=0, with_ratings=False, with_timestamps=False)
    with pytest.raises(DataError, match="ratings"):
        Doc2VecRetriever(**TINY, rating_weight=True).fit(implicit, show_progress=False)
    with pytest.raises(DataError, match="timestamps"):
        Doc2VecRetriever(**TINY, recency_half_life_days=7.0).fit(implicit, show_progress=False)


def test_fold_in_history_of_one_block(
    model: Doc2VecRetriever, labels: tuple[np.ndarray, np.ndarray]
) -> None:
    _, item_block = labels
    block2 = np.flatnonzero(item_block == 2)[:3]
    hist = sp.csr_matrix((np.ones(3), (np.zeros(3), block2)), shape=(1, 24))
    items, _ = model.recommend_for_history(hist, k=5)
    assert (item_block[items[0]] == 2).all()
    assert not np.isin(items[0], block2).any()
    np.testing.assert_allclose(
        model.profiles(hist)[0], _unit(model.item_factors[block2].mean(axis=0)), rtol=1e-5
    )
    with pytest.raises(DataError):
        model.profiles(sp.csr_matrix((1, 23)))


def test_similar_items_are_content_neighbours(
    model: Doc2VecRetriever, labels: tuple[np.ndarray, np.ndarray]
) -> None:
    _, item_block = labels
    items, sims = model.similar_items(np.arange(24), k=7)
    assert (item_block[items] == item_block[:, None]).all()
    np.testing.assert_allclose(
        sims[:, 0],
        np.einsum("nd,nd->n", model.item_factors, model.item_factors[items[:, 0]]),
        rtol=1e-5,
    )


# ----------------------------------------------------------------------------- persistence
def test_save_is_arrays_only_and_round_trips_inference(
    model: Doc2VecRetriever, tmp_path: Path
) -> None:
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "state.npz"]
    with zipfile.ZipFile(tmp_path / "state.npz") as z:
        for name in z.namelist():  # every member is a plain array: no object/pickle dtype
            with z.open(name) as fh:
                header = fh.read(128)
            assert b"'O'" not in header and b"|O" not in header, name
    loaded = Doc2VecRetriever.load(tmp_path)
    assert loaded.vocabulary_.dtype.kind == "U"
    np.testing.assert_array_equal(loaded.vocabulary_, model.vocabulary_)
    docs = [["item", "1", "of", "block", "0", "genre:block0"], ["genre:block2", "zzz"]]
    np.testing.assert_array_equal(loaded.infer_item_vectors(docs), model.infer_item_vectors(docs))


_HASH_SCRIPT = """
import hashlib
from recsys.features.documents import build_item_documents
from recsys.models import Doc2VecRetriever, Item2Vec
from recsys.testing.datasets import block_dataset
data = block_dataset(seed=0)
h = hashlib.sha256()
for model in (
    Doc2VecRetriever(embedding_dim=8, min_count=1, epochs=30, seed=3),
    Doc2VecRetriever(embedding_dim=8, min_count=1, epochs=30, seed=3, dm=True),
    Item2Vec(embedding_dim=8, epochs=10, seed=3),
):
    model.fit(data, show_progress=False)
    h.update(model.item_factors.tobytes())
    h.update(model.user_factors.tobytes())
    if isinstance(model, Doc2VecRetriever):
        docs = build_item_documents(data.item_map, data.items, None)
        h.update(model.infer_item_vectors(docs).tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow  # two fresh interpreters importing gensim: about 10 s
def test_training_and_inference_do_not_depend_on_pythonhashseed() -> None:
    """gensim seeds its vectors from `seed`, but infer_vector hashes with Python's hash();
    ours does not, and with one worker the whole model is reproducible across processes."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _HASH_SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "4242")
    ]
    outputs = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-2000:]
        outputs.append(out.strip())
    assert len(outputs[0]) == 64 and outputs[0] == outputs[1]
    assert hashlib.sha256(b"").hexdigest() not in outputs


# ----------------------------------------------------------------------------- item2vec
def test_item2vec_neighbours_and_missing_items(labels: tuple[np.ndarray, np.ndarray]) -> None:
    _, item_block = labels
    frame = block_frame(seed=0)
    last = int(frame["timestamp"].max())
    lonely_row = {"user_id": "u00", "item_id": "lonely", "rating": 5.0, "timestamp": last + 60}
    frame = pd.concat([frame, pd.DataFrame([lonely_row])], ignore_index=True)
    data = TrainingData.from_frame(frame)
    fitted = Item2Vec(embedding_dim=8, epochs=50, sample=0.0, min_count=2, seed=0).fit(
        data, show_progress=False
    )
    lonely = int(data.item_map.to_index(["lonely"])[0])
    assert (fitted.item_factors[lonely] == 0).all(), "an item below min_count has no vector"
    known = np.flatnonzero(fitted.item_factors.any(axis=1))
    items, _ = fitted.similar_items(known, k=5)
    blocks = np.append(item_block, -1)  # "lonely" sorts after the block ids
    assert float(np.mean(blocks[items] == blocks[known][:, None])) >= 0.9
    with pytest.raises(DataError, match="min_count"):
        Item2Vec(min_count=1000).fit(data, show_progress=False)
