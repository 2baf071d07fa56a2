"""Readers of every CLI input (issue 14): a UTF-8 byte-order mark on either CSV path, and the
pairs, recommendations and item-relations files read with the id rules of the contract."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from recsys.data import (
    read_interactions,
    read_item_relations,
    read_pairs,
    read_recommendations,
    read_users,
    write_frame,
)
from recsys.data.readers import read_table
from recsys.errors import DataError

BOM = b"\xef\xbb\xbf"


def write(path: Path, text: str, *, bom: bool = True) -> Path:
    data = (BOM if bom else b"") + text.encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["a.csv", "a.tsv", "a.csv.gz", "a.txt"])
@pytest.mark.parametrize("malformed", [False, True], ids=["arrow", "pandas-fallback"])
def test_byte_order_mark_is_not_part_of_the_first_column(
    tmp_path: Path, name: str, malformed: bool
) -> None:
    sep = "\t" if name.endswith((".tsv", ".txt")) else ","
    rows = ["user_id,item_id,rating", "007,010,4", "196,50,3"]
    if malformed:  # a line with a field too many: pyarrow refuses, pandas reports it
        rows.append("1,2,3,4")
    path = write(tmp_path / name, "\n".join(r.replace(",", sep) for r in rows) + "\n")
    frame, bad, _, _ = read_table(path)
    assert list(frame.columns) == ["user_id", "item_id", "rating"]
    assert bad == ([3] if malformed else [])
    if malformed:
        with pytest.raises(DataError, match="row 3"):
            read_interactions(path)
        df = read_interactions(path, on_bad_rows="drop")
    else:
        df = read_interactions(path)
    assert df["user_id"].tolist() == ["007", "196"]  # "007" keeps every column text
    assert df["item_id"].tolist() == ["010", "50"]


def test_bom_users_file(tmp_path: Path) -> None:
    path = write(tmp_path / "users.csv", "user_id\n196\n186\n")
    assert read_users(path)["user_id"].tolist() == [196, 186]


def test_pairs_keep_ids_and_name_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.csv", "user_id,item_id\n196,50\nnewcomer,007\n")
    pairs = read_pairs(path)
    assert pairs["user_id"].tolist() == ["196", "newcomer"]
    assert pairs["item_id"].tolist() == ["50", "007"]
    bad = write(tmp_path / "bad.csv", "user_id,item_id\n196,50\n,51\n196,52\n")
    with pytest.raises(DataError, match=r"bad\.csv.*row 2, field 'user_id': missing id"):
        read_pairs(bad)
    assert read_pairs(bad, on_bad_rows="drop")["item_id"].tolist() == [50, 52]
    with pytest.raises(DataError, match=r"missing required column 'item_id'.*'items'"):
        read_pairs(write(tmp_path / "cols.csv", "user_id,items\n1,2\n"))


def test_recommendations_from_text_and_parquet_agree(tmp_path: Path) -> None:
    recs = pd.DataFrame(
        {
            "user_id": ["007", "007", "010"],
            "item_id": ["010", "x", "007"],
            "rank": [1, 2, 1],
            "score": [0.5, 0.25, 0.75],
            "sources": ["itemknn", "a|b", "popular"],
        }
    )
    parquet = read_recommendations(write_frame(recs, tmp_path / "recs.parquet"))
    csv = read_recommendations(write_frame(recs, tmp_path / "recs.csv"))
    tsv = tmp_path / "recs.tsv"
    write_frame(recs, tsv)
    bom = read_recommendations(write(tmp_path / "bom.tsv", tsv.read_text()))
    for frame in (csv, bom):
        pd.testing.assert_frame_equal(frame, parquet, check_dtype=False)
    assert csv["rank"].dtype == "int64" and csv["user_id"].tolist()[0] == "007"


def test_recommendations_directory_and_bad_ranks(tmp_path: Path) -> None:
    parts = tmp_path / "recs.parquet"
    parts.mkdir()
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "rank": [1, 2, 1]})
    write_frame(frame.iloc[:2], parts / "part-00000.parquet")
    write_frame(frame.iloc[2:], parts / "part-00001.parquet")
    (parts / "_manifest.json").write_text("{}")
    pd.testing.assert_frame_equal(read_recommendations(parts), frame)
    bad = write(tmp_path / "bad.csv", "user_id,item_id,rank\na,x,1\na,y,first\n")
    with pytest.raises(DataError, match=r"bad\.csv.*row 2, field 'rank': unparseable rank"):
        read_recommendations(bad)
    with pytest.raises(DataError, match="is a directory"):
        read_recommendations(tmp_path)


def test_item_relations_keep_text(tmp_path: Path) -> None:
    path = write(tmp_path / "rel.csv", "item_id,relation,entity\n007,director,0123\n8,year,1999\n")
    rel = read_item_relations(path)
    assert rel["item_id"].tolist() == ["007", "8"]
    assert rel["entity"].tolist() == ["0123", "1999"]
    with pytest.raises(DataError, match="missing required column 'entity'"):
        read_item_relations(write(tmp_path / "r2.csv", "item_id,relation\n1,a\n"))
