"""Hyperparameter search on a validation split carved from the training data.

:func:`tune` never sees test data: it splits the *training* interactions it is given per
user in time (the last ``val_frac`` of each user's interactions, as the Top-N protocol
does for test), fits every configuration on the earlier part, ranks the full catalogue
for the validation users and keeps the configuration with the best validation metric.
The result writes the chosen hyperparameters as a TOML (``[models.<name>]``) or JSON file.

Example::

    from recsys.data import load_dataset, temporal_user_split
    from recsys.tuning import tune

    train = temporal_user_split(load_dataset("ml-100k").interactions, 0.2).train
    result = tune("als", train, n_trials=20)
    result.best_params            # {'alpha': 1.0, 'embedding_dim': 128, 'epochs': 15, ...}
    result.write("als.toml")
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.data.splits import temporal_user_split
from recsys.errors import ConfigError, DataError, DataWarning
from recsys.eval.runner import evaluate_model
from recsys.models import get_model_class
from recsys.types import TrainingData

__all__ = ["DEFAULT_GRIDS", "TuningResult", "tune"]

logger = logging.getLogger(__name__)

ParamValue = int | float | str | bool

#: Search spaces used when :func:`tune` gets no ``grid``. Combinations a model rejects
#: (e.g. ``shrinkage`` with BM25) are recorded as invalid trials and skipped.
DEFAULT_GRIDS: dict[str, dict[str, list[ParamValue]]] = {
    "popular": {},
    "itemknn": {
        "n_neighbors": [10, 20, 50, 100, 200, 400],
        "similarity": ["cosine", "tfidf", "bm25"],
        "shrinkage": [0.0, 10.0, 50.0],
    },
    "userknn": {
        "n_neighbors": [10, 20, 50, 100, 200, 400],
        "similarity": ["cosine", "tfidf", "bm25"],
        "shrinkage": [0.0, 10.0, 50.0],
    },
    "ease": {"reg": [10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0]},
    "als": {
        "embedding_dim": [32, 64, 128],
        "reg": [0.1, 1.0, 10.0, 30.0, 100.0],
        "alpha": [1.0, 2.0, 5.0, 10.0],
        "epochs": [15],
    },
    "bpr": {
        "embedding_dim": [32, 64, 128],
        "learning_rate": [0.005, 0.01, 0.05],
        "reg": [0.001, 0.01, 0.1],
        "epochs": [50, 100, 200],
    },
}


@dataclass
class TuningResult:
    """What :func:`tune` found.

    Stability: provisional

    Attributes
    ----------
    model
        Component name (``"als"``, ...).
    metric
        The metric maximised, e.g. ``"ndcg@10"``.
    best_params
        Hyperparameters of the best trial: the searched ones plus ``base_params``.
    best_score
        Its validation metric.
    trials
        One row per trial: a column per searched hyperparameter, the accuracy metrics at
        the metric's cut-off, ``fit_s``, ``eval_s`` and ``status`` (``"ok"`` or the reason
        the configuration was rejected).
    split
        Sizes of the fit/validation split (``n_fit``, ``n_validation``,
        ``n_validation_users``, ``val_frac``) and the ``seed``.
    """

    model: str
    metric: str
    best_params: dict[str, ParamValue]
    best_score: float
    trials: pd.DataFrame
    split: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path) -> Path:
        """Write the chosen hyperparameters to ``path`` (``.toml`` or ``.json``).

        TOML holds one ``[models.<name>]`` table (the config-file layout) with the
        search summary in comments; JSON also holds every trial.

        Raises
        ------
        ConfigError
            Any other suffix.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".toml":
            lines = [
                f"# recsys tune: model={self.model} {self.metric}={self.best_score:.6f} on a "
                f"per-user temporal validation split (val_frac={self.split.get('val_frac')}, "
                f"{len(self.trials)} trials)",
                f"[models.{self.model}]",
            ]
            lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(self.best_params.items())]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        elif suffix == ".json":
            payload = {
                "model": self.model,
                "metric": self.metric,
                "best_score": self.best_score,
                "best_params": self.best_params,
                "split": self.split,
                "trials": json.loads(self.trials.to_json(orient="records")),
            }
            path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        else:
            raise ConfigError(
                f"TuningResult.write: unsupported file type {path.suffix!r} for {path}; "
                "use .toml or .json"
            )
        return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string (JSON escapes are valid TOML)


def _as_frame(data: pd.DataFrame | TrainingData) -> pd.DataFrame:
    """Interactions as a contract frame; row order stands in for time when there is none."""
    if isinstance(data, TrainingData):
        frame = pd.DataFrame(
            {
                "user_id": data.user_map.to_ids(data.user_idx),
                "item_id": data.item_map.to_ids(data.item_idx),
            }
        )
        if data.rating is not None:
            frame["rating"] = data.rating
        if data.timestamp is not None:
            frame["timestamp"] = data.timestamp
    elif isinstance(data, pd.DataFrame):
        missing = [c for c in ("user_id", "item_id") if c not in data.columns]
        if missing:
            raise DataError(
                f"tune: the interactions frame lacks column(s) {', '.join(map(repr, missing))}"
            )
        frame = data
    else:
        raise DataError(
            f"tune: data must be a pandas DataFrame or TrainingData, got {type(data).__name__}"
        )
    if frame.empty:
        raise DataError("tune: the training data is empty; nothing to tune on")
    if "timestamp" not in frame.columns:
        warnings.warn(
            "tune: the data has no timestamps, so each user's row order is taken as time "
            "order for the validation split",
            DataWarning,
            stacklevel=3,
        )
        frame = frame.assign(timestamp=np.arange(len(frame), dtype=np.int64))
    return frame


def _trials(
    grid: Mapping[str, Sequence[ParamValue]], n_trials: int, seed: int
) -> list[dict[str, ParamValue]]:
    names = sorted(grid)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(
        *(list(grid[name]) for name in names)
    )]  # fmt: skip
    if len(combos) <= n_trials:
        return combos
    pick = np.random.default_rng(seed).choice(len(combos), size=n_trials, replace=False)
    return [combos[i] for i in sorted(pick)]


def _check_grid(
    model_name: str, grid: Mapping[str, Sequence[ParamValue]], fields: Sequence[str]
) -> None:
    unknown = sorted(set(grid) - set(fields))
    if unknown:
        raise ConfigError(
            f"tune: {model_name} has no hyperparameter(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(fields))}"
        )
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(
                f"tune: grid[{name!r}] must be a non-empty list of values, got {values!r}"
            )


def tune(
    model_name: str,
    data: pd.DataFrame | TrainingData,
    *,
    grid: Mapping[str, Sequence[ParamValue]] | None = None,
    n_trials: int = 20,
    seed: int = 42,
    metric: str = "ndcg@10",
    val_frac: float = 0.2,
    base_params: Mapping[str, ParamValue] | None = None,
    show_progress: bool = False,
) -> TuningResult:
    """Pick hyperparameters of a registered model on a validation split of training data.

    Stability: provisional

    Parameters
    ----------
    model_name
        A name of :data:`recsys.models.MODEL_REGISTRY` (``"bpr"``, ``"als"``, ...).
    data
        *Training* interactions only (a contract frame or :class:`TrainingData`); pass
        the train part of your split, never the test part. Per user, the last
        ``max(1, floor(val_frac * n_u))`` interactions by ``(timestamp, item_id)`` become
        validation; users with a single interaction stay in the fit part. Without
        timestamps each user's row order is taken as time order (with a warning).
    grid
        Hyperparameter -> candidate values; default :data:`DEFAULT_GRIDS` for the model.
    n_trials
        Most configurations to evaluate: the whole grid when it is no larger, else a
        seeded random sample of it.
    seed
        Seed of the sampling and of every fitted model (unless the grid searches
        ``seed`` itself).
    metric
        Key of :func:`recsys.eval.evaluate_model` to maximise, ``"<name>@<k>"`` with name
        one of precision, recall, f1, ndcg, map, hit_rate, mrr.
    val_frac
        Share of each user's interactions held out for validation, in (0, 1).
    base_params
        Fixed hyperparameters applied to every trial (e.g. ``{"num_threads": 2}``).
    show_progress
        Show a progress bar over the trials.

    Returns
    -------
    TuningResult
        The best parameters, its score and the table of every trial.

    Raises
    ------
    ConfigError
        Unknown model, hyperparameter or metric; an empty grid value; every trial invalid.
    DataError
        Empty data, or no user with two interactions (so no validation split).
    """
    cls = get_model_class(model_name)
    fields = list(cls.Config.model_fields)
    if grid is None:
        if model_name not in DEFAULT_GRIDS:
            raise ConfigError(
                f"tune: no default search space for model {model_name!r}; pass grid= "
                f"(models with one: {', '.join(sorted(DEFAULT_GRIDS))})"
            )
        grid = DEFAULT_GRIDS[model_name]
    _check_grid(model_name, grid, fields)
    base = dict(base_params or {})
    _check_grid(model_name, {k: [v] for k, v in base.items()}, fields)
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"tune: n_trials must be an integer >= 1, got {n_trials!r}")
    name, _, cut = metric.partition("@")
    if name not in ("precision", "recall", "f1", "ndcg", "map", "hit_rate", "mrr") or (
        not cut.isdigit() or int(cut) < 1
    ):
        raise ConfigError(
            f"tune: metric must look like 'ndcg@10' (precision, recall, f1, ndcg, map, "
            f"hit_rate or mrr at a positive cut-off), got {metric!r}"
        )
    k = int(cut)

    frame = _as_frame(data)
    split = temporal_user_split(frame, val_frac)
    if split.test.empty:
        raise DataError(
            "tune: no user has at least 2 interactions, so no validation split can be "
            f"carved from the {len(frame)} training rows; tune on more data"
        )
    if isinstance(data, TrainingData):
        user_map, item_map = data.user_map, data.item_map
    else:
        full = TrainingData.from_frame(frame)
        user_map, item_map = full.user_map, full.item_map
    fit_data = TrainingData.from_frame(split.train, user_map=user_map, item_map=item_map)
    validation = split.test[["user_id", "item_id"]]
    split_info = {
        "n_fit": len(split.train),
        "n_validation": len(split.test),
        "n_validation_users": int(split.test["user_id"].nunique()),
        "val_frac": val_frac,
        "seed": seed,
    }

    configs = _trials(grid, n_trials, seed)
    rows: list[dict[str, Any]] = []
    for trial in tqdm(configs, desc=f"tune {model_name}", disable=not show_progress):
        params: dict[str, Any] = {**base, **trial}
        if "seed" in fields and "seed" not in params:
            params["seed"] = seed
        row: dict[str, Any] = dict(trial)
        try:
            model = cls(**params)
        except ConfigError as exc:
            row["status"] = f"invalid: {exc}"
            rows.append(row)
            continue
        start = time.perf_counter()
        model.fit(fit_data, show_progress=False)
        row["fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = evaluate_model(model, fit_data, validation, (k,), diversity=False)
        row["eval_s"] = time.perf_counter() - start
        for key in ("precision", "recall", "ndcg", "map", "hit_rate", "mrr", "f1"):
            row[f"{key}@{k}"] = scores[f"{key}@{k}"]
        row["status"] = "ok"
        rows.append(row)
        logger.info(
            "tune model=%s params=%s %s=%.5f fit_s=%.2f",
            model_name,
            trial,
            metric,
            row[metric],
            row["fit_s"],
        )
    trials = pd.DataFrame(rows)
    ok = trials[trials["status"] == "ok"] if len(trials) else trials
    if ok.empty:
        reasons = "; ".join(trials["status"].head(3)) if len(trials) else "no trials"
        raise ConfigError(f"tune: every configuration of {model_name} was rejected: {reasons}")
    best = int(ok[metric].to_numpy().argmax())
    best_trial = configs[int(ok.index[best])]
    best_params = {**base, **{key: _plain(value) for key, value in best_trial.items()}}
    return TuningResult(
        model=model_name,
        metric=metric,
        best_params=best_params,
        best_score=float(ok[metric].iloc[best]),
        trials=trials,
        split=split_info,
    )


def _plain(value: Any) -> ParamValue:
    """numpy scalars to Python ones, so results serialise cleanly."""
    return value.item() if isinstance(value, np.generic) else value  # type: ignore[no-any-return]
