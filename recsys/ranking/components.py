"""Building and fitting the components a configuration names (shared by the pipeline and the
hybrid ranker's training scheme).

Components are built from ``[models.<name>]`` by the model registry. Fitting passes each
model what its ``fit`` asks for beyond the training data: ``documents`` (the feature
store's item documents, for content models such as Doc2Vec) and ``features`` (the feature
store itself, for models that read attributes or behaviour sequences, such as DeepFM and
DIN). Rating-only components are left out, with a warning, when the data has no ratings
and the caller allows it; so are components whose training fails, when the caller asks for
that (the default pipeline does: one component must not take the whole pipeline down, #14).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import RecsysConfig
from recsys.types import TrainingData

__all__ = ["build_component", "fit_components", "requires_ratings", "training_frame"]

logger = logging.getLogger(__name__)

#: Components whose training needs explicit ratings. A model class can declare it itself
#: with a ``requires_ratings`` class attribute, which takes precedence.
_RATING_COMPONENTS = frozenset({"svdpp"})


def build_component(name: str, config: RecsysConfig) -> Any:
    """An unfitted component from its ``[models.<name>]`` table (device from ``[training]``)."""
    from recsys.models import get_model_class

    model_cls = get_model_class(name)
    params = config.model_params(name)
    if "device" in model_cls.Config.model_fields:
        params.setdefault("device", config.training.device)
    return model_cls(**params)


def requires_ratings(name: str) -> bool:
    """Whether component ``name`` can only be trained on explicit ratings."""
    from recsys.models import get_model_class

    declared = getattr(get_model_class(name), "requires_ratings", None)
    return bool(declared) if declared is not None else name in _RATING_COMPONENTS


def fit_components(
    names: Sequence[str],
    data: TrainingData,
    config: RecsysConfig,
    *,
    store: Any | None = None,
    show_progress: bool = True,
    skip_unrated: bool = True,
    skip_failed: bool = False,
) -> tuple[dict[str, Any], dict[str, float], dict[str, str]]:
    """Build and fit components in order.

    Parameters
    ----------
    names
        Component names.
    data
        Training data.
    config
        The configuration (hyperparameters, device, seed).
    store
        The feature store of ``data`` (for models that take ``documents`` or ``features``).
    show_progress
        Progress bars of the models.
    skip_unrated
        Leave rating-only components out (with a warning) when ``data`` has no ratings;
        otherwise their ``fit`` raises.
    skip_failed
        Leave a component out (with a warning, and the error as the reason) when its
        ``fit`` raises; otherwise the error propagates. For components the user did not
        name: a component named explicitly fails loudly.

    Returns
    -------
    fitted : dict
        Name -> fitted model, in the order of ``names`` (skipped ones absent).
    seconds : dict
        Name -> fit time.
    skipped : dict
        Name -> why it was left out.
    """
    fitted: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if skip_unrated and data.rating is None and requires_ratings(name):
            reason = "needs explicit ratings; the training data has none"
            logger.warning("skipping component=%s: %s", name, reason)
            skipped[name] = reason
            continue
        model = build_component(name, config)
        kwargs: dict[str, Any] = {}
        params = inspect.signature(model.fit).parameters
        if store is not None and "documents" in params:
            kwargs["documents"] = store.item_documents()
        if store is not None and "features" in params:
            kwargs["features"] = store
        logger.info("training component=%s n_interactions=%d", name, data.n_interactions)
        t0 = time.perf_counter()
        try:
            fitted[name] = model.fit(data, show_progress=show_progress, **kwargs)
        except Exception as exc:  # any failure: the component is optional here (#14)
            if not skip_failed:
                raise
            reason = f"training failed: {_first_line(exc)}"
            logger.warning("skipping component=%s: %s", name, reason)
            skipped[name] = reason
            continue
        seconds[name] = time.perf_counter() - t0
    return fitted, seconds, skipped


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for a log line or a manifest."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def training_frame(data: TrainingData) -> pd.DataFrame:
    """The interactions of ``data`` as a frame of the file contract (external ids)."""
    frame = pd.DataFrame(
        {
            "user_id": data.user_map.to_ids(data.user_idx),
            "item_id": data.item_map.to_ids(data.item_idx),
        }
    )
    if data.rating is not None:
        frame["rating"] = data.rating.astype(np.float32)
    if data.timestamp is not None:
        frame["timestamp"] = data.timestamp.astype(np.int64)
    return frame
