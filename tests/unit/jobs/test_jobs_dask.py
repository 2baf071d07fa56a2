"""The Dask engine on a real 2-worker LocalCluster: same bytes as local, one load per process."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from recsys.errors import ArtifactError  # noqa: E402
from recsys.jobs import run_batch  # noqa: E402
from recsys.jobs.batch import ArtifactInfo  # noqa: E402
from recsys.jobs.dask_engine import worker_artifact  # noqa: E402
from recsys.pipeline import Pipeline  # noqa: E402


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    """Two in-process workers with one thread each (processes are tested in integration)."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _parts(manifest: dict[str, object]) -> list[tuple[str, int, str]]:
    return [(p["name"], p["rows"], p["sha256"]) for p in manifest["parts"]]  # type: ignore[attr-defined, index]


def test_dask_output_is_identical_to_local(
    artifact: Path, pipeline: Pipeline, tmp_path: Path, client: distributed.Client
) -> None:
    local = run_batch(artifact, tmp_path / "local.parquet", k=6, chunk_size=25, show_progress=False)
    dask = run_batch(
        artifact,
        tmp_path / "dask.parquet",
        k=6,
        chunk_size=25,
        engine="dask",
        client=client,
        show_progress=False,
    )
    assert _parts(dask.manifest) == _parts(local.manifest)
    got = pd.read_parquet(dask.out)
    pd.testing.assert_frame_equal(got, pipeline.recommend(pipeline.user_map.ids, k=6))
    assert dask.manifest["engine"]["name"] == "dask"
    assert dask.manifest["engine"]["workers"] == 2
    # both workers did work, and each process loaded the artifact once
    workers = {p["worker"] for p in dask.manifest["parts"]}
    assert len(workers) == 2 and all(w.startswith("inproc://") for w in workers)
    assert dask.manifest["artifact_loads"] == dict.fromkeys(workers, 1)
    assert dask.users == local.users and dask.rows == local.rows


def test_dask_csv_and_users_list_match_local(
    artifact: Path, pipeline: Pipeline, tmp_path: Path, client: distributed.Client
) -> None:
    users = [*pipeline.user_map.ids[10:60].tolist(), "stranger"]
    local = run_batch(
        artifact, tmp_path / "l.csv", users=users, k=3, chunk_size=7, show_progress=False
    )
    dask = run_batch(
        artifact,
        tmp_path / "d.csv",
        users=users,
        k=3,
        chunk_size=7,
        engine="dask",
        client=client,
        show_progress=False,
    )
    assert (tmp_path / "l.csv").read_bytes() == (tmp_path / "d.csv").read_bytes()
    assert local.unknown_users == dask.unknown_users == 1


def test_dask_resume_skips_finished_parts(
    artifact: Path, tmp_path: Path, client: distributed.Client
) -> None:
    out = tmp_path / "recs.parquet"
    full = run_batch(
        artifact, out, k=4, chunk_size=30, engine="dask", client=client, show_progress=False
    )
    (out / "_manifest.json").unlink()
    for name in ("part-00001.parquet", "part-00004.parquet"):
        (out / name).unlink()
    resumed = run_batch(
        artifact,
        out,
        k=4,
        chunk_size=30,
        engine="dask",
        client=client,
        resume=True,
        show_progress=False,
    )
    assert resumed.resumed_parts == full.parts - 2
    assert _parts(resumed.manifest) == _parts(full.manifest)
    computed = [p for p in resumed.manifest["parts"] if p["worker"]]
    assert sorted(p["index"] for p in computed) == [1, 4]


def test_worker_cache_loads_once_and_notices_a_new_artifact(artifact: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(artifact, copy)
    info = ArtifactInfo.read(copy)
    first, loads = worker_artifact(str(copy), info.manifest_sha256)
    again, loads_again = worker_artifact(str(copy), info.manifest_sha256)
    assert again is first and loads == loads_again == 1
    # the artifact is replaced after the job started: a worker that has not loaded it
    # yet (here: reached through another path) refuses to mix versions
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["created"] = "2000-01-01T00:00:00+00:00"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    link = tmp_path / "link"
    link.symlink_to(copy)
    with pytest.raises(ArtifactError, match="changed since the job started"):
        worker_artifact(str(link), info.manifest_sha256)
    # a worker that has it keeps serving the version the job started with
    assert worker_artifact(str(copy), info.manifest_sha256)[0] is first


def test_a_damaged_artifact_is_refused_before_any_task(
    artifact: Path, tmp_path: Path, client: distributed.Client
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(artifact, copy)
    out = tmp_path / "recs.parquet"
    (copy / "models" / "als" / "state.npz").write_bytes(b"broken")
    with pytest.raises(ArtifactError, match="damaged"):
        run_batch(copy, out, engine="dask", client=client, show_progress=False)
    assert not out.exists()


def test_scheduler_address_selects_the_dask_engine(
    artifact: Path, pipeline: Pipeline, tmp_path: Path, client: distributed.Client
) -> None:
    from recsys.jobs import add_recommend_arguments, run_recommend_job

    parser = argparse.ArgumentParser()
    add_recommend_arguments(parser)
    out = tmp_path / "recs.parquet"
    args = parser.parse_args(
        ["--artifact", str(artifact), "--all-users", "--out", str(out), "--k", "4",
         "--chunk-size", "64", "--scheduler", client.scheduler.address]
    )  # fmt: skip
    assert run_recommend_job(args) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["engine"]["name"] == "dask"
    assert manifest["engine"]["scheduler"] == client.scheduler.address
    expected = pipeline.recommend(pipeline.user_map.ids, k=4)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)
