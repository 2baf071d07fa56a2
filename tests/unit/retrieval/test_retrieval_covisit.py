"""Sequential co-visitation counts: a known answer, recommending, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.errors import ArtifactError, ConfigError, NotFittedError
from recsys.retrieval import CoVisitation
from recsys.types import IdMap, TrainingData


def sequences() -> TrainingData:
    # user a: 0 -> 1 -> 2 ; user b: 0 -> 2 ; rows deliberately out of time order
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "a", "a", "b"],
            "item_id": [2, 2, 0, 1, 0],
            "timestamp": [30, 20, 10, 20, 10],
        }
    )
    return TrainingData.from_frame(frame, item_map=IdMap(np.arange(4)))


def test_known_answer_weights() -> None:
    cv = CoVisitation(window=2).fit(sequences())
    w = cv.weights_.toarray()
    # 0->1 (gap 1, user a), 0->2 (gap 2 for a: 1/2, gap 1 for b: 1), 1->2 (gap 1)
    # rows are divided by sqrt(count of the seed item): item 0 is seen twice
    expected = np.zeros((4, 4))
    expected[0, 1] = 1 / np.sqrt(2)
    expected[0, 2] = 1.5 / np.sqrt(2)
    expected[1, 2] = 1.0
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert CoVisitation(window=1).fit(sequences()).weights_.toarray()[0, 2] == pytest.approx(
        1 / np.sqrt(2)
    )


def test_recommend_follows_the_seeds_and_excludes() -> None:
    cv = CoVisitation(window=2).fit(sequences())
    seeds = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 1.0]], np.float32))
    items, scores = cv.recommend(seeds, 3)
    assert items[0].tolist() == [2, 1, -1]  # only positive scores are proposed
    assert items[1].tolist() == [-1, -1, -1]  # item 3 was never followed by anything
    assert np.isnan(scores[1]).all()
    exclude = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 0]], np.float32))
    assert cv.recommend(seeds, 3, exclude=exclude)[0][0].tolist() == [1, -1, -1]


def test_pruning_keeps_the_strongest_neighbours() -> None:
    cv = CoVisitation(window=2, n_neighbors=1).fit(sequences())
    assert cv.weights_.toarray()[0].nonzero()[0].tolist() == [2]


def test_save_load_and_errors(tmp_path: Path) -> None:
    cv = CoVisitation(window=2).fit(sequences())
    cv.save(tmp_path / "cv")
    back = CoVisitation.load(tmp_path / "cv")
    assert (back.weights_ != cv.weights_).nnz == 0 and back.window == 2
    with pytest.raises(NotFittedError):
        CoVisitation().score(sp.csr_matrix((1, 4)))
    with pytest.raises(ConfigError, match="window and n_neighbors"):
        CoVisitation(window=0)
    (tmp_path / "cv" / "covisit.npz").write_bytes(b"broken")
    with pytest.raises(ArtifactError, match="cannot read"):
        CoVisitation.load(tmp_path / "cv")
