"""Batch jobs: offline recommendation for many users, locally or on Dask.

* :func:`run_batch` — top-``k`` for every user (or a users list) in chunks, written part
  by part with a manifest, resumable; engines ``"local"`` (threads) and ``"dask"``.
* :func:`add_recommend_arguments` / :func:`run_recommend_job` — the ``recsys recommend``
  command.
* :mod:`recsys.jobs.dask_features` — the feature store's aggregate views computed out of
  core with ``dask.dataframe`` from a parquet log larger than memory.
"""

from __future__ import annotations

from recsys.jobs.batch import BatchResult, run_batch
from recsys.jobs.cli import add_recommend_arguments, run_recommend_job
from recsys.jobs.output import OutputLayout, PartResult

__all__ = [
    "BatchResult",
    "OutputLayout",
    "PartResult",
    "add_recommend_arguments",
    "run_batch",
    "run_recommend_job",
]
