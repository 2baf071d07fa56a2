"""The two-pass top-k of wide blocks equals the one-pass selection, ties and non-finite included."""

from __future__ import annotations

import numpy as np


def test_two_pass_topk_equals_the_one_pass_selection(rng: np.random.Generator) -> None:
    from recsys.models.base import _topk_exact, topk

    for trial in range(120):
        n, n_items = int(rng.integers(1, 20)), int(rng.integers(64, 3000))
        kind = trial % 4
        if kind == 0:
            scores = rng.standard_normal((n, n_items)).astype(np.float32)
        elif kind == 1:  # heavy ties, -0.0 and +0.0 among them
            scores = rng.integers(-2, 3, (n, n_items)).astype(np.float32)
            scores[scores == 0] = -0.0
            scores[:, ::3] = 0.0
        elif kind == 2:  # seen items masked, some rows with fewer than k eligible items
            scores = rng.standard_normal((n, n_items)).astype(np.float32)
            scores[rng.random((n, n_items)) < rng.choice([0.3, 0.999])] = -np.inf
        else:  # non-finite scores
            scores = rng.standard_normal((n, n_items)).astype(np.float32)
            scores[0, :5] = np.inf
            scores[-1, 7] = np.nan
        for k in (1, max(1, n_items // 40), max(1, n_items // 100)):
            got, expected = topk(scores, k), _topk_exact(scores, k)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])
