"""``recsys finetune``: a pipeline artifact with deepfm and din components is fine-tuned on
new interactions (new users and items among them) and written as a new artifact that loads,
recommends for the new users and keeps the old artifact intact."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.config import load_config
from recsys.errors import ConfigError
from recsys.finetune import add_finetune_parser, finetune, load_ctr_model
from recsys.pipeline import Pipeline
from recsys.testing import block_frame

pytestmark = pytest.mark.integration

SMALL = {"epochs": 2, "embedding_dim": 4, "hidden_units": [8], "device": "cpu"}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_finetune_parser(parser.add_subparsers())
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("finetune")
    frame = block_frame(n_blocks=3, users_per_block=10, items_per_block=8, noise=0.5, seed=1)
    old, new = frame.iloc[:100], frame.iloc[100:].copy()
    t = int(frame["timestamp"].max())
    extra = pd.DataFrame(
        {
            "user_id": ["u99", "u99"],
            "item_id": ["i005", "i99"],
            "rating": [5.0, 4.0],
            "timestamp": [t + 5, t + 6],
        }
    )
    new = pd.concat([new, extra], ignore_index=True)
    config = load_config(models={"deepfm": SMALL, "din": {**SMALL, "attention_units": [4]}})
    pipe = Pipeline.fit(
        old, models=["deepfm", "din", "popular"], config=config, show_progress=False
    )
    pipe.save(tmp / "art")
    new.to_csv(tmp / "new.csv", index=False)
    return {"dir": tmp, "art": tmp / "art", "new": tmp / "new.csv"}


def test_finetune_command_writes_a_working_artifact(artifact: dict[str, Path]) -> None:
    out = artifact["dir"] / "art2"
    # through the recsys console entry point, as a user runs it
    code = main(
        [
            "finetune",
            "--artifact",
            str(artifact["art"]),
            "--interactions",
            str(artifact["new"]),
            "--out",
            str(out),
            "--epochs",
            "1",
        ]
    )
    assert code == 0
    old = Pipeline.load(artifact["art"])
    tuned = Pipeline.load(out)
    assert tuned.components == old.components
    info = tuned.manifest["metrics"]["finetune"]
    assert info["components"] == ["deepfm", "din"] and info["rows"] == 82
    assert len(tuned.user_map) > len(old.user_map) and "u99" in set(tuned.user_map.ids)
    assert "i99" in set(tuned.item_map.ids)
    for name in ("deepfm", "din"):
        recs = tuned.recommend(["u99"], k=3, model=name)
        assert list(recs["sources"]) == [name] * 3
        assert tuned.models[name].n_users == len(tuned.user_map)
        assert tuned.models[name].history_[-1]["finetune"] == 1.0
    # the artifact's feature store now knows the new events
    assert tuned.features is not None and tuned.features.n_appended == 82
    # popular is untouched: the new user still gets its cold-start answer there
    assert list(tuned.recommend(["u99"], k=2, model="popular")["sources"]) == ["popular"] * 2


def test_finetune_command_rejects_other_components(
    artifact: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "finetune",
                "--artifact",
                str(artifact["art"]),
                "--interactions",
                str(artifact["new"]),
                "--out",
                str(artifact["dir"] / "x"),
                "--models",
                "popular",
            ]
        )
        == 1
    )
    assert "popular" in capsys.readouterr().err
    args = _parse(["finetune", "--artifact", "a", "--interactions", "b", "--out", "c"])
    args.models = "popular"
    args.artifact = artifact["art"]
    args.interactions = artifact["new"]
    with pytest.raises(ConfigError, match="popular"):
        args.func(args)


def test_finetune_a_saved_model_directory(artifact: dict[str, Path]) -> None:
    new = pd.read_csv(artifact["new"], dtype={"user_id": str, "item_id": str})
    model_dir = artifact["art"] / "models" / "deepfm"
    before = load_ctr_model(model_dir)
    out = artifact["dir"] / "deepfm_tuned"
    tuned = finetune(model_dir, new, mode="top", epochs=1, out=out, show_progress=False)
    assert tuned.n_users == before.n_users + 1
    again = load_ctr_model(out)
    users = np.arange(5)
    np.testing.assert_array_equal(again.score(users, users), tuned.score(users, users))
