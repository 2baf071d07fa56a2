"""Fixtures of the serving unit tests: a tiny fitted artifact and TestClient factories.

The artifact is real (``Pipeline.fit`` + ``save``) on 30 users x 20 items with string ids,
built once per session. Clients run inside ``with`` so the lifespan loads the artifact.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recsys.pipeline import Pipeline
from recsys.serving import Settings, create_app

ADMIN_KEY = "test-admin-key"
GENRES = ["Comedy", "Drama", "Action|Comedy", "Horror", "Drama|Romance"]


def tiny_frames(
    seed: int = 7, n_users: int = 30, n_items: int = 20
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Block-structured interactions: user ``u`` mostly likes items near ``2u mod n_items``.

    Users are ``"u00"..``, plus user ``"007"`` (an id that must stay a string); items are
    ``"i00"..`` with titles and ``|``-separated genres.
    """
    rng = np.random.default_rng(seed)
    users = [f"u{u:02d}" for u in range(n_users - 1)] + ["007"]
    rows = []
    for u, user in enumerate(users):
        base = (2 * u) % n_items
        picks = {(base + j) % n_items for j in range(5)}
        picks |= set(rng.choice(n_items, size=2, replace=False).tolist())
        for t, i in enumerate(sorted(picks)):
            rows.append((user, f"i{i:02d}", float(rng.integers(1, 6)), 1_700_000_000 + 60 * t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    interactions["rating"] = interactions["rating"].astype(np.float32)
    interactions["timestamp"] = interactions["timestamp"].astype(np.int64)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:02d}" for i in range(n_items)],
            "title": [f"Item number {i}" for i in range(n_items)],
            "genres": [GENRES[i % len(GENRES)] for i in range(n_items)],
        }
    )
    return interactions, items


def fit_artifact(path: Path, interactions: pd.DataFrame, items: pd.DataFrame) -> Path:
    """Fit the default pipeline and save it to ``path``."""
    user_ids = interactions["user_id"].unique()
    users = pd.DataFrame({"user_id": user_ids, "age": np.arange(len(user_ids)) % 50 + 18})
    pipe = Pipeline.fit(interactions, items=items, users=users, show_progress=False)
    pipe.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tiny interactions and items frames."""
    return tiny_frames()


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_data: Any) -> Path:
    """A saved artifact of the tiny data (do not modify: copy it first)."""
    interactions, items = tiny_data
    return fit_artifact(tmp_path_factory.mktemp("serving") / "artifact", interactions, items)


@pytest.fixture(scope="session")
def other_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_data: Any) -> Path:
    """A second artifact trained on different data (so another version)."""
    interactions, items = tiny_data
    return fit_artifact(
        tmp_path_factory.mktemp("serving-other") / "artifact", interactions.iloc[10:], items
    )


@pytest.fixture
def artifact_copy(tiny_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny artifact, safe to damage."""
    return Path(shutil.copytree(tiny_artifact, tmp_path / "artifact-copy"))


@pytest.fixture
def make_client(tiny_artifact: Path, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Factory of started TestClients; settings default to the tiny artifact, a private
    events log and the admin key. Every client is closed at teardown."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        params: dict[str, Any] = {
            "artifact": tiny_artifact,
            "events_log": tmp_path / "events.jsonl",
            "admin_key": ADMIN_KEY,
        }
        params.update(overrides)
        client = TestClient(create_app(Settings(**params)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A started client over the tiny artifact."""
    return make_client()


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    """Headers that pass the admin check of clients made by ``make_client``."""
    return {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_artifact: Path) -> Pipeline:
    """The tiny artifact loaded directly (the oracle of the API answers)."""
    return Pipeline.load(tiny_artifact)
