"""Feature store: user/item/interaction features with an offline point-in-time read for
training and an online latest-state read for serving, behaviour sequences and item
documents, persisted as parquet with a manifest.

Stability: provisional
"""

from __future__ import annotations

from recsys.features.documents import tokenize
from recsys.features.fingerprint import fingerprint_arrays
from recsys.features.schema import (
    INTERACTION_VIEW,
    ITEM_ACTIVITY_VIEW,
    ITEM_DOCUMENTS_VIEW,
    USER_ACTIVITY_VIEW,
    FeatureSchema,
    FeatureView,
    dtype_name,
)
from recsys.features.store import FeatureStore

__all__ = [
    "INTERACTION_VIEW",
    "ITEM_ACTIVITY_VIEW",
    "ITEM_DOCUMENTS_VIEW",
    "USER_ACTIVITY_VIEW",
    "FeatureSchema",
    "FeatureStore",
    "FeatureView",
    "dtype_name",
    "fingerprint_arrays",
    "tokenize",
]
