"""recsys: one recommender-system engine from feature store to served recommendations."""

from __future__ import annotations

from recsys.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    FeatureSchemaError,
    NotFittedError,
    RecsysError,
)
from recsys.types import IdMap, TrainingData

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "FeatureSchemaError",
    "IdMap",
    "NotFittedError",
    "RecsysError",
    "TrainingData",
    "__version__",
]
