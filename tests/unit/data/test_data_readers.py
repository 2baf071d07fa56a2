"""Readers and validation: ids verbatim, timestamps, bad rows with row numbers, fail/drop."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data import (
    ValidationReport,
    read_interactions,
    read_interactions_with_report,
    read_items,
    read_items_with_report,
    read_users,
    validate_interactions,
    write_frame,
)
from recsys.errors import DataError


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ ids
def test_string_ids_kept_verbatim(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.csv", "user_id,item_id,rating\n007,1,4\n7,2,3\nabc,003,5\n")
    df = read_interactions(p)
    assert df["user_id"].tolist() == ["007", "7", "abc"]
    assert df["item_id"].tolist() == ["1", "2", "003"]  # "003" keeps the column as text
    assert df["rating"].dtype == np.float32


def test_canonical_int_ids_become_int64(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.csv", "user_id,item_id\n196,242\n-3,0\n")
    df = read_interactions(p)
    assert df["user_id"].dtype == np.int64 and df["item_id"].dtype == np.int64
    assert df["user_id"].tolist() == [196, -3]
    assert list(df.columns) == ["user_id", "item_id"]


def test_int_ids_too_large_for_int64_stay_strings(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.csv", "user_id,item_id\n99999999999999999999,1\n1,2\n")
    df = read_interactions(p)
    assert df["user_id"].tolist() == ["99999999999999999999", "1"]
    assert df["item_id"].dtype == np.int64


def test_parquet_keeps_native_id_types(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"user_id": ["007", "8"], "item_id": np.array([5, 6], dtype=np.int32), "rating": [1.0, 2]}
    )
    p = tmp_path / "r.parquet"
    frame.to_parquet(p)
    df = read_interactions(p)
    assert df["user_id"].tolist() == ["007", "8"]
    assert df["item_id"].dtype == np.int64 and df["item_id"].tolist() == [5, 6]


def test_columns_order_and_extras_kept(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "r.csv",
        "context,timestamp,item_id,user_id,rating,zip\nweb,10,1,1,4.5,01234\napp,20,2,1,3,99999\n",
    )
    df = read_interactions(p)
    assert list(df.columns) == ["user_id", "item_id", "rating", "timestamp", "context", "zip"]
    assert df["context"].tolist() == ["web", "app"]
    assert df["zip"].tolist() == ["01234", "99999"]  # leading zero: the column stays text
    assert df["timestamp"].dtype == np.int64


# ------------------------------------------------------------------------ timestamps
def test_iso_and_unix_timestamps(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "r.csv",
        "user_id,item_id,timestamp\n"
        "1,1,2020-01-01T00:00:00Z\n"
        "1,2,2020-01-01 02:00:00+02:00\n"
        "1,3,2020-01-01T00:00:00\n"
        "1,4,1577836800\n"
        "1,5,1577836800.9\n"
        "1,6,2020-01-01\n",
    )
    df = read_interactions(p)
    assert df["timestamp"].dtype == np.int64
    assert df["timestamp"].tolist() == [1577836800] * 6


def test_parquet_datetime_and_float_timestamps(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": [1, 1],
            "timestamp": pd.to_datetime(["2020-01-01T00:00:00", "2020-01-01T00:00:01"]),
        }
    )
    p = tmp_path / "a.parquet"
    frame.to_parquet(p)
    assert read_interactions(p)["timestamp"].tolist() == [1577836800, 1577836801]
    frame["timestamp"] = [1577836800.0, 1.5]
    frame.to_parquet(p)
    assert read_interactions(p)["timestamp"].tolist() == [1577836800, 1]


def test_tsv_and_gzip(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.tsv", "user_id\titem_id\trating\nu1\ti1\t4\n")
    assert read_interactions(p)["user_id"].tolist() == ["u1"]
    gz = tmp_path / "r.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("user_id,item_id\n1,2\n3,4\n")
    df = read_interactions(gz)
    assert df["item_id"].tolist() == [2, 4]
    txt = _write(tmp_path, "r.txt", "user_id\titem_id\n1\t2\n")
    assert read_interactions(txt)["item_id"].tolist() == [2]


# -------------------------------------------------------------------------- bad rows
BAD_CSV = (
    "user_id,item_id,rating,timestamp\n"
    "1,10,4,100\n"  # row 1 ok
    ",11,4,100\n"  # row 2 missing user_id
    "2,12,abc,100\n"  # row 3 bad rating
    "3,13,5,not-a-time\n"  # row 4 bad timestamp
    "1,10,2,100\n"  # row 5 duplicate of row 1 (same user, item, timestamp)
    "4,14,3,200\n"  # row 6 ok
    "5,,3,200\n"  # row 7 missing item_id
)


def test_bad_rows_fail_with_row_numbers(tmp_path: Path) -> None:
    p = _write(tmp_path, "bad.csv", BAD_CSV)
    with pytest.raises(DataError) as exc:
        read_interactions(p)
    msg = str(exc.value)
    first_line = msg.splitlines()[0]
    assert str(p) in first_line and "row 2" in first_line and "'user_id'" in first_line
    assert "header excluded" in msg
    assert "missing_id: 1 row in field 'user_id' (missing id), row 2" in msg
    assert "missing_id: 1 row in field 'item_id' (missing id), row 7" in msg
    assert "bad_rating: 1 row in field 'rating'" in msg and "row 3" in msg and "'abc'" in msg
    assert "bad_timestamp: 1 row in field 'timestamp'" in msg and "'not-a-time'" in msg
    assert "duplicate: 1 row" in msg and "row 5" in msg
    assert "on_bad_rows='drop'" in msg


def test_bad_rows_drop_counts_and_keeps_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = _write(tmp_path, "bad.csv", BAD_CSV)
    with caplog.at_level(logging.WARNING):
        df, report = read_interactions_with_report(p, on_bad_rows="drop")
    assert isinstance(report, ValidationReport)
    assert report.n_rows == 7 and report.n_dropped == 5 and report.n_bad_rows == 5
    assert report.counts() == {"missing_id": 2, "bad_rating": 1, "bad_timestamp": 1, "duplicate": 1}
    rows = {p.kind + ":" + str(p.column): p.rows for p in report.problems}
    assert rows == {
        "missing_id:user_id": [2],
        "missing_id:item_id": [7],
        "bad_rating:rating": [3],
        "bad_timestamp:timestamp": [4],
        "duplicate:user_id,item_id,timestamp": [5],
    }
    # the survivors are exactly rows 1 and 6, values intact (first duplicate kept)
    assert df.to_dict("list") == {
        "user_id": [1, 4],
        "item_id": [10, 14],
        "rating": [4.0, 3.0],
        "timestamp": [100, 200],
    }
    assert "dropped 5 of 7" in caplog.text
    assert "Dropped 5 rows" in report.summary()
    assert read_interactions(p, on_bad_rows="drop").equals(df)


def test_duplicates_without_timestamp_use_user_item(tmp_path: Path) -> None:
    p = _write(tmp_path, "d.csv", "user_id,item_id\n1,1\n1,2\n1,1\n2,1\n1,1\n")
    with pytest.raises(DataError, match="duplicate: 2 rows"):
        read_interactions(p)
    df, rep = read_interactions_with_report(p, on_bad_rows="drop")
    assert rep.problems[0].rows == [3, 5] and rep.problems[0].column == "user_id,item_id"
    assert len(df) == 3


def test_same_pair_at_different_times_is_not_a_duplicate(tmp_path: Path) -> None:
    p = _write(tmp_path, "d.csv", "user_id,item_id,timestamp\n1,1,5\n1,1,6\n")
    assert len(read_interactions(p)) == 2


def test_duplicates_compare_parsed_timestamps(tmp_path: Path) -> None:
    p = _write(tmp_path, "d.csv", "user_id,item_id,timestamp\n1,1,1577836800\n1,1,2020-01-01\n")
    with pytest.raises(DataError, match="duplicate"):
        read_interactions(p)


def test_malformed_line_reported(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.csv", "user_id,item_id\n1,2\n3,4,5\n6,7\n")
    with pytest.raises(DataError, match="row 2") as exc:
        read_interactions(p)
    assert "malformed_row" in str(exc.value)
    df, rep = read_interactions_with_report(p, on_bad_rows="drop")
    assert df["user_id"].tolist() == [1, 6] and rep.n_dropped == 1


def test_rating_scale(tmp_path: Path) -> None:
    p = _write(tmp_path, "s.csv", "user_id,item_id,rating\n1,1,0.5\n1,2,3\n1,3,6\n")
    assert len(read_interactions(p)) == 3  # no scale: anything numeric is fine
    with pytest.raises(DataError, match="rating_out_of_scale") as exc:
        read_interactions(p, rating_scale=(1, 5))
    assert "rows 1, 3" in str(exc.value)
    df = read_interactions(p, rating_scale=(1, 5), on_bad_rows="drop")
    assert df["rating"].tolist() == [3.0]


def test_missing_column_named_with_columns_found(tmp_path: Path) -> None:
    p = _write(tmp_path, "c.csv", "userId,movieId,rating\n1,2,3\n")
    with pytest.raises(DataError) as exc:
        read_interactions(p, on_bad_rows="drop")  # always an error, even with drop
    msg = str(exc.value)
    assert "missing required column 'user_id'" in msg
    assert "'userId', 'movieId', 'rating'" in msg
    assert "rename 'userId' to 'user_id'" in msg


def test_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        read_interactions(_write(tmp_path, "e.csv", ""))
    with pytest.raises(DataError, match="empty"):
        read_interactions(_write(tmp_path, "h.csv", "user_id,item_id\n"), on_bad_rows="drop")
    p = tmp_path / "e.parquet"
    pd.DataFrame({"user_id": pd.Series([], dtype=np.int64), "item_id": []}).to_parquet(p)
    with pytest.raises(DataError, match="empty"):
        read_interactions(p)


def test_missing_file_and_bad_extension(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_interactions(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unsupported file type"):
        read_interactions(_write(tmp_path, "x.json", "{}"))


def test_validate_interactions_in_memory_frame() -> None:
    frame = pd.DataFrame(
        {"user_id": ["a", None, "b"], "item_id": [1, 2, 3], "rating": [1.0, 2.0, np.nan]}
    )
    with pytest.raises(DataError) as exc:
        validate_interactions(frame)
    assert str(exc.value).startswith("<frame>: 2 bad rows")
    df, rep = validate_interactions(frame, source="mine", on_bad_rows="drop")
    assert df["user_id"].tolist() == ["a"] and rep.source == "mine" and rep.n_dropped == 2
    assert rep.to_dict()["problems"][0]["kind"] == "missing_id"


# ---------------------------------------------------------------------- items, users
def test_read_items_and_users(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "items.csv",
        "item_id,title,genres,year,text\n007,Bond,Action|Thriller,1962,spy film\n2,Other,,1990,\n",
    )
    items = read_items(p)
    assert items["item_id"].tolist() == ["007", "2"]
    assert items["genres"].tolist() == ["Action|Thriller", ""]
    assert items["year"].dtype == np.int64
    u = _write(tmp_path, "users.csv", "user_id,age,zip_code\n1,30,01234\n2,40,5678\n")
    users = read_users(u)
    assert users["user_id"].tolist() == [1, 2] and users["zip_code"].tolist() == ["01234", "5678"]


def test_items_duplicate_and_missing_ids(tmp_path: Path) -> None:
    p = _write(tmp_path, "items.csv", "item_id,title\n1,a\n2,b\n1,c\n,d\n")
    with pytest.raises(DataError) as exc:
        read_items(p)
    msg = str(exc.value)
    assert "duplicate_id: 1 row in field 'item_id'" in msg and "row 3" in msg
    assert "missing_id" in msg and "row 4" in msg
    items, rep = read_items_with_report(p, on_bad_rows="drop")
    assert items["title"].tolist() == ["a", "b"] and rep.n_dropped == 2
    with pytest.raises(DataError, match="missing required column 'item_id'"):
        read_items(_write(tmp_path, "i2.csv", "id,title\n1,a\n"))


# ---------------------------------------------------------------------------- writer
@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.tsv", "out.csv.gz"])
def test_write_frame_round_trip(tmp_path: Path, name: str) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["007", "u1", "x"],
            "item_id": np.array([1, 2, 3], dtype=np.int64),
            "rating": np.array([1.5, 2, 3], dtype=np.float32),
            "timestamp": np.array([10, 20, 30], dtype=np.int64),
        }
    )
    path = write_frame(frame, tmp_path / name)
    back = read_interactions(path)
    assert back["user_id"].tolist() == ["007", "u1", "x"]
    assert back["item_id"].tolist() == [1, 2, 3] and back["item_id"].dtype == np.int64
    assert back["rating"].tolist() == [1.5, 2.0, 3.0] and back["timestamp"].tolist() == [10, 20, 30]


def test_write_frame_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unsupported"):
        write_frame(pd.DataFrame({"a": [1]}), tmp_path / "x.xlsx")
