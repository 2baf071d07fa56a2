"""Test helpers for recommenders, importable by users for their own models.

- :mod:`recsys.testing.datasets`: tiny synthetic datasets with a known answer
  (:func:`block_dataset`, :func:`block_frame`, :func:`block_labels`).
- :mod:`recsys.testing.configs`: :func:`small_hybrid_config`, a hybrid pipeline that trains
  in seconds.
- :mod:`recsys.testing.cli`: :func:`~recsys.testing.cli.run_cli`, the ``recsys`` command
  line in a subprocess.
- :mod:`recsys.testing.contract`: :class:`RecommenderContract`, the pytest suite every
  model's tests subclass. It needs pytest, so it is imported only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recsys.testing.configs import small_hybrid_config
from recsys.testing.datasets import block_dataset, block_frame, block_labels

if TYPE_CHECKING:
    from recsys.testing.contract import RecommenderContract, check_recommendations

__all__ = [
    "RecommenderContract",
    "block_dataset",
    "block_frame",
    "block_labels",
    "check_recommendations",
    "small_hybrid_config",
]


def __getattr__(name: str) -> Any:
    # Lazy: the contract imports pytest, which the datasets alone do not need.
    if name in ("RecommenderContract", "check_recommendations"):
        from recsys.testing import contract

        return getattr(contract, name)
    raise AttributeError(f"module 'recsys.testing' has no attribute {name!r}")
