"""Benchmark: the hybrid batch job (``recsys recommend --all-users``) on ML-100K, users/s.

Two measurements on one artifact (``make demo``'s: the default hybrid of the temporal
ML-100K split; build it with the commands below):

* ``job``: ``recsys recommend --artifact A --all-users --k 10 --out ...`` run as a fresh
  process ``--repeats`` times; users/s and the scoring time (the manifest's
  ``recommend_seconds``: the job without the artifact load) as medians. With
  ``--baseline-src DIR`` (a checkout of an earlier commit, e.g. a ``git worktree``) the
  same job runs from that source too, alternating with this one in the same run, and the
  outputs of the two are compared row for row (items, ranks, scores, sources).
* ``stages``: all users as one :func:`recsys.recommend.recommend_block` call in this
  process, with a timer around each stage (each candidate source, the merge, feature
  assembly, ranker inference, the top-k cut; the timers of ``profile_recommend.py``),
  median over ``--repeats`` calls (BLAS at one thread, as in the job), plus a cProfile
  top list of one call; with ``--baseline-src`` the baseline's stages too (a process run
  from that source).

Usage::

    recsys datasets split --dataset ml-100k --method temporal --test-frac 0.2 --out D/data
    recsys train --interactions D/data/train.parquet --items D/data/items.parquet \\
        --users D/data/users.parquet --item-relations D/data/item_relations.parquet \\
        --out D/artifact
    PYTHONPATH=. .venv/bin/python benchmarks/batch_hybrid.py --artifact D/artifact \\
        [--baseline-src /tmp/base] [--repeats 3] [--out benchmarks/results/batch_hybrid.json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_recommend import StageClock, instrument

from recsys.pipeline import Pipeline
from recsys.recommend import RecommendQueries

TARGET_USERS_PER_S = 1000.0


def run_job(src: Path, artifact: Path, out: Path, k: int) -> dict[str, Any]:
    """One ``recsys recommend --all-users`` process run from the source tree ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "recsys.cli", "recommend", "--artifact", str(artifact)]
    cmd += ["--all-users", "--k", str(k), "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=src)
    wall = time.perf_counter() - t0
    manifest = json.loads((out / "_manifest.json").read_text())
    users = int(manifest["users"])
    scoring = float(manifest["timings"]["recommend_seconds"])
    return {
        "process_wall_s": wall,
        "job_seconds": float(manifest["elapsed_seconds"]),
        "recommend_seconds": scoring,
        "users": users,
        "users_per_s": users / float(manifest["elapsed_seconds"]),
        "scoring_users_per_s": users / scoring,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("process_wall_s", "job_seconds", "recommend_seconds", "users_per_s")
    out: dict[str, Any] = {
        f"median_{k}": round(float(np.median([r[k] for r in runs])), 3) for k in keys
    }
    out["median_scoring_users_per_s"] = round(
        float(np.median([r["scoring_users_per_s"] for r in runs])), 1
    )
    out["runs"] = [
        {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in runs
    ]
    return out


def same_output(a: Path, b: Path) -> bool:
    ta, tb = pq.read_table(a), pq.read_table(b)
    cols = ["user_id", "item_id", "rank", "score", "sources"]
    return all(ta.column(c).to_pylist() == tb.column(c).to_pylist() for c in cols)


def stage_profile(artifact: Path, k: int, repeats: int) -> dict[str, Any]:
    """Stages of one all-users block, BLAS at one thread as the job's local engine runs it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        return _stage_profile(artifact, k, repeats)


def _stage_profile(artifact: Path, k: int, repeats: int) -> dict[str, Any]:
    clock = StageClock()
    instrument(clock)
    pipe = Pipeline.load(artifact)
    queries = RecommendQueries.for_users(np.arange(len(pipe.user_map)))
    pipe.recommend_block(RecommendQueries.for_users(np.arange(8)), k)  # lazy state
    totals: list[float] = []
    per_stage: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        clock.current = defaultdict(float)
        t0 = time.perf_counter()
        pipe.recommend_block(queries, k)
        totals.append(time.perf_counter() - t0)
        for name, sec in clock.current.items():
            per_stage[name].append(sec)
    total = float(np.median(totals))
    stages = {
        name: {
            "median_s": round(float(np.median(v)), 4),
            "share": round(float(np.median(v)) / total, 4),
        }
        for name, v in sorted(per_stage.items(), key=lambda kv: -float(np.median(kv[1])))
    }
    pr = cProfile.Profile()
    pr.enable()
    pipe.recommend_block(queries, k)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(15)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return {
        "users": len(queries),
        "block_median_s": round(total, 4),
        "users_per_s": round(len(queries) / total, 1),
        "stages": stages,
        "cprofile_tottime": [ln for ln in lines[start:] if ln.strip()],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, default=Path("build/demo/artifact"))
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_hybrid.json"))
    ap.add_argument("--stages-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stages_only:  # the baseline's stages, in a process importing its source
        print(json.dumps(stage_profile(args.artifact, args.k, args.repeats)))
        return 0
    artifact = args.artifact.resolve()
    here = Path(__file__).resolve().parent.parent
    srcs = {"current": here}
    if args.baseline_src is not None:
        srcs["baseline"] = args.baseline_src.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="recsys-batch-hybrid-"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in srcs}
    for i in range(args.repeats):
        for name, src in srcs.items():  # alternating: both see the same machine load
            r = run_job(src, artifact, tmp / f"{name}-{i}.parquet", args.k)
            runs[name].append(r)
            print(f"{name} run {i}: {r['users_per_s']:.0f} users/s", file=sys.stderr)
    result: dict[str, Any] = {
        "benchmark": "batch_hybrid",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "PYTHONPATH=. .venv/bin/python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "job_command": f"recsys recommend --artifact {args.artifact} --all-users --k {args.k} "
        "--out OUT",
        "artifact": str(args.artifact),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "target_users_per_s": TARGET_USERS_PER_S,
        "job": {name: summarise(r) for name, r in runs.items()},
    }
    if "baseline" in srcs:
        result["identical_to_baseline"] = all(
            same_output(tmp / f"current-{i}.parquet", tmp / f"baseline-{i}.parquet")
            for i in range(args.repeats)
        )
        cur = result["job"]["current"]["median_users_per_s"]
        base = result["job"]["baseline"]["median_users_per_s"]
        result["speedup"] = round(cur / base, 2)
    if "baseline" in srcs:
        cmd = [sys.executable, __file__, "--stages-only", "--artifact", str(artifact)]
        cmd += ["--k", str(args.k), "--repeats", str(args.repeats)]
        env = {**os.environ, "PYTHONPATH": str(srcs["baseline"])}
        done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        result["stages_baseline"] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stages"] = stage_profile(artifact, args.k, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if "stages" not in k}, indent=1)[:3000])
    print(json.dumps(result["stages"]["stages"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
