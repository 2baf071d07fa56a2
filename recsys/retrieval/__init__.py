"""The retrieval stage: FAISS indexes over item embeddings and multi-source candidate generation.

:class:`CandidateGenerator` turns :class:`Queries` into a :class:`CandidateSet` (ids,
per-source ranks and scores, provenance); :class:`Retriever` is the stage protocol.
"""

from __future__ import annotations

from recsys.retrieval.candidates import CandidateSet, Queries, SourceList
from recsys.retrieval.covisit import CoVisitation
from recsys.retrieval.index import IndexConfig, ItemIndex, exact_search
from recsys.retrieval.sources import (
    COLD_START_SOURCE,
    COVISIT_SOURCE,
    CandidateGenerator,
    FoldInVectors,
    Retriever,
    SourceSpec,
    plan_sources,
)

__all__ = [
    "COLD_START_SOURCE",
    "COVISIT_SOURCE",
    "CandidateGenerator",
    "CandidateSet",
    "CoVisitation",
    "FoldInVectors",
    "IndexConfig",
    "ItemIndex",
    "Queries",
    "Retriever",
    "SourceList",
    "SourceSpec",
    "exact_search",
    "plan_sources",
]
