"""``recsys recommend`` as a user runs it: SIGKILL mid-run then --resume, and a Dask cluster.

Every run is a real ``python -m recsys.cli`` subprocess on a saved artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import recsys
from recsys.config import load_config
from recsys.data import generate_synthetic
from recsys.models import ALS, Popular
from recsys.pipeline import Pipeline
from recsys.types import TrainingData

pytestmark = pytest.mark.integration

N_USERS = 8_000
CHUNK = 40  # 200 parts: a run lasts long enough to be killed at several points
K = 20


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = generate_synthetic(
        N_USERS, 2_000, 120_000, seed=3, string_ids=True, with_items=False, with_users=False
    )
    data = TrainingData.from_frame(ds.interactions)
    models = {
        "als": ALS(embedding_dim=32, epochs=2, num_threads=1).fit(data, show_progress=False),
        "popular": Popular().fit(data, show_progress=False),
    }
    path = tmp_path_factory.mktemp("cli") / "model"
    Pipeline(load_config(), data.user_map, data.item_map, models).save(path)
    return path


def _command(artifact: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "recsys.cli",
        "-q",
        "recommend",
        "--artifact",
        str(artifact),
        "--all-users",
        "--k",
        str(K),
        "--out",
        str(out),
        "--chunk-size",
        str(CHUNK),
        *extra,
    ]


def _env() -> dict[str, str]:
    root = str(Path(recsys.__file__).resolve().parent.parent)
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not old else f"{root}{os.pathsep}{old}"}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _part_hashes(parts_dir: Path) -> list[tuple[str, str]]:
    return [
        (p.name, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(parts_dir.glob("part-*"))
    ]


def _kill_when(cmd: list[str], cwd: Path, parts_dir: Path, min_parts: int) -> bool:
    """Start ``cmd``, SIGKILL it once ``parts_dir`` holds ``min_parts`` parts (or its job
    file, for 0). Returns False when the run finished before it could be killed."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            started = (parts_dir / "_job.json").exists()
            if started and len(list(parts_dir.glob("part-*"))) >= min_parts:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def reference(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run with two threads."""
    out = tmp_path_factory.mktemp("reference") / "recs.parquet"
    done = _run(_command(artifact, out, "--threads", "2"), out.parent)
    assert done.returncode == 0, done.stderr
    return out


def _check_complete(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, expected)
    # no user missing or doubled
    assert got["user_id"].nunique() == N_USERS and len(got) == K * N_USERS
    assert not got.duplicated(["user_id", "rank"]).any()
    np.testing.assert_array_equal(got.groupby("user_id").size().unique(), [K])


def test_killed_runs_resume_to_the_uninterrupted_output(
    artifact: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "recs.parquet"
    n_parts = -(-N_USERS // CHUNK)
    kills = 0
    # killed as soon as it starts, then twice more part-way, each time resumed
    for i, min_parts in enumerate((0, n_parts // 3, 2 * n_parts // 3)):
        extra = ["--threads", "1"] + (["--resume"] if i else [])
        if _kill_when(_command(artifact, out, *extra), tmp_path, out, min_parts):
            kills += 1
            assert not (out / "_manifest.json").exists()
    assert kills >= 2, "the job finished before it could be killed; make it longer"

    final = _run(_command(artifact, out, "--threads", "2", "--resume"), tmp_path)
    assert final.returncode == 0, final.stderr
    info = json.loads((out / "_manifest.json").read_text())
    assert info["resumed_parts"] > 0 and info["users"] == N_USERS
    assert _part_hashes(out) == _part_hashes(reference)
    _check_complete(pd.read_parquet(out), pd.read_parquet(reference))


def test_killed_csv_run_resumes_to_the_same_rows(
    artifact: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "recs.csv"
    parts_dir = tmp_path / "recs.csv.parts"
    killed = _kill_when(_command(artifact, out, "--threads", "1"), tmp_path, parts_dir, 50)
    assert killed, "the job finished before it could be killed; make it longer"
    assert not out.exists() and not (tmp_path / "recs.csv.manifest.json").exists()
    final = _run(_command(artifact, out, "--resume"), tmp_path)
    assert final.returncode == 0, final.stderr
    info = json.loads((tmp_path / "recs.csv.manifest.json").read_text())
    assert info["resumed_parts"] >= 50 and not parts_dir.exists()
    got = pd.read_csv(out, dtype={"user_id": "str", "item_id": "str"})
    got["rank"] = got["rank"].astype(np.int32)
    got["score"] = got["score"].astype(np.float32)
    _check_complete(got, pd.read_parquet(reference))


def test_dask_engine_with_worker_processes_matches_local(
    artifact: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dask.parquet"
    dask = _run(_command(artifact, out, "--engine", "dask", "--dask-workers", "2"), tmp_path)
    assert dask.returncode == 0, dask.stderr
    assert _part_hashes(out) == _part_hashes(reference)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["engine"]["name"] == "dask" and manifest["engine"]["workers"] == 2
    # two worker processes, each loaded the artifact exactly once for the whole job
    loads = manifest["artifact_loads"]
    assert len(loads) == 2 and set(loads.values()) == {1}
    assert len({w.split(" ")[-1] for w in loads}) == 2  # distinct host:pid
