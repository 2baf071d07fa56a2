"""Encoding of the parquet parts: plain output types on read, cheap dictionary sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.jobs import run_batch
from recsys.jobs.batch import output_schema
from recsys.jobs.output import _encode
from recsys.pipeline import Pipeline


@pytest.mark.parametrize("fixture", ["artifact", "int_artifact"])
def test_parts_read_back_with_the_output_schema(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    path = request.getfixturevalue(fixture)
    pipe = Pipeline.load(path)
    users = np.concatenate([pipe.user_map.ids[:40], pipe.user_map.ids[:0]])
    out = tmp_path / "recs.parquet"
    run_batch(path, out, users=users, k=4, chunk_size=16, show_progress=False)
    expected_schema = output_schema(
        pa.array(pipe.user_map.ids[:1]).type, pa.array(pipe.item_map.ids[:1]).type
    )
    for part in sorted(out.glob("part-*.parquet")):
        assert pq.read_table(part).schema == expected_schema
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, pipe.recommend(users, k=4))


def test_dictionary_sources_encode_like_plain_strings() -> None:
    """A dictionary ``sources`` column reads back as the same strings, in parquet and CSV."""
    values = pa.array(["als", "popular"], pa.string())
    codes = pa.array(np.array([0, 0, 1, 0], np.int8))
    dense = pa.table(
        {
            "user_id": pa.array([1, 1, 2, 2], pa.int64()),
            "item_id": pa.array(["a", "b", "c", "a"]),
            "rank": pa.array([1, 2, 1, 2], pa.int32()),
            "score": pa.array([0.5, 0.25, 3.0, -1.0], pa.float32()),
            "sources": pa.DictionaryArray.from_arrays(codes, values).cast(pa.string()),
        }
    )
    encoded = dense.set_column(4, "sources", pa.DictionaryArray.from_arrays(codes, values))
    back = pq.read_table(pa.BufferReader(_encode(encoded, "parquet", ",")))
    assert back.equals(dense)
    assert _encode(encoded, "csv", ",").to_pybytes() == _encode(dense, "csv", ",").to_pybytes()
    # a column type that parquet alone would not restore keeps the stored Arrow schema
    odd = encoded.append_column("when", pa.array([0, 1, 2, 3], pa.timestamp("ms", "UTC")))
    back = pq.read_table(pa.BufferReader(_encode(odd, "parquet", ",")))
    assert back.equals(odd.set_column(4, "sources", dense["sources"]))
