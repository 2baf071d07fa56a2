"""The local batch job: same lists as Pipeline.recommend, parts, manifest, resume, outputs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.errors import ConfigError, DataError
from recsys.jobs import run_batch
from recsys.jobs.batch import ArtifactInfo, resolve_user_ids
from recsys.pipeline import Pipeline


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _part_files(out: Path) -> list[Path]:
    return sorted(out.glob("part-*.parquet"))


# ---------------------------------------------------------------------------- equality
@pytest.mark.parametrize("threads", [1, 3])
def test_all_users_match_pipeline_recommend(
    artifact: Path, pipeline: Pipeline, tmp_path: Path, threads: int
) -> None:
    out = tmp_path / "recs.parquet"
    result = run_batch(artifact, out, k=7, chunk_size=37, threads=threads, show_progress=False)
    got = pd.read_parquet(out)
    expected = pipeline.recommend(pipeline.user_map.ids, k=7)
    pd.testing.assert_frame_equal(got, expected)
    n_users = len(pipeline.user_map)
    assert result.users == n_users and result.rows == len(expected) == 7 * n_users
    assert result.parts == len(_part_files(out)) == -(-n_users // 37)
    assert result.unknown_users == 0 and result.resumed_parts == 0


@pytest.mark.parametrize("model", ["itemknn", "popular"])
def test_other_components_and_include_seen_match(
    artifact: Path, pipeline: Pipeline, tmp_path: Path, model: str
) -> None:
    out = tmp_path / "recs.parquet"
    run_batch(
        artifact, out, k=5, model=model, exclude_seen=False, chunk_size=50, show_progress=False
    )
    expected = pipeline.recommend(pipeline.user_map.ids, k=5, model=model, exclude_seen=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)
    assert set(pd.read_parquet(out)["sources"]) == {model}


def test_users_list_keeps_order_and_answers_unknown_users(
    artifact: Path, pipeline: Pipeline, tmp_path: Path
) -> None:
    ids = pipeline.user_map.ids
    users = np.array([ids[5], "nobody", ids[0], ids[17], "also-new"], dtype=object)
    out = tmp_path / "recs.parquet"
    result = run_batch(artifact, out, users=users, k=4, chunk_size=2, show_progress=False)
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, pipeline.recommend(users, k=4))
    assert got["user_id"].drop_duplicates().tolist() == users.tolist()
    assert set(got.loc[got["user_id"] == "nobody", "sources"]) == {"popular"}
    assert set(got.loc[got["user_id"] == ids[5], "sources"]) == {"als"}
    assert result.unknown_users == 2 and result.manifest["unknown_users"] == 2


def test_k_beyond_the_catalogue_gives_every_eligible_item(
    artifact: Path, pipeline: Pipeline, tmp_path: Path
) -> None:
    n_items = len(pipeline.item_map)
    out = tmp_path / "recs.parquet"
    run_batch(artifact, out, k=n_items + 10, chunk_size=100, show_progress=False)
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, pipeline.recommend(pipeline.user_map.ids, k=n_items + 10))
    seen = np.diff(pipeline.training_matrix().indptr)
    per_user = got.groupby("user_id", sort=False).size().to_numpy()
    np.testing.assert_array_equal(per_user, n_items - seen)


def test_chunk_size_and_threads_do_not_change_the_rows(
    artifact: Path, pipeline: Pipeline, tmp_path: Path
) -> None:
    users = pipeline.user_map.ids[::3]  # 80 users; chunks of one user each, then all in one
    a = run_batch(artifact, tmp_path / "a.parquet", users=users, k=6, chunk_size=1, threads=2,
                  show_progress=False)  # fmt: skip
    b = run_batch(artifact, tmp_path / "b.parquet", users=users, k=6, chunk_size=1000,
                  threads=1, show_progress=False)  # fmt: skip
    assert a.parts == a.users == len(users) and b.parts == 1
    pd.testing.assert_frame_equal(pd.read_parquet(a.out), pd.read_parquet(b.out))
    pd.testing.assert_frame_equal(pd.read_parquet(a.out), pipeline.recommend(users, k=6))


def test_same_job_twice_writes_identical_bytes(artifact: Path, tmp_path: Path) -> None:
    a = run_batch(
        artifact, tmp_path / "a.parquet", k=6, chunk_size=40, threads=3, show_progress=False
    )
    b = run_batch(
        artifact, tmp_path / "b.parquet", k=6, chunk_size=40, threads=1, show_progress=False
    )
    assert [p["sha256"] for p in a.manifest["parts"]] == [p["sha256"] for p in b.manifest["parts"]]
    assert [_sha(p) for p in _part_files(a.out)] == [_sha(p) for p in _part_files(b.out)]


# ---------------------------------------------------------------------------- manifest
def test_manifest_lists_parts_with_rows_and_checksums(
    artifact: Path, pipeline: Pipeline, tmp_path: Path
) -> None:
    out = tmp_path / "recs.parquet"
    result = run_batch(artifact, out, k=3, chunk_size=100, show_progress=False)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest))
    assert manifest["format"] == "recsys-batch-recommendations"
    assert manifest["users"] == len(pipeline.user_map)
    assert manifest["rows"] == sum(p["rows"] for p in manifest["parts"]) == 3 * manifest["users"]
    assert [p["users"] for p in manifest["parts"]] == [100, 100, len(pipeline.user_map) - 200]
    assert manifest["params"]["k"] == 3 and manifest["params"]["model"] == "als"
    assert manifest["params"]["chunk_size"] == 100
    assert manifest["artifact"]["version"] == pipeline.version
    assert manifest["columns"] == ["user_id", "item_id", "rank", "score", "sources"]
    for part in manifest["parts"]:
        path = out / part["name"]
        assert _sha(path) == part["sha256"] and path.stat().st_size == part["bytes"]
        assert pq.ParquetFile(path).metadata.num_rows == part["rows"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["_job.json", "_manifest.json", *(p["name"] for p in manifest["parts"])]
    )


def test_artifact_version_matches_pipeline_version(artifact: Path, pipeline: Pipeline) -> None:
    info = ArtifactInfo.read(artifact)
    assert info.version == pipeline.version
    # the job reads the artifact's layout and resolves components as the pipeline does
    assert info.components == tuple(pipeline.components)
    assert info.resolve_model(None) == pipeline.primary
    assert [len(info.user_map), info.user_map == pipeline.user_map] == [
        len(pipeline.user_map),
        True,
    ]


# ---------------------------------------------------------------------------- resume
def test_resume_recomputes_only_missing_parts(artifact: Path, tmp_path: Path) -> None:
    full = run_batch(artifact, tmp_path / "full.parquet", k=5, chunk_size=30, show_progress=False)
    out = tmp_path / "recs.parquet"
    run_batch(artifact, out, k=5, chunk_size=30, show_progress=False)
    parts = _part_files(out)
    # what a killed run leaves: no manifest, some parts missing, a half-written temporary
    (out / "_manifest.json").unlink()
    parts[2].unlink()
    parts[-1].unlink()
    (out / f".{parts[2].name}.tmp-deadbeef").write_bytes(b"half a part")
    old = os.stat(parts[0]).st_mtime_ns
    os.utime(parts[0], ns=(old - 10**9, old - 10**9))
    kept_mtime = os.stat(parts[0]).st_mtime_ns

    resumed = run_batch(artifact, out, k=5, chunk_size=30, resume=True, show_progress=False)
    assert resumed.resumed_parts == len(parts) - 2
    assert os.stat(parts[0]).st_mtime_ns == kept_mtime  # left untouched
    assert not list(out.glob(".*"))
    assert [_sha(p) for p in _part_files(out)] == [_sha(p) for p in _part_files(full.out)]

    def described(parts: list[dict[str, object]]) -> list[dict[str, object]]:
        skip = ("worker", "artifact_loads")  # who computed a part is not part of the data
        return [{k: v for k, v in p.items() if k not in skip} for p in parts]

    assert described(resumed.manifest["parts"]) == described(full.manifest["parts"])
    assert [p["worker"] for p in resumed.manifest["parts"]].count("") == len(parts) - 2
    assert resumed.rows == full.rows and resumed.users == full.users


def test_resume_of_a_complete_output_does_nothing(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    first = run_batch(artifact, out, k=5, chunk_size=60, show_progress=False)
    mtimes = [p.stat().st_mtime_ns for p in _part_files(out)]
    again = run_batch(artifact, out, k=5, chunk_size=60, resume=True, show_progress=False)
    assert again.resumed_parts == again.parts == first.parts
    assert [p.stat().st_mtime_ns for p in _part_files(out)] == mtimes
    assert again.manifest["created"] == first.manifest["created"]


def test_resume_with_other_parameters_is_refused(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    run_batch(artifact, out, k=5, chunk_size=60, show_progress=False)
    (out / "_manifest.json").unlink()
    with pytest.raises(ConfigError, match=r"parameters differ \(chunk_size: 60 -> 50"):
        run_batch(artifact, out, k=5, chunk_size=50, resume=True, show_progress=False)
    with pytest.raises(ConfigError, match="k: 5 -> 6"):
        run_batch(artifact, out, k=6, chunk_size=60, resume=True, show_progress=False)


def test_rerun_without_resume_replaces_the_output(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    run_batch(artifact, out, k=5, chunk_size=10, show_progress=False)
    result = run_batch(artifact, out, k=2, chunk_size=1000, show_progress=False)
    assert [p.name for p in _part_files(out)] == ["part-00000.parquet"]
    assert len(pd.read_parquet(out)) == result.rows == 2 * result.users


# ---------------------------------------------------------------------------- outputs
def test_csv_output_is_one_file_equal_to_pipeline(
    artifact: Path, pipeline: Pipeline, tmp_path: Path
) -> None:
    out = tmp_path / "recs.csv"
    result = run_batch(artifact, out, k=4, chunk_size=33, show_progress=False)
    got = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    expected = pipeline.recommend(pipeline.user_map.ids, k=4)
    pd.testing.assert_frame_equal(
        got.drop(columns="score"), expected.drop(columns="score"), check_dtype=False
    )
    np.testing.assert_array_equal(got["score"].to_numpy(np.float32), expected["score"].to_numpy())
    manifest = json.loads((tmp_path / "recs.csv.manifest.json").read_text())
    assert manifest["file"]["sha256"] == _sha(out) and manifest["rows"] == len(got)
    assert not (tmp_path / "recs.csv.parts").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.csv", "recs.csv.manifest.json"]
    assert result.parts == -(-len(pipeline.user_map) // 33)


def test_tsv_output_and_csv_resume(artifact: Path, pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "recs.tsv"
    first = run_batch(artifact, out, k=3, chunk_size=50, show_progress=False)
    expected = out.read_bytes()
    assert expected.splitlines()[0] == b'"user_id"\t"item_id"\t"rank"\t"score"\t"sources"'
    got = pd.read_csv(out, sep="\t", dtype={"user_id": str, "item_id": str})
    assert len(got) == first.rows == 3 * len(pipeline.user_map)
    mtime = out.stat().st_mtime_ns
    again = run_batch(artifact, out, k=3, chunk_size=50, resume=True, show_progress=False)
    assert again.resumed_parts == again.parts and out.stat().st_mtime_ns == mtime
    out.unlink()  # the manifest alone does not make a complete output
    redone = run_batch(artifact, out, k=3, chunk_size=50, resume=True, show_progress=False)
    assert redone.resumed_parts == 0 and out.read_bytes() == expected


def test_integer_ids_keep_their_type(int_artifact: Path, tmp_path: Path) -> None:
    pipe = Pipeline.load(int_artifact)
    users_file = tmp_path / "users.csv"
    chosen = pipe.user_map.ids[[3, 1, 4]]
    users_file.write_text("user_id\n" + "\n".join(str(u) for u in chosen) + "\n99999\n")
    out = tmp_path / "recs.parquet"
    result = run_batch(int_artifact, out, users_file=users_file, k=3, show_progress=False)
    got = pd.read_parquet(out)
    assert got["user_id"].dtype == np.int64 and got["item_id"].dtype == np.int64
    expected = pipe.recommend(np.array([*chosen, 99999]), k=3)
    pd.testing.assert_frame_equal(got, expected)
    assert result.unknown_users == 1


def test_users_file_with_duplicates_is_refused(artifact: Path, tmp_path: Path) -> None:
    users_file = tmp_path / "users.csv"
    users_file.write_text("user_id\na\nb\na\n")
    with pytest.raises(DataError, match=r"users\.csv"):
        run_batch(artifact, tmp_path / "r.parquet", users_file=users_file, show_progress=False)


def test_resolve_user_ids_checks_and_converts(pipeline: Pipeline) -> None:
    vocab = pipeline.user_map
    assert resolve_user_ids(vocab) is vocab.ids
    with pytest.raises(DataError, match="duplicated"):
        resolve_user_ids(vocab, users=["a", "b", "a"])
    with pytest.raises(DataError, match="missing"):
        resolve_user_ids(vocab, users=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match="empty"):
        resolve_user_ids(vocab, users=np.array([], dtype=object))
    with pytest.raises(ConfigError, match="either"):
        resolve_user_ids(vocab, users=["a"], users_file="x.csv")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ConfigError, "k must be >= 1"),
        ({"chunk_size": 0}, ConfigError, "chunk_size"),
        ({"model": "svdpp"}, ConfigError, "'svdpp' is not in this artifact"),
        ({"engine": "spark"}, ConfigError, "engine"),
        ({"scheduler": "tcp://x:1"}, ConfigError, "engine='dask'"),
        ({"threads": 0}, ConfigError, "threads"),
    ],
)
def test_bad_parameters_are_refused(
    artifact: Path, tmp_path: Path, kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        run_batch(artifact, tmp_path / "r.parquet", show_progress=False, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "r.parquet").exists()


def test_bad_output_paths_are_refused(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unsupported extension \.json"):
        run_batch(artifact, tmp_path / "recs.json", show_progress=False)
    foreign = tmp_path / "data.parquet"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a recsys batch output"):
        run_batch(artifact, foreign, show_progress=False)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_an_old_single_file_output_is_replaced(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    pd.DataFrame({"user_id": ["x"]}).to_parquet(out)
    result = run_batch(artifact, out, k=2, show_progress=False)
    assert out.is_dir() and len(pd.read_parquet(out)) == result.rows


def test_resume_recomputes_a_damaged_part(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    first = run_batch(artifact, out, k=5, chunk_size=60, show_progress=False)
    victim = _part_files(out)[1]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated behind the job's back
    again = run_batch(artifact, out, k=5, chunk_size=60, resume=True, show_progress=False)
    assert again.resumed_parts == first.parts - 1
    assert [p["sha256"] for p in again.manifest["parts"]] == [
        p["sha256"] for p in first.manifest["parts"]
    ]
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(first.out))
