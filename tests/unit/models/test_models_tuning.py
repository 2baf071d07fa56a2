"""recsys.tuning: validation split carved from training data, search, result files."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.errors import ConfigError, DataError, DataWarning
from recsys.models import MODEL_REGISTRY
from recsys.testing.datasets import block_dataset, block_frame
from recsys.tuning import DEFAULT_GRIDS, TuningResult, tune
from recsys.types import TrainingData


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return block_frame(n_blocks=3, users_per_block=20, items_per_block=10, noise=0.25, seed=0)


def test_every_classical_model_is_registered_with_a_default_grid() -> None:
    for name in ("bpr", "als", "itemknn", "userknn", "ease"):
        assert name in MODEL_REGISTRY
        assert set(DEFAULT_GRIDS[name]) <= set(MODEL_REGISTRY[name].Config.model_fields)


def test_picks_the_configuration_that_wins_on_validation(frame: pd.DataFrame) -> None:
    # One neighbour per item cannot cover a 10-item block; 30 can.
    result = tune("itemknn", frame, grid={"n_neighbors": [1, 30]})
    assert result.best_params == {"n_neighbors": 30}
    scores = result.trials.set_index("n_neighbors")["ndcg@10"]
    assert scores[30] > scores[1]
    assert result.best_score == pytest.approx(scores[30])
    assert list(result.trials["status"]) == ["ok", "ok"]


def test_validation_is_the_last_fifth_of_each_users_training_rows(frame: pd.DataFrame) -> None:
    result = tune("popular", frame, val_frac=0.2)
    n_u = frame.groupby("user_id").size().to_numpy()
    expected_val = np.where(n_u < 2, 0, np.maximum(1, np.floor(0.2 * n_u + 1e-9))).sum()
    assert result.split["n_validation"] == expected_val
    assert result.split["n_fit"] + result.split["n_validation"] == len(frame)
    assert result.split["n_validation_users"] == frame["user_id"].nunique()


def test_training_data_input_equals_frame_input(frame: pd.DataFrame) -> None:
    data = TrainingData.from_frame(frame)
    a = tune("ease", frame, grid={"reg": [1.0, 50.0]})
    b = tune("ease", data, grid={"reg": [1.0, 50.0]})
    np.testing.assert_allclose(a.trials["ndcg@10"], b.trials["ndcg@10"])
    assert a.best_params == b.best_params


def test_samples_n_trials_reproducibly(frame: pd.DataFrame) -> None:
    grid: dict[str, list[Any]] = {"n_neighbors": [2, 5, 10, 20], "shrinkage": [0.0, 5.0]}
    a = tune("itemknn", frame, grid=grid, n_trials=3, seed=1)
    b = tune("itemknn", frame, grid=grid, n_trials=3, seed=1)
    assert len(a.trials) == 3
    pd.testing.assert_frame_equal(
        a.trials[["n_neighbors", "shrinkage"]], b.trials[["n_neighbors", "shrinkage"]]
    )


def test_rejected_combinations_are_recorded_not_fatal(frame: pd.DataFrame) -> None:
    grid: dict[str, list[Any]] = {"similarity": ["bm25", "cosine"], "shrinkage": [0.0, 10.0]}
    result = tune("itemknn", frame, grid=grid)
    keys = zip(result.trials["similarity"], result.trials["shrinkage"], strict=True)
    statuses = dict(zip(keys, result.trials["status"], strict=True))
    assert statuses[("bm25", 10.0)].startswith("invalid:")
    assert sum(s == "ok" for s in statuses.values()) == 3
    assert result.best_params["similarity"] in ("bm25", "cosine")


def test_base_params_apply_to_every_trial(frame: pd.DataFrame) -> None:
    result = tune(
        "als",
        frame,
        grid={"embedding_dim": [3]},
        base_params={"num_threads": 1, "epochs": 3},
    )
    assert result.best_params == {"num_threads": 1, "epochs": 3, "embedding_dim": 3}


def test_write_toml_and_json(frame: pd.DataFrame, tmp_path: Path) -> None:
    result = tune("itemknn", frame, grid={"n_neighbors": [5, 30], "similarity": ["tfidf"]})
    toml = tomllib.loads(result.write(tmp_path / "best.toml").read_text())
    assert toml == {"models": {"itemknn": result.best_params}}
    payload = json.loads(result.write(tmp_path / "best.json").read_text())
    assert payload["best_params"] == result.best_params
    assert payload["metric"] == "ndcg@10" and len(payload["trials"]) == 2
    with pytest.raises(ConfigError, match=r"\.yaml"):
        result.write(tmp_path / "best.yaml")


def test_other_metric(frame: pd.DataFrame) -> None:
    result = tune("ease", frame, grid={"reg": [1.0]}, metric="recall@5")
    assert isinstance(result, TuningResult) and "recall@5" in result.trials
    assert result.best_score == pytest.approx(result.trials["recall@5"].iloc[0])


def test_without_timestamps_row_order_is_time(frame: pd.DataFrame) -> None:
    untimed = frame.sort_values("timestamp").drop(columns="timestamp")
    with pytest.warns(DataWarning, match="row order"):
        result = tune("popular", untimed)
    assert result.split["n_validation"] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_name": "nope"}, "unknown model"),
        ({"model_name": "ease", "grid": {"lambda": [1.0]}}, "no hyperparameter"),
        ({"model_name": "ease", "grid": {"reg": []}}, "non-empty list"),
        ({"model_name": "ease", "metric": "auc"}, "metric"),
        ({"model_name": "ease", "n_trials": 0}, "n_trials"),
        ({"model_name": "ease", "grid": {"reg": [-1.0]}}, "rejected"),
    ],
)
def test_bad_requests_are_config_errors(
    frame: pd.DataFrame, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        tune(data=frame, **kwargs)  # type: ignore[arg-type]


def test_no_default_grid_for_unknown_search_space(
    frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(DEFAULT_GRIDS, "ease")
    with pytest.raises(ConfigError, match="pass grid="):
        tune("ease", frame)


def test_users_with_a_single_interaction_leave_nothing_to_validate() -> None:
    single = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 2, 1], "timestamp": [1, 2, 3]})
    with pytest.raises(DataError, match="at least 2 interactions"):
        tune("popular", single)


def test_empty_data_is_a_data_error() -> None:
    empty = pd.DataFrame({"user_id": [], "item_id": [], "timestamp": []})
    with pytest.raises(DataError, match="empty"):
        tune("popular", empty)
    with pytest.raises(DataError, match="DataFrame or TrainingData"):
        tune("popular", [("u", "i")])  # type: ignore[arg-type]


def test_block_data_defaults_run_for_every_model() -> None:
    data = block_dataset(seed=0)
    for name in ("itemknn", "userknn", "ease"):
        result = tune(name, data, n_trials=2)
        assert len(result.trials) == 2 and result.best_score > 0
