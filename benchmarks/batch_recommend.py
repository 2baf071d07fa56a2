"""Benchmark: the batch recommendation job (``recsys recommend``) at MovieLens-20M scale.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/batch_recommend.py                  # 20M
    PYTHONPATH=. .venv/bin/python benchmarks/batch_recommend.py --users 13800 \\
        --items 2700 --interactions 2000000                                      # smaller

Data and model: ``recsys.data.generate_synthetic`` (138,000 users x 27,000 items x
20,000,000 interactions by default, seed 0) and ALS with 64 factors and ``--epochs``
(default 2) sweeps: quality is irrelevant here, only the factors' shapes matter. The
artifact (ALS + popularity) is saved once; every measurement uses its factors.

Measured, all with ``--threads`` threads (default 2) and top-``--k`` (default 100) for
every user, seen items excluded:

* ``bound``: the users x items matrix product alone, in the blocks the model uses
  (``recsys.models.base._BLOCK_BYTES``, 64 MiB), both as one BLAS call per block with
  ``threads`` BLAS threads and as a pool of ``threads`` Python threads with one BLAS
  thread each; the faster is the bound.
* ``implicit``: implicit's own batched ``AlternatingLeastSquares.recommend(userids,
  user_items, N=k)`` on the same factors (its C++ top-k, ``num_threads=threads``, BLAS
  at one thread as implicit asks).
* ``jobs_local``: :func:`recsys.jobs.run_batch` in fresh subprocesses, the local engine
  (its chunk threads call the model's ``recommend``, whose blocks run on one
  process-wide pool of the usable CPUs, so the last chunk also uses every core)
  with two chunk sizes (``--chunk-sizes``), writing parquet: wall time, scoring time
  (``recommend_seconds``: the job without the artifact load), users/s, and peak memory,
  ``VmHWM`` of the process (reset after imports via ``/proc/self/clear_refs``) beside
  that of a process that only loads the artifact (``load_only``).
* ``job_dask``: the Dask engine on a 2-worker ``LocalCluster`` (one thread each) with
  the smaller chunk size (many parts keep both workers busy), against the local job of
  the same chunk size: overhead, and a part-by-part sha256 comparison of the outputs.
* ``model_ranking``: the model's own ``recommend`` of every user (the job's scoring
  without the parquet parts), interleaved with bound timings: ``pruned``, the default
  for factor models on catalogues of 4,096+ items (:mod:`recsys.models._ip_topk` scores
  only the items whose norm can still reach a user's top-``k``: exact, the same lists
  and scores bit for bit), and ``dense``, every item scored and the two-pass grouped
  top-k of ``recsys.models.base.topk``. Both outputs are compared in full, and
  ``scored_fraction`` is the share of the users x items products the pruned path
  computed.
* ``--candidate-tree DIR``: the same local job run from another checkout (e.g. with a
  proposal applied to the model base), its output compared with the current tree's.

The machine these run on is shared, and its load drifts over minutes, so every ratio is
*paired*: the job with the largest chunk size (and the candidate's) times the bound and
implicit right after the job in the same process, and the summary's ratios and targets
(job within 2x of the bound, throughput at least implicit's) use those pairs.

Results go to ``benchmarks/results/batch_recommend.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
from recsys.models.base import _BLOCK_BYTES as BLOCK_BYTES  # noqa: E402  (the model's blocks)


# ---------------------------------------------------------------------------- helpers
def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), [round(t, 3) for t in times]


def _log(msg: str) -> None:
    sys.stderr.write(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------- peers
def _factors(artifact: Path) -> tuple[NDArray[np.float32], NDArray[np.float32], Any]:
    """The ALS factors and the seen-item matrix of the benchmark artifact."""
    from recsys.pipeline import Pipeline

    pipe = Pipeline.load(artifact)
    model: Any = pipe.models["als"]
    users_f = np.ascontiguousarray(model.user_factors, np.float32)
    items_f = np.ascontiguousarray(model.item_factors, np.float32)
    return users_f, items_f, pipe.training_matrix()


def _bound_once(users_f: NDArray[np.float32], items_f: NDArray[np.float32], threads: int) -> dict:
    """One timing of the product in model-sized blocks, with BLAS threads and with a pool.

    Each thread writes its blocks into one reused output buffer (``np.matmul(..., out=)``),
    as the model's scoring does: the bound never pays for fresh pages either.
    """
    import threading

    from threadpoolctl import threadpool_limits

    block = max(1, BLOCK_BYTES // (4 * items_f.shape[0]))
    starts = range(0, users_f.shape[0], block)
    local = threading.local()
    items_t = items_f.T

    def product(start: int) -> None:
        u = users_f[start : start + block]
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((block, items_f.shape[0]), np.float32)
        np.matmul(u, items_t, out=buf[: len(u)])

    t0 = time.perf_counter()
    with threadpool_limits(threads, "blas"):
        for s in starts:
            product(s)
    t_blas = time.perf_counter() - t0
    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"), ThreadPoolExecutor(threads) as pool:
        list(pool.map(product, starts))
    t_pool = time.perf_counter() - t0
    return {"seconds": min(t_blas, t_pool), "blas_threads": t_blas, "thread_pool": t_pool}


def _implicit_seconds(
    users_f: NDArray[np.float32], items_f: NDArray[np.float32], seen: Any, threads: int, k: int
) -> float:
    """implicit's batched ``recommend`` of every user on these factors, seen items excluded."""
    import implicit.cpu.als
    from threadpoolctl import threadpool_limits

    peer = implicit.cpu.als.AlternatingLeastSquares(factors=items_f.shape[1], num_threads=threads)
    peer.user_factors, peer.item_factors = users_f, items_f
    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):  # as implicit asks
        peer.recommend(np.arange(users_f.shape[0]), seen, N=k, filter_already_liked_items=True)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- children
def _child_load(artifact: str) -> dict[str, Any]:
    from recsys.pipeline import Pipeline

    rss_imports = _status("VmRSS")
    _reset_peak()
    pipe = Pipeline.load(Path(artifact))
    return {
        "rss_after_imports_bytes": rss_imports,
        "peak_rss_bytes": _status("VmHWM"),
        "n_users": len(pipe.user_map),
    }


def _child_job(
    artifact: str, out: str, chunk: int, engine: str, threads: int, k: int, paired: bool
) -> dict:
    import recsys.models.base
    import recsys.models.factors
    from recsys.jobs import run_batch

    rss_imports = _status("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    result = run_batch(
        artifact,
        out,
        k=k,
        chunk_size=chunk,
        engine=engine,  # type: ignore[arg-type]
        threads=1 if engine == "dask" else threads,
        dask_workers=2,
        show_progress=False,
    )
    wall = time.perf_counter() - t0
    peak = _status("VmHWM")
    out_info: dict[str, Any] = {
        "engine": engine,
        "tree": str(Path(recsys.models.base.__file__).resolve().parents[2]),
        "models_base_topk": (
            "norm-pruned" if hasattr(recsys.models.factors, "_PRUNE_MIN_ITEMS") else "dense"
        ),
        "chunk_size": chunk,
        "threads": threads if engine == "local" else "2 workers x 1",
        "wall_seconds": round(wall, 3),
        "recommend_seconds": result.manifest["timings"]["recommend_seconds"],
        "load_seconds": result.manifest["timings"]["load_seconds"],
        "users": result.users,
        "rows": result.rows,
        "parts": result.parts,
        "users_per_second": round(result.users / wall, 1),
        "peak_rss_bytes": peak,
        "rss_after_imports_bytes": rss_imports,
        "artifact_loads": result.manifest["artifact_loads"],
        "part_sha256": [p["sha256"] for p in result.manifest["parts"]],
    }
    if paired:
        # the machine is shared: the bound and implicit are timed right after the job, in
        # the same process, so the ratios compare runs under the same load
        users_f, items_f, seen = _factors(Path(artifact))
        before = _bound_once(users_f, items_f, threads)
        t_implicit = _implicit_seconds(users_f, items_f, seen, threads, k)
        after = _bound_once(users_f, items_f, threads)
        bound = (before["seconds"] + after["seconds"]) / 2
        scoring = out_info["recommend_seconds"]
        out_info["paired"] = {
            "bound_seconds": round(bound, 3),
            "bound_runs": [before, after],
            "implicit_seconds": round(t_implicit, 3),
            "ratio_to_bound": round(scoring / bound, 3),
            "throughput_over_implicit": round(t_implicit / scoring, 3),
        }
    return out_info


def _run_child(argv: list[str], tree: Path = ROOT) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *argv]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main parts
def _build_artifact(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from recsys.config import load_config
    from recsys.data import generate_synthetic
    from recsys.models import ALS, Popular
    from recsys.pipeline import Pipeline
    from recsys.types import TrainingData

    t0 = time.perf_counter()
    ds = generate_synthetic(
        args.users, args.items, args.interactions, seed=0, with_items=False, with_users=False
    )
    data = TrainingData.from_frame(ds.interactions)
    del ds
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):
        als = ALS(embedding_dim=64, epochs=args.epochs, num_threads=args.threads)
        als.fit(data, show_progress=False)
    t_fit = time.perf_counter() - t0
    popular = Popular().fit(data, show_progress=False)
    pipe = Pipeline(load_config(), data.user_map, data.item_map, {"als": als, "popular": popular})
    pipe.save(path)
    return {
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_interactions": data.n_interactions,
        "data_seconds": round(t_data, 2),
        "als_fit_seconds": round(t_fit, 2),
        "als_epochs": args.epochs,
        "factors": 64,
    }


def _in_process(args: argparse.Namespace, artifact: Path) -> dict[str, Any]:
    """The model's ranking of every user, pruned and dense, interleaved with the bound (so
    each ratio compares runs under the same load), and implicit, on the artifact's factors."""
    import implicit
    from threadpoolctl import threadpool_limits

    import recsys.models.base as base
    from recsys.models import _ip_topk, factors
    from recsys.pipeline import Pipeline

    users_f, items_f, seen = _factors(artifact)
    n_users, n_items = seen.shape
    model: Any = Pipeline.load(artifact).models["als"]
    users = np.arange(n_users)
    k, threads = args.k, args.threads
    base._RECOMMEND_THREADS = threads
    prune_min = factors._PRUNE_MIN_ITEMS

    def ranking(pruned: bool) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        factors._PRUNE_MIN_ITEMS = prune_min if pruned else n_items + 1
        try:
            with threadpool_limits(1, "blas"):
                return model.recommend(users, k)
        finally:
            factors._PRUNE_MIN_ITEMS = prune_min

    # the share of the products the pruned path computes (an untimed run)
    product, scored = _ip_topk._product, [0]

    def counting(q: NDArray[np.float32], f: NDArray[np.float32]) -> NDArray[np.float32]:
        scored[0] += len(q) * len(f)
        return product(q, f)

    _ip_topk._product = counting
    try:
        pruned_out = ranking(True)
    finally:
        _ip_topk._product = product
    dense_out = ranking(False)
    identical = all(np.array_equal(a, b) for a, b in zip(pruned_out, dense_out, strict=True))
    del pruned_out, dense_out

    _log("bound, pruned and dense ranking, interleaved")
    bounds, timed = [], {"pruned": [], "dense": []}  # type: ignore[var-annotated]
    for _ in range(args.repeats):
        bounds.append(_bound_once(users_f, items_f, threads))
        for name in timed:
            timed[name].append(_median_time(lambda n=name: ranking(n == "pruned"), 1)[0])
    bound = statistics.median(b["seconds"] for b in bounds)

    def summary(runs: list[float]) -> dict[str, Any]:
        ratios = [t / b["seconds"] for t, b in zip(runs, bounds, strict=True)]
        return {
            "seconds": round(statistics.median(runs), 3),
            "runs": [round(t, 3) for t in runs],
            "users_per_second": round(n_users / statistics.median(runs), 1),
            "ratio_to_bound": round(statistics.median(ratios), 3),
            "ratio_to_bound_runs": [round(r, 3) for r in ratios],
        }

    _log("implicit: AlternatingLeastSquares.recommend on every user")
    t_imp = _implicit_seconds(users_f, items_f, seen, threads, k)
    return {
        "block_users": max(1, BLOCK_BYTES // (4 * n_items)),
        "bound": {
            "seconds": round(bound, 3),
            "runs": [{key: round(v, 3) for key, v in b.items()} for b in bounds],
        },
        "model_ranking": {
            "pruned_identical_to_dense": identical,
            "scored_fraction": round(scored[0] / (n_users * n_items), 4),
            "pruned": summary(timed["pruned"]),
            "dense": summary(timed["dense"]),
        },
        "implicit": {
            "seconds": round(t_imp, 3),
            "users_per_second": round(n_users / t_imp, 1),
            "version": implicit.__version__,
        },
    }


def _versions() -> dict[str, str]:
    import dask
    import distributed
    import pandas as pd
    import pyarrow as pa
    import scipy

    import recsys

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "recsys": recsys.__version__,
    }


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "load_average_at_start": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--epochs", type=int, default=2, help="ALS sweeps (default 2)")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-sizes", default="2000,20000")
    parser.add_argument("--repeats", type=int, default=3, help="bound and model ranking")
    parser.add_argument("--implicit-repeats", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="keep the artifact and outputs here")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/batch_recommend.json"
    )
    parser.add_argument(
        "--candidate-tree",
        type=Path,
        help="another checkout (e.g. with a proposed model-base change) whose local job is "
        "also run, with the largest chunk size, on the same artifact",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "load":
            result = _child_load(rest[0])
        else:
            artifact, out, chunk, engine, threads, k, paired = rest
            result = _child_job(
                artifact, out, int(chunk), engine, int(threads), int(k), paired == "1"
            )
        sys.stdout.write(json.dumps(result) + "\n")
        return 0

    started = datetime.now(UTC)
    machine = _machine()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="batch-recommend-"))
    work.mkdir(parents=True, exist_ok=True)
    artifact = work / "artifact"
    try:
        _log(f"data and ALS: {args.users} users x {args.items} items, {args.interactions} events")
        data = _build_artifact(args, artifact)
        gc.collect()
        measured = _in_process(args, artifact)
        gc.collect()

        _log("artifact load alone (memory baseline)")
        load_only = _run_child(["load", str(artifact)])
        chunks = [int(c) for c in args.chunk_sizes.split(",")]

        def job(
            out: Path, chunk: int, engine: str, tree: Path = ROOT, paired: bool = False
        ) -> dict[str, Any]:
            argv = [str(artifact), str(out), str(chunk), engine, str(args.threads), str(args.k)]
            return _run_child(["job", *argv, "1" if paired else "0"], tree)

        jobs = []
        for chunk in chunks:
            _log(f"job: local engine, chunk {chunk}")
            paired = chunk == chunks[-1]
            jobs.append(job(work / f"local-{chunk}.parquet", chunk, "local", paired=paired))
            if chunk != chunks[-1]:
                shutil.rmtree(work / f"local-{chunk}.parquet")
        # Dask with the smaller chunks: many parts keep both workers busy to the end
        _log(f"job: dask engine, 2-worker LocalCluster, chunk {chunks[0]}")
        dask_job = job(work / "dask.parquet", chunks[0], "dask")
        candidate = None
        if args.candidate_tree:
            _log(f"job: local engine, chunk {chunks[-1]}, tree {args.candidate_tree}")
            out = work / "candidate.parquet"
            candidate = job(out, chunks[-1], "local", args.candidate_tree.resolve(), paired=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    main_job = jobs[-1]  # the largest chunk size, timed with its paired bound and implicit
    by_chunk = {j["chunk_size"]: list(j["part_sha256"]) for j in jobs}
    for job in [*jobs, dask_job, *([candidate] if candidate else [])]:
        job["identical_to_local"] = job["part_sha256"] == by_chunk.get(job["chunk_size"])
        job["parts_sha256_digest"] = hashlib.sha256(
            "".join(job.pop("part_sha256")).encode()
        ).hexdigest()
        job["peak_over_load_only_bytes"] = job["peak_rss_bytes"] - load_only["peak_rss_bytes"]
    local_for_dask = next(j for j in jobs if j["chunk_size"] == dask_job["chunk_size"])

    def verdict(job: dict[str, Any]) -> dict[str, Any]:
        paired = job["paired"]
        return {
            "tree": job["tree"],
            "models_base_topk": job["models_base_topk"],
            "recommend_seconds": job["recommend_seconds"],
            "users_per_second_scoring": round(job["users"] / job["recommend_seconds"], 1),
            "users_per_second_wall": job["users_per_second"],
            "bound_seconds_paired": paired["bound_seconds"],
            "ratio_to_bound": paired["ratio_to_bound"],
            "implicit_seconds_paired": paired["implicit_seconds"],
            "throughput_over_implicit": paired["throughput_over_implicit"],
            "target_within_2x_of_bound": paired["ratio_to_bound"] <= 2.0,
            "target_throughput_at_least_implicit": paired["throughput_over_implicit"] >= 1.0,
            "identical_to_local": job["identical_to_local"],
        }

    summary: dict[str, Any] = {
        "job": verdict(main_job),
        "model_ranking_ratio_to_bound": {
            "pruned": measured["model_ranking"]["pruned"]["ratio_to_bound"],
            "dense": measured["model_ranking"]["dense"]["ratio_to_bound"],
            "identical": measured["model_ranking"]["pruned_identical_to_dense"],
            "scored_fraction": measured["model_ranking"]["scored_fraction"],
        },
        "dask": {
            "chunk_size": dask_job["chunk_size"],
            "wall_seconds": dask_job["wall_seconds"],
            "local_wall_seconds": local_for_dask["wall_seconds"],
            "overhead_ratio": round(dask_job["wall_seconds"] / local_for_dask["wall_seconds"], 3),
            "overhead_seconds": round(dask_job["wall_seconds"] - local_for_dask["wall_seconds"], 2),
            "identical_to_local": dask_job["identical_to_local"],
        },
        "peak_rss_bytes_by_chunk_size": {str(j["chunk_size"]): j["peak_rss_bytes"] for j in jobs},
        "load_only_peak_rss_bytes": load_only["peak_rss_bytes"],
    }
    if candidate:
        summary["candidate_tree_job"] = verdict(candidate)
    result = {
        "benchmark": "batch_recommend",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "threads": args.threads,
        "k": args.k,
        "machine": machine,
        "versions": _versions(),
        "data": data,
        "summary": summary,
        **measured,
        "load_only": load_only,
        "jobs_local": jobs,
        "job_dask": dask_job,
        "job_candidate_tree": candidate,
        "elapsed_seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _log(f"wrote {args.out}")
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
