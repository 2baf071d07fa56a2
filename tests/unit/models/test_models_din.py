"""DIN: the shared contract, behaviour sequences from the store (training and serving),
masking of short histories, the attention unit and activations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recsys.errors import ConfigError
from recsys.eval import roc_auc
from recsys.features import FeatureStore
from recsys.models import DIN, DeepFM, DINConfig, get_model_class
from recsys.models.din.arch import AttentionArch
from recsys.protocols import Recommender
from recsys.testing import RecommenderContract, block_dataset, block_frame
from recsys.types import TrainingData

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST: dict[str, Any] = {
    "embedding_dim": 8,
    "hidden_units": (16,),
    "attention_units": (8,),
    "sequence_length": 5,
    "epochs": 8,
    "batch_size": 32,
    "learning_rate": 0.01,
    "device": "cpu",
    "seed": 0,
}


#: Fold-in scores a history as the unknown user with that behaviour sequence, so its top
#: lists differ from a known user's (whose id embedding counts): measured top-5 overlaps
#: are 0.60 or more for the default and PReLU variants and 0.45 for the paper's variant; a
#: random list of unseen items overlaps about 0.25.
FOLD_IN_OVERLAP = 0.55


class TestDINContract(RecommenderContract):
    min_block_precision = 0.9
    fold_in_min_overlap = FOLD_IN_OVERLAP

    def make_model(self) -> Recommender:
        return DIN(labels="implicit", **FAST)


class TestPaperDINContract(RecommenderContract):
    """The paper's DIN: Dice everywhere, plain attention sums, no first-order/FM terms."""

    min_block_precision = 0.9
    fold_in_min_overlap = 0.4

    def make_model(self) -> Recommender:
        return DIN(
            labels="implicit",
            attention_activation=None,
            attention_normalization=False,
            first_order=False,
            fm_interaction=False,
            **{**FAST, "epochs": 15, "learning_rate": 0.03},
        )


class TestDINPReLUContract(RecommenderContract):
    min_block_precision = 0.9
    fold_in_min_overlap = FOLD_IN_OVERLAP

    def make_model(self) -> Recommender:
        return DIN(labels="implicit", activation="prelu", interest_product=True, **FAST)


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    # DIN's MLP memorises a few hundred rows (a row's history nearly identifies it), so
    # this fixture is larger than DeepFM's
    frame = block_frame(
        n_blocks=3, users_per_block=40, items_per_block=20, density=0.5, noise=0.6, seed=1
    )
    items = pd.DataFrame({"item_id": sorted(frame["item_id"].unique())})
    items["genres"] = [f"g{k % 3}" for k in range(len(items))]
    store = FeatureStore.build(frame, items=items, sequence_length=8, show_progress=False)
    data = TrainingData.from_frame(frame, items=items)
    order = np.random.default_rng(0).permutation(len(frame))
    cut = int(0.8 * len(order))
    train_rows, test_rows = np.sort(order[:cut]), np.sort(order[cut:])
    mask = np.zeros(len(frame), bool)
    mask[train_rows] = True
    model = DIN(**{**FAST, "epochs": 10, "validation_fraction": 0.0})
    model.fit(data.select(mask), features=store, rows=train_rows, show_progress=False)
    return {
        "frame": frame,
        "items": items,
        "store": store,
        "data": data,
        "model": model,
        "test_rows": test_rows,
        "labels": (frame["rating"].to_numpy() >= 4).astype(np.float32),
    }


def test_registered() -> None:
    assert get_model_class("din") is DIN
    assert DINConfig(attention_units=[4, 2]).attention_units == (4, 2)
    with pytest.raises(ConfigError):
        DIN(activation="relu")
    with pytest.raises(ConfigError):
        DIN(attention_units=())


def test_learns_clicks(setup: dict[str, Any]) -> None:
    rows = setup["test_rows"]
    probs = setup["model"].score_rows(setup["store"], rows)
    assert roc_auc(setup["labels"][rows], probs) > 0.72  # measured 0.77 (DeepFM: 0.9)


def test_training_sequences_are_the_store_point_in_time_ones(setup: dict[str, Any]) -> None:
    model, store = setup["model"], setup["store"]
    rows = np.arange(40)
    inputs = model.encoder_.row_inputs(store, rows, sequences=True)
    expected = store.sequences(rows, 5)  # same vocabularies here: indices agree
    n_items = model.n_items
    np.testing.assert_array_equal(inputs["seq"].numpy(), np.where(expected >= 0, expected, n_items))


def test_serving_sequences_follow_new_events(setup: dict[str, Any], tmp_path: Any) -> None:
    model = setup["model"]
    model.save(tmp_path)
    served = DIN.load(tmp_path)
    store = FeatureStore.build(
        setup["frame"], items=setup["items"], sequence_length=8, show_progress=False
    )
    user = store.user_map.ids[0]
    np.testing.assert_array_equal(served.encoder_.user_seq[0], store.user_sequences([user], 5)[0])
    before = served.score([0] * 5, np.arange(5))
    t = int(setup["frame"]["timestamp"].max()) + 1
    store.append(
        pd.DataFrame(
            {
                "user_id": [user] * 3,
                "item_id": ["i045", "i046", "i047"],
                "rating": [5.0] * 3,
                "timestamp": [t, t + 1, t + 2],
            }
        )
    )
    served.refresh_features(store)
    np.testing.assert_array_equal(served.encoder_.user_seq[0], store.user_sequences([user], 5)[0])
    assert served.encoder_.user_seq[0][-1] == store.item_map.to_index(["i047"])[0]
    assert not np.allclose(served.score([0] * 5, np.arange(5)), before)


def test_short_histories_are_masked() -> None:
    torch.manual_seed(0)
    unit = AttentionArch(6, (4,), "dice", normalize=False).eval()
    query = torch.randn(3, 6)
    keys = torch.randn(3, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    pooled, weights = unit(query, keys, mask)
    assert (weights[~mask] == 0).all()
    noisy = keys.clone()
    noisy[~mask] = 100.0  # whatever sits in padded slots does not matter
    pooled2, _ = unit(query, noisy, mask)
    torch.testing.assert_close(pooled, pooled2)
    torch.testing.assert_close(pooled[2], torch.zeros(6))  # no history: zero interest
    soft = AttentionArch(6, (4,), "prelu", normalize=True).eval()
    _, w = soft(query, keys, mask)
    torch.testing.assert_close(w.sum(1), torch.tensor([1.0, 1.0, 0.0]))


def test_split_first_layer_equals_the_concatenated_unit() -> None:
    """``[k, q, k-q, k*q] W`` == ``W_k k + W_p (k*q) + W_q q`` with the folded weights."""
    torch.manual_seed(1)
    d, h = 5, 3
    unit = AttentionArch(d, (h,), "prelu", normalize=False)
    w = torch.randn(h, 4 * d)
    w1, w2, w3, w4 = w.split(d, dim=1)
    with torch.no_grad():
        unit.key_proj.weight.copy_(w1 + w3)
        unit.product_proj.weight.copy_(w4)
        unit.query_proj.weight.copy_(w2 - w3)
    q, k = torch.randn(2, d), torch.randn(2, 7, d)
    concat = torch.cat([k, q[:, None].expand_as(k), k - q[:, None], k * q[:, None]], -1)
    expected = concat @ w.T + unit.key_proj.bias
    got = unit.key_proj(k) + unit.product_proj(k * q[:, None]) + unit.query_proj(q)[:, None]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sequence_longer_than_the_store_is_refused() -> None:
    frame = block_frame(with_ratings=False)
    store = FeatureStore.build(frame, sequence_length=3, show_progress=False)
    with pytest.raises(ConfigError, match="sequence_length"):
        DIN(**FAST).fit(TrainingData.from_frame(frame), features=store, show_progress=False)


def test_implicit_fit_without_store_and_finetune() -> None:
    data = block_dataset(seed=3)
    model = DIN(labels="implicit", **{**FAST, "epochs": 3}).fit(data, show_progress=False)
    new = block_frame(seed=4).tail(15).copy()
    new["timestamp"] += 10**6
    model.finetune(new, epochs=1, show_progress=False)
    assert model.history_[-1]["finetune"] == 1.0
    assert np.isfinite(model.score(np.arange(5), np.arange(5))).all()
    # the served sequence of a fine-tuned user now ends with its newest item
    last = new.iloc[-1]
    u = model.user_map_.to_index([last["user_id"]])[0]
    assert (
        model.encoder_.user_seq[u][model.encoder_.user_seq[u] >= 0][-1]
        == (model.item_map_.to_index([last["item_id"]])[0])
    )


# ---------------------------------------------------------------------- fold-in
ITEMS_PER_BLOCK = 8


@pytest.fixture(scope="module")
def fold_data() -> TrainingData:
    return block_dataset(n_blocks=3, users_per_block=10, items_per_block=ITEMS_PER_BLOCK)


@pytest.fixture(scope="module")
def fold_din(fold_data: TrainingData) -> DIN:
    return DIN(labels="implicit", **FAST).fit(fold_data, show_progress=False)


def histories(rows: list[dict[int, float]], n_items: int) -> sp.csr_matrix:
    """A history matrix from ``{item: time order}`` rows."""
    r = [k for k, row in enumerate(rows) for _ in row]
    c = [i for row in rows for i in row]
    v = [t for row in rows for t in row.values()]
    return sp.csr_matrix((np.asarray(v, np.float64), (r, c)), shape=(len(rows), n_items))


def test_the_sequence_is_the_latest_items_oldest_first(
    fold_din: DIN, fold_data: TrainingData
) -> None:
    assert fold_din.encoder_ is not None
    h = histories(
        [
            {4: 3.0, 7: 1.0, 9: 2.0},  # time order 7, 9, 4
            {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 5: 5.0, 6: 6.0, 8: 7.0},  # 7 items, keep 5
            {10: 1.0, 12: 1.0, 11: 1.0},  # ties: the higher index is the later
            {},
        ],
        fold_data.n_items,
    )
    seq = fold_din.encoder_.history_sequences(h)
    assert seq.tolist() == [
        [7, 9, 4, -1, -1],
        [2, 3, 5, 6, 8],
        [10, 11, 12, -1, -1],
        [-1, -1, -1, -1, -1],
    ]


def test_din_fold_in_follows_the_history(fold_din: DIN, fold_data: TrainingData) -> None:
    # four items of one block as the history: the rest of that block comes first
    rows = [
        {b * ITEMS_PER_BLOCK + j: float(j + 1) for j in range(4)}
        for b in range(fold_data.n_items // ITEMS_PER_BLOCK)
    ]
    items, scores = fold_din.recommend_for_history(histories(rows, fold_data.n_items), k=4)
    assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
    in_block = items // ITEMS_PER_BLOCK == np.arange(len(rows))[:, None]
    assert in_block.mean() >= 0.75, items
    for b, row in enumerate(rows):  # the history's own items are excluded
        assert not set(items[b].tolist()) & set(row)


def test_din_has_fold_in_and_deepfm_none() -> None:
    # DeepFM reads no sequence: a history could only be the unknown user, so it offers none
    from recsys.protocols import FoldIn

    assert isinstance(DIN(), FoldIn)
    assert not isinstance(DeepFM(), FoldIn)


def test_fold_in_checks_the_width(fold_din: DIN, fold_data: TrainingData) -> None:
    from recsys.errors import DataError

    with pytest.raises(DataError, match="columns"):
        fold_din.recommend_for_history(sp.csr_matrix((1, fold_data.n_items + 1)), k=3)
