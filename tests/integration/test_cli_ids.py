"""One id rule through every CLI input and output format (issue 14).

Zero-padded string ids (``"007"``, ``"010"``) and integer-vocabulary artifacts go through
``train`` -> ``recommend --out`` -> ``evaluate --recs`` in CSV, TSV and parquet, with and
without a UTF-8 byte-order mark, and through ``recommend --users`` and ``score --pairs``:
every format gives the same answer, ``"007"`` never becomes ``7`` and ``"196"`` finds the
integer ``196``.

The commands run in-process through :func:`recsys.cli.main` (the same parser and code as
the console script, without a Python start-up per call); one test runs the real
subprocess, where the byte-order mark used to end in a traceback.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.data import write_frame
from recsys.errors import DataWarning
from recsys.pipeline import Pipeline
from recsys.testing import block_frame
from recsys.testing.cli import run_cli

pytestmark = pytest.mark.integration

BOM = b"\xef\xbb\xbf"
K = 5


def cli(*args: str | Path) -> None:
    """Run ``recsys -q ARGS`` in-process and require exit status 0."""
    assert main(["-q", *map(str, args)]) == 0


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    # main() configures the root logger as the console script does; undo it per test
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def with_bom(path: Path, out: Path) -> Path:
    """A copy of a CSV/TSV file that starts with a UTF-8 byte-order mark."""
    out.write_bytes(BOM + path.read_bytes())
    return out


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last interaction of each user (with at least 3) is test, the rest train."""
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    last = ~frame.duplicated("user_id", keep="last")
    many = frame.groupby("user_id")["item_id"].transform("size") >= 3
    test = last & many
    return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True)


def block_interactions(ids: str) -> pd.DataFrame:
    """The block dataset with ids ``"000".."017"`` (``ids="padded"``) or ints 180..197."""
    frame = block_frame(3, 6, 6, density=0.6, noise=0.2, seed=4, with_ratings=False)
    users = frame["user_id"].str[1:].astype(int)
    items = frame["item_id"].str[1:].astype(int)
    if ids == "padded":  # "007" and "010" among them: strings that look like numbers
        frame["user_id"] = users.map(lambda v: f"{v:03d}")
        frame["item_id"] = items.map(lambda v: f"{v:03d}")
    else:  # MovieLens-like integers; 196 and 186 are users, 50 an item
        frame["user_id"] = (users + 180).astype(np.int64)
        frame["item_id"] = (items + 40).astype(np.int64)
    return frame


def write_formats(frame: pd.DataFrame, stem: Path) -> dict[str, Path]:
    """``frame`` as parquet, CSV, TSV and both text formats with a byte-order mark."""
    out = {
        "parquet": write_frame(frame, stem.with_suffix(".parquet")),
        "csv": write_frame(frame, stem.with_suffix(".csv")),
        "tsv": write_frame(frame, stem.with_suffix(".tsv")),
    }
    out["csv-bom"] = with_bom(out["csv"], stem.with_name(stem.name + "-bom.csv"))
    out["tsv-bom"] = with_bom(out["tsv"], stem.with_name(stem.name + "-bom.tsv"))
    return out


def metrics(recs: Path, test: Path, out: Path) -> dict[str, float]:
    cli("evaluate", "--recs", recs, "--test", test, "--k", K, "--json", out)
    data: dict[str, float] = json.loads(out.read_text())
    return data


# ------------------------------------------------------------- zero-padded string ids
@pytest.fixture(scope="module")
def padded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("padded-ids")
    train, test = split(block_interactions("padded"))
    assert {"007", "010"} <= set(train["user_id"]) and {"007", "010"} <= set(test["user_id"])
    trains = write_formats(train, root / "train")
    tests = write_formats(test, root / "test")
    artifact = root / "model"
    # the training file starts with a byte-order mark, as a spreadsheet saves it
    cli("train", "--interactions", trains["csv-bom"], "--models", "itemknn", "--out", artifact)
    return {"root": root, "train": train, "test": test, "tests": tests, "artifact": artifact}


def test_string_vocabulary_keeps_zero_padded_ids_from_a_bom_csv(padded: dict) -> None:
    pipe = Pipeline.load(padded["artifact"])  # type: ignore[arg-type]
    assert pipe.user_map.kind == "str" and "007" in pipe.user_map.ids.tolist()
    assert pipe.item_map.to_index(["010"])[0] >= 0
    assert pipe.item_map.to_index([10])[0] == -1  # 10 is "10", never "010"


def test_recommend_out_and_evaluate_recs_agree_in_every_format(
    padded: dict, tmp_path: Path
) -> None:
    artifact: Path = padded["artifact"]  # type: ignore[assignment]
    tests: dict[str, Path] = padded["tests"]  # type: ignore[assignment]
    recs = {}
    for fmt in ("parquet", "csv", "tsv"):
        recs[fmt] = tmp_path / f"recs.{fmt}"
        cli("recommend", "--artifact", artifact, "--all-users", "--k", K, "--out", recs[fmt])
    recs["csv-bom"] = with_bom(recs["csv"], tmp_path / "recs-bom.csv")
    recs["tsv-bom"] = with_bom(recs["tsv"], tmp_path / "recs-bom.tsv")
    # the files keep the ids verbatim: "007" is written as 007, never 7
    csv_text = recs["csv"].read_text()
    assert '\n"007",' in csv_text and '\n"7",' not in csv_text and "\n7," not in csv_text
    assert pd.read_parquet(recs["parquet"])["user_id"].map(type).eq(str).all()

    # the oracle: the pipeline's own lists, evaluated in memory
    from recsys.eval import evaluate_recommendations

    pipe = Pipeline.load(artifact)
    test: pd.DataFrame = padded["test"]  # type: ignore[assignment]
    expected = evaluate_recommendations(pipe.recommend(pipe.user_map.ids, K), test, ks=K)
    assert expected[f"ndcg@{K}"] > 0.05, "the fixture must give a score that can be lost"

    reference = metrics(recs["parquet"], tests["parquet"], tmp_path / "ref.json")
    assert reference[f"ndcg@{K}"] == pytest.approx(expected[f"ndcg@{K}"], rel=1e-12)
    assert reference[f"recall@{K}"] == pytest.approx(expected[f"recall@{K}"], rel=1e-12)
    for rname, rpath in recs.items():
        for tname, tpath in tests.items():
            got = metrics(rpath, tpath, tmp_path / f"{rname}-{tname}.json")
            # same lists, same ids: the same computation, so the same numbers exactly
            assert got == reference, (rname, tname)


def test_evaluate_artifact_reads_bom_test_files(padded: dict, tmp_path: Path) -> None:
    tests: dict[str, Path] = padded["tests"]  # type: ignore[assignment]
    results = {}
    for name in ("parquet", "csv-bom", "tsv-bom"):
        out = tmp_path / f"{name}.json"
        cli("evaluate", "--artifact", padded["artifact"], "--test", tests[name], "--json", out)
        results[name] = json.loads(out.read_text())
    assert results["csv-bom"] == results["parquet"] == results["tsv-bom"]
    assert results["parquet"]["ndcg@10"] > 0


def test_bom_file_does_not_end_in_a_traceback(padded: dict, tmp_path: Path) -> None:
    """The console script itself, as the issue reported it (``KeyError: 'Field
    "\\ufeffuser_id" does not exist in schema'``)."""
    root: Path = padded["root"]  # type: ignore[assignment]
    artifact = tmp_path / "model"
    proc = run_cli(
        "train", "--interactions", root / "train-bom.tsv", "--models", "popular", "--out", artifact
    )
    assert "Traceback" not in proc.stderr
    assert Pipeline.load(artifact).user_map.to_index(["007"])[0] >= 0


# ------------------------------------------------------------- integer vocabulary
@pytest.fixture(scope="module")
def integer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("int-ids")
    train, test = split(block_interactions("int"))
    assert {186, 196} <= set(train["user_id"]) and 50 in set(train["item_id"])
    write_frame(train, root / "train.parquet")
    artifact = root / "model"
    cli(
        "train",
        "--interactions",
        root / "train.parquet",
        "--models",
        "itemknn,popular",
        "--out",
        artifact,
    )
    return {"root": root, "train": train, "test": test, "artifact": artifact}


def users_file(path: Path, ids: list[str], *, bom: bool = False) -> Path:
    # one column, so the same text is a CSV and a TSV file
    path.write_bytes((BOM if bom else b"") + ("user_id\n" + "\n".join(ids) + "\n").encode())
    return path


@pytest.mark.parametrize(("name", "bom"), [("users.csv", False), ("users.tsv", True)])
def test_users_file_with_a_newcomer_still_finds_the_known_users(
    integer: dict, tmp_path: Path, name: str, bom: bool
) -> None:
    artifact: Path = integer["artifact"]  # type: ignore[assignment]
    path = users_file(tmp_path / name, ["196", "186", "newcomer"], bom=bom)
    out = tmp_path / "recs.parquet"
    cli("recommend", "--artifact", artifact, "--users", path, "--k", K, "--out", out)
    recs = pd.read_parquet(out)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["unknown_users"] == 1
    assert recs["user_id"].tolist()[::K] == ["196", "186", "newcomer"]  # kept as given
    pipe = Pipeline.load(artifact)
    want = pipe.recommend([196, 186], K)
    got = recs[recs["user_id"] != "newcomer"]
    assert got["item_id"].tolist() == want["item_id"].tolist()
    assert got["score"].to_numpy() == pytest.approx(want["score"].to_numpy(), rel=1e-6)
    assert (got["sources"] != "popular").all()
    assert (recs.loc[recs["user_id"] == "newcomer", "sources"] == "popular").all()


def test_users_file_of_known_decimal_strings_gives_integer_output(
    integer: dict, tmp_path: Path
) -> None:
    path = users_file(tmp_path / "users.csv", ["196", "186"], bom=True)
    out = tmp_path / "recs.csv"
    cli("recommend", "--artifact", integer["artifact"], "--users", path, "--k", K, "--out", out)
    recs = pd.read_csv(out)
    assert recs["user_id"].unique().tolist() == [196, 186]
    assert json.loads(Path(f"{out}.manifest.json").read_text())["unknown_users"] == 0


def test_users_file_with_only_unknown_ids_warns(
    integer: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "0196" and "196.0" are not 196: canonical decimal strings only
    path = users_file(tmp_path / "strangers.csv", ["0196", "196.0", "newcomer"])
    out = tmp_path / "recs.parquet"
    with pytest.warns(DataWarning, match=r"strangers\.csv: none of the 3 user_id.*'0196'"):
        cli("recommend", "--artifact", integer["artifact"], "--users", path, "--out", out)
    assert "strangers.csv" in caplog.text and "none of the 3 user_id" in caplog.text
    assert json.loads((out / "_manifest.json").read_text())["unknown_users"] == 3


def test_users_file_with_some_known_ids_does_not_warn(integer: dict, tmp_path: Path) -> None:
    path = users_file(tmp_path / "users.csv", ["196", "newcomer"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        cli(
            "recommend",
            "--artifact",
            integer["artifact"],
            "--users",
            path,
            "--out",
            tmp_path / "r.csv",
        )


@pytest.mark.parametrize("fmt", ["csv", "csv-bom", "tsv", "parquet"])
def test_score_pairs_mixes_known_and_unknown_ids(integer: dict, tmp_path: Path, fmt: str) -> None:
    pairs = pd.DataFrame(
        {
            "user_id": ["196", "newcomer", "196", "0196", "186"],
            "item_id": ["50", "50", "007", "50", "41"],
        }
    )
    known = [True, False, False, False, True]
    base = "csv" if fmt == "csv-bom" else fmt
    path = write_frame(pairs, tmp_path / f"pairs.{base}")
    if fmt == "csv-bom":
        path = with_bom(path, tmp_path / "pairs-bom.csv")
    out = tmp_path / "scores.parquet"
    cli("score", "--artifact", integer["artifact"], "--pairs", path, "--out", out)
    scores = pd.read_parquet(out)
    assert scores["user_id"].tolist() == pairs["user_id"].tolist()  # kept as given
    pipe = Pipeline.load(integer["artifact"])  # type: ignore[arg-type]
    want = pipe.score_pairs([196, 186], [50, 41])
    for name in ("itemknn", "popular"):
        col = scores[name].to_numpy()
        assert np.isfinite(col[known]).all(), name
        assert np.isnan(col[~np.asarray(known)]).all(), name
        assert col[known] == pytest.approx(want[name].to_numpy(), rel=1e-6)


def test_evaluate_integer_ids_agree_across_formats(integer: dict, tmp_path: Path) -> None:
    test: pd.DataFrame = integer["test"]  # type: ignore[assignment]
    tests = write_formats(test, tmp_path / "test")
    recs = {}
    for fmt in ("parquet", "csv"):
        recs[fmt] = tmp_path / f"recs.{fmt}"
        cli(
            "recommend",
            "--artifact",
            integer["artifact"],
            "--all-users",
            "--k",
            K,
            "--out",
            recs[fmt],
        )
    reference = metrics(recs["parquet"], tests["parquet"], tmp_path / "ref.json")
    assert reference[f"recall@{K}"] > 0
    for rname, rpath in recs.items():
        for tname, tpath in tests.items():
            assert metrics(rpath, tpath, tmp_path / f"{rname}-{tname}.json") == reference


def test_http_uses_the_same_rule(integer: dict, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from recsys.serving import Settings, create_app

    settings = Settings(artifact=integer["artifact"], events_log=tmp_path / "events.jsonl")
    with TestClient(create_app(settings)) as client:
        known = client.get("/recommend/196", params={"k": K}).json()
        assert known["strategy"] != "cold_start" and known["user_id"] == 196
        for raw in ("0196", "196.0", "newcomer"):
            answer = client.get(f"/recommend/{raw}", params={"k": K}).json()
            assert answer["strategy"] == "cold_start" and answer["user_id"] == raw
