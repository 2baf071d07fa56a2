"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator per test, so every test's randomness is reproducible."""
    return np.random.default_rng(12345)
