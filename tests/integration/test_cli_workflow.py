"""The CLI as a user runs it: split, train, evaluate, recommend, bad input (real subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.testing.cli import run_cli as recsys

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small string-id dataset split and trained once for the module."""
    from recsys.data import generate_synthetic, write_dataset

    root = tmp_path_factory.mktemp("cli")
    ds = generate_synthetic(120, 60, 2500, seed=3, string_ids=True, iso_timestamps=True)
    write_dataset(ds, root / "raw", fmt="csv")
    recsys(
        "datasets",
        "split",
        "--interactions",
        root / "raw" / "interactions.csv",
        "--items",
        root / "raw" / "items.csv",
        "--method",
        "temporal",
        "--out",
        root / "data",
    )
    recsys(
        "train",
        "--interactions",
        root / "data" / "train.parquet",
        "--items",
        root / "data" / "items.parquet",
        "--out",
        root / "artifact",
    )
    return root


def test_split_writes_files_and_report(workdir: Path) -> None:
    report = json.loads((workdir / "data" / "split.json").read_text())
    train = pd.read_parquet(workdir / "data" / "train.parquet")
    test = pd.read_parquet(workdir / "data" / "test.parquet")
    assert report["n_train"] == len(train) and report["n_test"] == len(test)
    assert len(train) + len(test) == 2500
    assert train["user_id"].astype(str).str.startswith("u").all()  # string ids kept verbatim


def test_train_writes_verified_artifact(workdir: Path) -> None:
    manifest = json.loads((workdir / "artifact" / "manifest.json").read_text())
    assert "models/itemknn/state.npz" in manifest["files"]
    assert "features/manifest.json" in manifest["files"]
    assert manifest["data"]["n_users"] == 120


def test_evaluate_artifact_prints_table_and_json(workdir: Path) -> None:
    out = workdir / "metrics.json"
    proc = recsys(
        "evaluate",
        "--artifact",
        workdir / "artifact",
        "--test",
        workdir / "data" / "test.parquet",
        "--k",
        "5,10",
        "--json",
        out,
    )
    components = json.loads((workdir / "artifact" / "pipeline.json").read_text())["components"]
    assert "ndcg@10" in proc.stdout
    assert all(name in proc.stdout for name in components)
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["ndcg@10"] <= 1.0
    assert set(components) <= set(metrics["models"])


def test_recommend_then_evaluate_the_file(workdir: Path) -> None:
    recs_path = workdir / "recs.csv"
    recsys(
        "recommend",
        "--artifact",
        workdir / "artifact",
        "--all-users",
        "--k",
        "10",
        "--out",
        recs_path,
    )
    recs = pd.read_csv(recs_path)
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score", "sources"]
    assert recs.groupby("user_id").size().eq(10).all()
    assert recs["user_id"].nunique() == 120
    assert recs["sources"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
    train = pd.read_parquet(workdir / "data" / "train.parquet")
    seen = set(zip(train["user_id"], train["item_id"], strict=True))
    assert not any((u, i) in seen for u, i in zip(recs["user_id"], recs["item_id"], strict=True))
    out = workdir / "file_metrics.json"
    recsys(
        "evaluate",
        "--recs",
        recs_path,
        "--test",
        workdir / "data" / "test.parquet",
        "--train",
        workdir / "data" / "train.parquet",
        "--json",
        out,
    )
    from_file = json.loads(out.read_text())
    from_artifact = json.loads((workdir / "metrics.json").read_text())
    assert from_file["ndcg@10"] == pytest.approx(from_artifact["ndcg@10"], abs=1e-9)


def test_recommend_users_file_with_unknown_user(workdir: Path) -> None:
    users = workdir / "users.csv"
    pd.DataFrame({"user_id": ["u001", "nobody"]}).to_csv(users, index=False)
    out = workdir / "some.parquet"
    recsys(
        "recommend", "--artifact", workdir / "artifact", "--users", users, "--k", "3", "--out", out
    )
    recs = pd.read_parquet(out)
    sources = recs.groupby("user_id")["sources"].first().to_dict()
    assert sources["nobody"] == "popular"
    assert sources["u001"] != "popular"


def test_bad_rows_fail_with_one_line_naming_file_row_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,rating\nu1,i1,4\nu2,i2,not-a-number\n,i3,5\n")
    proc = recsys("train", "--interactions", bad, "--out", tmp_path / "a", ok=False)
    assert proc.returncode == 1
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("recsys: error: ") and "bad.csv" in first and "row" in first
    assert "Traceback" not in proc.stderr
    dropped = recsys(
        "train",
        "--interactions",
        bad,
        "--on-bad-rows",
        "drop",
        "--models",
        "popular",
        "--out",
        tmp_path / "a",
    )
    assert dropped.returncode == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["data"]["n_interactions"] == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["train", "--dataset", "ml-100k", "--models", "nope", "--out", "x"],
            "unknown model 'nope'",
        ),
        (["evaluate", "--artifact", "does-not-exist", "--test", "t.csv"], "t.csv"),
        (
            ["recommend", "--artifact", "does-not-exist", "--all-users", "--out", "r.parquet"],
            "does-not-exist",
        ),
    ],
)
def test_bad_input_exits_nonzero_with_message(args: list[str], needle: str) -> None:
    proc = recsys(*args, ok=False)
    assert proc.returncode == 1
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_damaged_artifact_is_refused(workdir: Path, tmp_path: Path) -> None:
    import shutil

    art = tmp_path / "art"
    shutil.copytree(workdir / "artifact", art)
    state = art / "models" / "itemknn" / "state.npz"
    state.write_bytes(state.read_bytes()[:-10] + b"0123456789")
    proc = recsys(
        "recommend", "--artifact", art, "--all-users", "--out", tmp_path / "r.parquet", ok=False
    )
    assert proc.returncode == 1
    assert "checksum mismatch" in proc.stderr and "models/itemknn/state.npz" in proc.stderr


def test_help_teaches() -> None:
    proc = recsys("--help")
    for word in ("train", "evaluate", "recommend", "datasets", "examples:"):
        assert word in proc.stdout


def test_tune_writes_a_config_that_train_accepts(workdir: Path, tmp_path: Path) -> None:
    best = tmp_path / "best.toml"
    proc = recsys(
        "tune",
        "--interactions",
        workdir / "data" / "train.parquet",
        "--model",
        "itemknn",
        "--trials",
        "2",
        "--out",
        best,
    )
    assert "best ndcg@10=" in proc.stdout
    assert "[models.itemknn]" in best.read_text()
    recsys(
        "train",
        "--interactions",
        workdir / "data" / "train.parquet",
        "--config",
        best,
        "--models",
        "itemknn",
        "--out",
        tmp_path / "tuned",
    )
    manifest = json.loads((tmp_path / "tuned" / "manifest.json").read_text())
    tuned = manifest["config"]["models"]["itemknn"]
    written = best.read_text()
    assert (
        f"n_neighbors = {tuned['n_neighbors']}" in written
    )  # the tuned values reached the artifact


def test_score_writes_every_component_with_svdpp_ratings(workdir: Path, tmp_path: Path) -> None:
    art = tmp_path / "scored"
    recsys(
        "train",
        "--interactions",
        workdir / "data" / "train.parquet",
        "--models",
        "svdpp,itemknn",
        "--out",
        art,
    )
    train = pd.read_parquet(workdir / "data" / "train.parquet")
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame(
        {
            "user_id": [train["user_id"].iloc[0], train["user_id"].iloc[1], "nobody"],
            "item_id": [
                train["item_id"].iloc[5],
                train["item_id"].iloc[0],
                train["item_id"].iloc[0],
            ],
        }
    ).to_csv(pairs, index=False)
    out = tmp_path / "scores.csv"
    recsys("score", "--artifact", art, "--pairs", pairs, "--out", out)
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["user_id", "item_id", "svdpp", "itemknn"]
    assert scores["svdpp"].iloc[:2].between(1.0, 5.0).all()  # predicted ratings on the scale
    assert scores.iloc[2][["svdpp", "itemknn"]].isna().all()  # unknown user: NaN, not an error
