"""Evaluation: vectorised metrics, runners for models and recommendation files, tables.

Top-N metrics follow the shared MovieLens protocol (full ranking, binary relevance,
averaged over users with at least one test item) and are reported under flat keys such
as ``"ndcg@10"``; see :mod:`recsys.eval.metrics` for the definitions.
"""

from __future__ import annotations

from recsys.eval.metrics import (
    average_popularity,
    average_precision_at_k,
    catalogue_coverage,
    ctr_metrics,
    f1_at_k,
    gauc,
    hit_matrix,
    hit_rate_at_k,
    intra_list_diversity,
    log_loss,
    mae,
    ndcg_at_k,
    novelty,
    precision_at_k,
    rating_metrics,
    recall_at_k,
    reciprocal_rank_at_k,
    rmse,
    roc_auc,
    topn_metrics,
)
from recsys.eval.runner import (
    evaluate_model,
    evaluate_models,
    evaluate_recommendations,
    genre_vectors,
    sampled_topn_metrics,
)
from recsys.eval.table import format_table

__all__ = [
    "average_popularity",
    "average_precision_at_k",
    "catalogue_coverage",
    "ctr_metrics",
    "evaluate_model",
    "evaluate_models",
    "evaluate_recommendations",
    "f1_at_k",
    "format_table",
    "gauc",
    "genre_vectors",
    "hit_matrix",
    "hit_rate_at_k",
    "intra_list_diversity",
    "log_loss",
    "mae",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "rating_metrics",
    "recall_at_k",
    "reciprocal_rank_at_k",
    "rmse",
    "roc_auc",
    "sampled_topn_metrics",
    "topn_metrics",
]
