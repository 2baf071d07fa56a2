"""Fixtures of the batch-job tests: a small saved artifact with a factor model and baselines."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import load_config
from recsys.data import generate_synthetic
from recsys.models import ALS, ItemKNN, Popular
from recsys.pipeline import Pipeline
from recsys.types import TrainingData


def build_artifact(path: Path, *, string_ids: bool, n_users: int = 240, n_items: int = 90) -> Path:
    """Fit ALS, item-KNN and popularity on a seeded synthetic set and save the artifact."""
    ds = generate_synthetic(
        n_users,
        n_items,
        n_users * 12,
        seed=7,
        string_ids=string_ids,
        with_items=False,
        with_users=False,
    )
    data = TrainingData.from_frame(ds.interactions)
    models = {
        "als": ALS(embedding_dim=8, epochs=2, num_threads=1).fit(data, show_progress=False),
        "itemknn": ItemKNN().fit(data, show_progress=False),
        "popular": Popular().fit(data, show_progress=False),
    }
    pipe = Pipeline(load_config(), data.user_map, data.item_map, models)
    pipe.save(path)
    return path


@pytest.fixture(scope="package")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact with string ids (``"u0007"``): components als (primary), itemknn, popular."""
    return build_artifact(tmp_path_factory.mktemp("art") / "model", string_ids=True)


@pytest.fixture(scope="package")
def int_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of artifact with integer ids."""
    return build_artifact(tmp_path_factory.mktemp("art_int") / "model", string_ids=False)


@pytest.fixture(scope="package")
def pipeline(artifact: Path) -> Pipeline:
    """The string-id artifact, loaded."""
    return Pipeline.load(artifact)
