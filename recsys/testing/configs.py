"""Small configurations that train the whole two-stage pipeline in seconds.

The default configuration (:class:`recsys.config.RecsysConfig`) trains every classical
component, Doc2Vec and SVD++ under the hybrid ranker: about half a minute on MovieLens
100K. Tests and examples that need *a* hybrid artifact, not the best one, use
:func:`small_hybrid_config`: the same stages (candidate sources, co-visitation, the
learned ranker, popularity for cold start) over the fastest components.
"""

from __future__ import annotations

from typing import Any

from recsys.config import RecsysConfig, load_config

__all__ = ["small_hybrid_config"]


def small_hybrid_config(**sections: Any) -> RecsysConfig:
    """A fast hybrid configuration: item-KNN, EASE and popularity under a small ranker.

    Parameters
    ----------
    **sections
        Config sections whose keys override the small defaults, e.g.
        ``pipeline={"candidates": 50}`` or ``models={"itemknn": {"n_neighbors": 20}}``.

    Examples
    --------
    >>> cfg = small_hybrid_config(pipeline={"candidates": 50})
    >>> cfg.pipeline.hybrid, cfg.pipeline.candidates, cfg.pipeline.retrievers
    (True, 50, ['itemknn', 'ease', 'popular'])
    """
    base: dict[str, dict[str, Any]] = {
        "pipeline": {
            "retrievers": ["itemknn", "ease", "popular"],
            "rankers": [],
            "candidates": 100,
            "hybrid": True,
        },
        "ranker": {"max_iter": 50, "max_train_users": 500},
    }
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return load_config(None, **base)
