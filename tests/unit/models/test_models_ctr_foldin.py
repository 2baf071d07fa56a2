"""Fold-in of DIN: a history scored as the unknown user with that behaviour sequence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models import DIN, DeepFM
from recsys.testing import block_dataset
from recsys.types import TrainingData

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST: dict[str, Any] = {
    "labels": "implicit",
    "embedding_dim": 8,
    "hidden_units": (16,),
    "epochs": 8,
    "batch_size": 32,
    "learning_rate": 0.01,
    "device": "cpu",
    "seed": 0,
}
ITEMS_PER_BLOCK = 8


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return block_dataset(n_blocks=3, users_per_block=10, items_per_block=ITEMS_PER_BLOCK)


@pytest.fixture(scope="module")
def din(data: TrainingData) -> DIN:
    model = DIN(attention_units=(8,), sequence_length=5, **FAST)
    return model.fit(data, show_progress=False)


def histories(rows: list[dict[int, float]], n_items: int) -> sp.csr_matrix:
    """A history matrix from ``{item: time order}`` rows."""
    r = [k for k, row in enumerate(rows) for _ in row]
    c = [i for row in rows for i in row]
    v = [t for row in rows for t in row.values()]
    return sp.csr_matrix((np.asarray(v, np.float64), (r, c)), shape=(len(rows), n_items))


def test_the_sequence_is_the_latest_items_oldest_first(din: DIN, data: TrainingData) -> None:
    assert din.encoder_ is not None
    h = histories(
        [
            {4: 3.0, 7: 1.0, 9: 2.0},  # time order 7, 9, 4
            {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 5: 5.0, 6: 6.0, 8: 7.0},  # 7 items, keep 5
            {10: 1.0, 12: 1.0, 11: 1.0},  # ties: the higher index is the later
            {},
        ],
        data.n_items,
    )
    seq = din.encoder_.history_sequences(h)
    assert seq.tolist() == [
        [7, 9, 4, -1, -1],
        [2, 3, 5, 6, 8],
        [10, 11, 12, -1, -1],
        [-1, -1, -1, -1, -1],
    ]


def test_din_fold_in_follows_the_history(din: DIN, data: TrainingData) -> None:
    # four items of one block as the history: the rest of that block comes first
    rows = [
        {b * ITEMS_PER_BLOCK + j: float(j + 1) for j in range(4)}
        for b in range(data.n_items // ITEMS_PER_BLOCK)
    ]
    items, scores = din.recommend_for_history(histories(rows, data.n_items), k=4)
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


def test_fold_in_checks_the_width(din: DIN, data: TrainingData) -> None:
    from recsys.errors import DataError

    with pytest.raises(DataError, match="columns"):
        din.recommend_for_history(sp.csr_matrix((1, data.n_items + 1)), k=3)
