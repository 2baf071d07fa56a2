"""The baseline: reciprocal-rank fusion of the sources' ranks."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.errors import ConfigError, DataError
from recsys.ranking import reciprocal_rank_blend


def test_known_values_and_missing_sources() -> None:
    ranks = np.array([[1, np.nan], [2, 1], [np.nan, np.nan]], np.float32)
    np.testing.assert_allclose(reciprocal_rank_blend(ranks, k=60), [1 / 61, 1 / 62 + 1 / 61, 0.0])
    np.testing.assert_allclose(
        reciprocal_rank_blend(ranks, k=1, weights=np.array([2.0, 0.0])), [1.0, 2 / 3, 0.0]
    )


def test_agreement_beats_a_single_high_rank() -> None:
    ranks = np.array([[1, np.nan, np.nan], [3, 3, 3]], np.float32)
    s = reciprocal_rank_blend(ranks)
    assert s[1] > s[0]


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="k must be > 0"):
        reciprocal_rank_blend(np.ones((1, 1), np.float32), k=0)
    with pytest.raises(DataError, match="weights for 2 sources"):
        reciprocal_rank_blend(np.ones((1, 2), np.float32), weights=np.ones(3))
    with pytest.raises(DataError, match="expected"):
        reciprocal_rank_blend(np.ones(3, np.float32))
