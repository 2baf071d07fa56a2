"""The data layer: file readers and validation, datasets, splits and synthetic data.

Everything other layers need is importable from here:

* reading and writing: :func:`read_interactions`, :func:`read_items`, :func:`read_users`
  (and their ``*_with_report`` forms), :func:`read_pairs`, :func:`read_recommendations`,
  :func:`read_item_relations`, :func:`validate_interactions`,
  :class:`ValidationReport`, :func:`write_frame`;
* datasets: :class:`Dataset`, :func:`load_dataset` (bundled MovieLens 100K, offline),
  :func:`available_datasets`, :func:`fetch_grouplens` (public MovieLens releases);
* splits: :class:`Split`, :func:`split_dataset`, :func:`random_split`,
  :func:`temporal_user_split`, :func:`leave_last_k_out`, :func:`time_cutoff_split`;
* synthetic data: :func:`generate_synthetic`, :func:`write_dataset`;
* :class:`IdMap` (from :mod:`recsys.types`), the id <-> index vocabulary.
"""

from __future__ import annotations

from recsys.data.datasets import (
    Dataset,
    available_datasets,
    default_cache_dir,
    fetch_grouplens,
    load_dataset,
)
from recsys.data.readers import (
    Problem,
    ValidationReport,
    parse_timestamps,
    read_interactions,
    read_interactions_with_report,
    read_item_relations,
    read_items,
    read_items_with_report,
    read_pairs,
    read_recommendations,
    read_users,
    read_users_with_report,
    validate_interactions,
    validate_items,
    validate_users,
    write_frame,
)
from recsys.data.splits import (
    SPLIT_METHODS,
    Split,
    leave_last_k_out,
    random_split,
    split_dataset,
    temporal_user_split,
    time_cutoff_split,
)
from recsys.data.synth import generate_synthetic, write_dataset
from recsys.types import IdMap

__all__ = [
    "SPLIT_METHODS",
    "Dataset",
    "IdMap",
    "Problem",
    "Split",
    "ValidationReport",
    "available_datasets",
    "default_cache_dir",
    "fetch_grouplens",
    "generate_synthetic",
    "leave_last_k_out",
    "load_dataset",
    "parse_timestamps",
    "random_split",
    "read_interactions",
    "read_interactions_with_report",
    "read_item_relations",
    "read_items",
    "read_items_with_report",
    "read_pairs",
    "read_recommendations",
    "read_users",
    "read_users_with_report",
    "split_dataset",
    "temporal_user_split",
    "time_cutoff_split",
    "validate_interactions",
    "validate_items",
    "validate_users",
    "write_dataset",
    "write_frame",
]
