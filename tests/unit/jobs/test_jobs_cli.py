"""The ``recsys recommend`` arguments and their run, on a parser built like recsys.cli's."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from recsys.errors import ConfigError
from recsys.jobs import add_recommend_arguments, run_recommend_job
from recsys.pipeline import Pipeline


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recsys")
    parser.add_argument("-q", "--quiet", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_recommend_arguments(sub.add_parser("recommend"))
    return parser.parse_args(["-q", "recommend", *argv])


def test_defaults_and_run(artifact: Path, pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    args = _parse("--artifact", str(artifact), "--all-users", "--out", str(out))
    assert (args.k, args.chunk_size, args.engine, args.resume) == (10, 10_000, None, False)
    assert run_recommend_job(args) == 0
    expected = pipeline.recommend(pipeline.user_map.ids, k=10)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)


def test_users_file_model_include_seen_and_chunking(
    artifact: Path, pipeline: Pipeline, tmp_path: Path
) -> None:
    users = tmp_path / "users.csv"
    chosen = pipeline.user_map.ids[[4, 2, 9]].tolist()
    users.write_text("user_id,segment\n" + "".join(f"{u},x\n" for u in chosen))
    out = tmp_path / "recs.csv"
    args = _parse(
        "--artifact", str(artifact), "--users", str(users), "--out", str(out), "--k", "3",
        "--model", "itemknn", "--include-seen", "--chunk-size", "2", "--threads", "2",
    )  # fmt: skip
    assert run_recommend_job(args) == 0
    got = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    expected = pipeline.recommend(chosen, k=3, model="itemknn", exclude_seen=False)
    assert got[["user_id", "item_id", "rank"]].values.tolist() == (
        expected[["user_id", "item_id", "rank"]].values.tolist()
    )
    assert set(got["sources"]) == {"itemknn"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--all-users", "--users", "u.csv"],  # one or the other
        ["--k", "0", "--all-users"],
        ["--chunk-size", "-5", "--all-users"],
        ["--engine", "spark", "--all-users"],
        [],  # neither --users nor --all-users
    ],
)
def test_bad_usage_exits_2(argv: list[str], artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse("--artifact", str(artifact), "--out", str(tmp_path / "r.parquet"), *argv)
    assert exc.value.code == 2


def test_scheduler_with_local_engine_is_refused(artifact: Path, tmp_path: Path) -> None:
    args = _parse(
        "--artifact", str(artifact), "--all-users", "--out", str(tmp_path / "r.parquet"),
        "--engine", "local", "--scheduler", "tcp://127.0.0.1:1",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="--scheduler needs --engine dask"):
        run_recommend_job(args)
