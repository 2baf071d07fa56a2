"""The two-stage pipeline through the CLI, as a user runs it: train with the default config,
evaluate with an HTML report, recommend and score (real subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.testing.cli import run_cli as recsys

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A string-id, ISO-timestamp synthetic set with new items, trained with defaults."""
    from recsys.data import generate_synthetic, write_dataset

    root = tmp_path_factory.mktemp("pipeline-cli")
    ds = generate_synthetic(
        150, 80, 3000, seed=5, string_ids=True, iso_timestamps=True, new_item_frac=0.05
    )
    write_dataset(ds, root / "raw", fmt="csv")
    recsys(
        "datasets",
        "split",
        "--interactions",
        root / "raw" / "interactions.csv",
        "--items",
        root / "raw" / "items.csv",
        "--users",
        root / "raw" / "users.csv",
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
        "--users",
        root / "data" / "users.parquet",
        "--out",
        root / "artifact",
    )
    return root


def test_default_training_builds_the_whole_pipeline(workdir: Path) -> None:
    manifest = json.loads((workdir / "artifact" / "manifest.json").read_text())
    components = json.loads((workdir / "artifact" / "pipeline.json").read_text())["components"]
    assert components[0] == "hybrid"
    assert {"itemknn", "ease", "als", "doc2vec", "popular", "svdpp"} <= set(components)
    files = manifest["files"]
    assert any(f.startswith("index/") for f in files) and "ranker/ranker.json" in files
    assert manifest["metrics"]["ranker"]["learner"] in ("hgb", "blend")
    assert manifest["config"]["pipeline"]["hybrid"] is True


def test_evaluate_table_json_and_html(workdir: Path) -> None:
    proc = recsys(
        "evaluate",
        "--artifact",
        workdir / "artifact",
        "--test",
        workdir / "data" / "test.parquet",
        "--k",
        "10",
        "--json",
        workdir / "m.json",
        "--html",
        workdir / "report.html",
    )
    assert "hybrid" in proc.stdout and "blend" in proc.stdout and "ndcg@10" in proc.stdout
    assert "ndcg@50" not in proc.stdout  # the report's extra cut-offs stay out of the table
    metrics = json.loads((workdir / "m.json").read_text())
    assert {"hybrid", "blend", "itemknn", "popular"} <= set(metrics["models"])
    assert metrics["ndcg@10"] == metrics["models"]["hybrid"]["ndcg@10"]
    html = (workdir / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") >= 4 and "Recall@k" in html and "svdpp training" in html


def test_recommend_full_pipeline_and_one_component(workdir: Path) -> None:
    recsys(
        "recommend",
        "--artifact",
        workdir / "artifact",
        "--all-users",
        "--k",
        "5",
        "--out",
        workdir / "recs.parquet",
    )
    recs = pd.read_parquet(workdir / "recs.parquet")
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score", "sources"]
    assert recs["user_id"].astype(str).str.startswith("u").all()
    # the batch job answers exactly what the loaded pipeline answers in-process
    from recsys.pipeline import Pipeline

    pipe = Pipeline.load(workdir / "artifact")
    mine = pipe.recommend(pipe.user_map.ids, k=5)
    assert recs["item_id"].tolist() == mine["item_id"].tolist()
    assert recs["rank"].tolist() == mine["rank"].tolist()
    assert mine["sources"].str.contains("|", regex=False).any()  # provenance of the hybrid
    recsys(
        "recommend",
        "--artifact",
        workdir / "artifact",
        "--all-users",
        "--k",
        "5",
        "--model",
        "ease",
        "--out",
        workdir / "ease.csv",
    )
    assert set(pd.read_csv(workdir / "ease.csv")["sources"]) == {"ease"}


def test_score_pairs(workdir: Path) -> None:
    test = pd.read_parquet(workdir / "data" / "test.parquet").head(5)
    pairs = pd.concat(
        [test[["user_id", "item_id"]], pd.DataFrame({"user_id": ["nobody"], "item_id": ["x"]})]
    )
    pairs.to_csv(workdir / "pairs.csv", index=False)
    recsys(
        "score",
        "--artifact",
        workdir / "artifact",
        "--pairs",
        workdir / "pairs.csv",
        "--out",
        workdir / "scores.csv",
    )
    scores = pd.read_csv(workdir / "scores.csv")
    assert list(scores.columns[:3]) == ["user_id", "item_id", "hybrid"]
    assert {"svdpp", "itemknn", "popular"} <= set(scores.columns)
    assert scores.iloc[-1, 2:].isna().all()
    rated = scores["svdpp"].dropna()
    assert len(rated) and rated.between(1, 5).all()  # predicted ratings, not ranking scores


def test_score_bad_input_is_one_line(workdir: Path) -> None:
    (workdir / "bad.csv").write_text("user,item\na,b\n")
    proc = recsys(
        "score",
        "--artifact",
        workdir / "artifact",
        "--pairs",
        workdir / "bad.csv",
        "--out",
        workdir / "x.csv",
        ok=False,
    )
    # the readers' message (issue 14: every CLI input goes through them), with hints
    assert proc.returncode == 1 and "missing required column 'user_id'" in proc.stderr
    assert "bad.csv" in proc.stderr and "rename 'item' to 'item_id'" in proc.stderr
    assert "Traceback" not in proc.stderr
