"""TOML configuration: defaults, unknown keys and invalid values are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import load_config
from recsys.errors import ConfigError


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    cfg = load_config()
    assert cfg.pipeline.retrievers[0] == "itemknn"
    assert cfg.components()[-1] == "popular"
    assert cfg.training.seed == 42
    assert cfg.model_params("itemknn")["seed"] == 42


def test_values_are_read(tmp_path: Path) -> None:
    cfg = load_config(
        _toml(
            tmp_path,
            '[pipeline]\nretrievers = ["popular"]\nrankers = []\n'
            "[models.itemknn]\nn_neighbors = 7\n",
        )
    )
    assert cfg.components() == ["popular"]
    assert cfg.model_params("itemknn")["n_neighbors"] == 7


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[pipeline]\nretreivers = ['x']\n", "pipeline.retreivers: Extra inputs"),
        ("[nonsense]\na = 1\n", "nonsense"),
        ("[models.itemknn]\nn_neighbors = 0\n", r"\[models.itemknn\]: n_neighbors"),
        ("[models.itemknn]\nbogus = 1\n", "bogus"),
        ("[pipeline]\nretrievers = ['no-such-model']\n", "unknown model 'no-such-model'"),
        ("[pipeline]\nretrievers = []\n", "at least one"),
        ("[pipeline\n", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_toml(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_the_contract_example_config_loads(tmp_path: Path) -> None:
    # the configuration shown in ARCHITECTURE.md's CLI contract, verbatim
    text = (
        '[pipeline]\nretrievers = ["bpr", "itemknn", "doc2vec", "popular"]\ncandidates = 200\n'
        'rankers = ["deepfm", "din"]\nhybrid = true\n[models.bpr]\nfactors = 64\n'
        '[training]\ndevice = "auto"\nseed = 42\n'
    )
    cfg = load_config(_toml(tmp_path, text))
    assert cfg.components() == ["bpr", "itemknn", "doc2vec", "deepfm", "din", "popular"]
    from recsys.models import BPR

    assert BPR(**cfg.model_params("bpr")).config.embedding_dim == 64  # "factors" is its alias
