"""The ranking stage: the hybrid ranker over every component's scores and the feature store.

:class:`HybridRecommender` composes retrieval (:mod:`recsys.retrieval`) and the
:class:`HybridRanker` through configuration; :class:`Ranker` is the stage protocol.
"""

from __future__ import annotations

from recsys.ranking.blend import reciprocal_rank_blend
from recsys.ranking.features import FeatureBuilder, check_feature_schema
from recsys.ranking.hybrid import HybridRanker, HybridRecommender, Ranker, label_slice
from recsys.ranking.learners import LogisticLearner, TreeEnsemble, load_learner

__all__ = [
    "FeatureBuilder",
    "HybridRanker",
    "HybridRecommender",
    "LogisticLearner",
    "Ranker",
    "TreeEnsemble",
    "check_feature_schema",
    "label_slice",
    "load_learner",
    "reciprocal_rank_blend",
]
