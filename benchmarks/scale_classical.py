"""Benchmark: BPR and ALS at MovieLens-20M scale, ours beside implicit, time and peak memory.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/scale_classical.py                       # 20M
    PYTHONPATH=. .venv/bin/python benchmarks/scale_classical.py --interactions 2000000

Data: ``recsys.data.generate_synthetic`` (Zipf item popularity, lognormal user activity;
138,000 users x 27,000 items x 20,000,000 interactions by default; smaller
``--interactions`` scale users and items by the same factor, as the peers' generator
does). A first subprocess draws it once and caches the index columns as ``.npy``.

Each measurement runs in a fresh subprocess: it loads the cached columns, builds its
input (ours: :class:`recsys.types.TrainingData` and its cached CSR matrix; implicit: the
same CSR matrix), resets the kernel's high-water mark (``5`` to ``/proc/self/clear_refs``)
and fits. Reported per side: the fit's wall-clock and CPU time, ``VmHWM`` from
``/proc/self/status`` during the fit (``peak_rss_bytes``), the resident size just before
it and their difference (``fit_extra_bytes``: what the fit itself allocated), the peak
net of the resident size after imports (``peak_net_of_imports_bytes``: data plus fit,
without the libraries; our package imports every registered model, torch included), and
the time of a top-100 recommendation for 10,000 random users (seed 7) with seen items
excluded. The same
hyperparameters as the peers' scale probe (ALS 64 factors, 15 iterations, reg 0.01,
alpha 1; BPR 64 factors, 20 iterations, lr 0.01, reg 0.01) and the same thread count on
both sides. Results go to ``benchmarks/results/scale_classical.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FULL = {"n_users": 138_000, "n_items": 27_000, "n_interactions": 20_000_000}
PARAMS: dict[str, dict[str, Any]] = {
    "als": {"embedding_dim": 64, "epochs": 15, "reg": 0.01, "alpha": 1.0},
    "bpr": {"embedding_dim": 64, "epochs": 20, "learning_rate": 0.01, "reg": 0.01},
}


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


def _sizes(n_interactions: int) -> dict[str, int]:
    scale = n_interactions / FULL["n_interactions"]
    return {
        "n_users": max(10, int(FULL["n_users"] * scale)),
        "n_items": max(10, int(FULL["n_items"] * scale)),
        "n_interactions": n_interactions,
    }


def _cache_dir(args: argparse.Namespace) -> Path:
    s = _sizes(args.interactions)
    return Path(args.cache_dir) / f"n{s['n_interactions']}_u{s['n_users']}_i{s['n_items']}_s0"


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Draw the data set once and cache the 0-based index columns (own subprocess)."""
    import numpy as np

    from recsys.data import generate_synthetic

    cache = _cache_dir(args)
    sizes = _sizes(args.interactions)
    start = time.perf_counter()
    data = generate_synthetic(
        sizes["n_users"],
        sizes["n_items"],
        sizes["n_interactions"],
        seed=0,
        with_items=False,
        with_users=False,
    )
    elapsed = time.perf_counter() - start
    frame = data.interactions
    tmp = cache.with_suffix(".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    # generate_synthetic numbers ids 1..n
    np.save(tmp / "user_idx.npy", frame["user_id"].to_numpy(np.int64) - 1)
    np.save(tmp / "item_idx.npy", frame["item_id"].to_numpy(np.int64) - 1)
    info = {**sizes, "generate_s": round(elapsed, 2), "generator": "recsys.data.generate_synthetic"}
    (tmp / "info.json").write_text(json.dumps(info))
    tmp.rename(cache)
    return info


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One fit of one side, measured inside a fresh subprocess."""
    import numpy as np
    import scipy.sparse as sp

    if args.side == "ours":
        import recsys.models  # noqa: F401  (the package imports every registered model)
    else:
        import implicit.cpu.als
        import implicit.cpu.bpr  # noqa: F401
    gc.collect()
    rss_imports = _status("VmRSS")
    cache = _cache_dir(args)
    info = json.loads((cache / "info.json").read_text())
    users = np.load(cache / "user_idx.npy")
    items = np.load(cache / "item_idx.npy")
    shape = (info["n_users"], info["n_items"])
    params = PARAMS[args.model]
    seed = args.seed
    threads = args.threads
    rec_users = np.sort(
        np.random.default_rng(7).choice(shape[0], size=min(10_000, shape[0]), replace=False)
    )
    if args.side == "ours":
        from recsys.models import get_model_class
        from recsys.types import IdMap, TrainingData

        data = TrainingData(
            IdMap(np.arange(1, shape[0] + 1)), IdMap(np.arange(1, shape[1] + 1)), users, items
        )
        matrix = data.user_items  # built (and cached) before the measured fit
        model: Any = get_model_class(args.model)(
            **params, seed=seed, num_threads=threads, device="cpu"
        )
        fit = lambda: model.fit(data, show_progress=False)  # noqa: E731
        recommend = lambda: model.recommend(rec_users, k=100)  # noqa: E731
    else:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=shape)
        matrix.sort_indices()
        del users, items
        if args.model == "als":
            model = AlternatingLeastSquares(
                factors=params["embedding_dim"], iterations=params["epochs"],
                regularization=params["reg"], alpha=params["alpha"], num_threads=threads,
                random_state=seed,
            )  # fmt: skip
        else:
            model = BayesianPersonalizedRanking(
                factors=params["embedding_dim"], iterations=params["epochs"],
                learning_rate=params["learning_rate"], regularization=params["reg"],
                num_threads=threads, random_state=seed,
            )  # fmt: skip
        rec_rows = matrix[rec_users]
        fit = lambda: model.fit(matrix, show_progress=False)  # noqa: E731
        recommend = lambda: model.recommend(  # noqa: E731
            rec_users, rec_rows, N=100, filter_already_liked_items=True
        )
    gc.collect()
    rss_before = _status("VmRSS")
    load_before = os.getloadavg()[0]
    _reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    fit()
    fit_s, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = _status("VmHWM")
    start = time.perf_counter()
    recommend()
    rec_s = time.perf_counter() - start
    return {
        "nnz": int(matrix.nnz),
        "fit_s": round(fit_s, 2),
        "fit_cpu_s": round(cpu, 2),
        "peak_rss_bytes": peak,
        "rss_imports_bytes": rss_imports,
        "rss_before_fit_bytes": rss_before,
        "fit_extra_bytes": peak - rss_before,
        "peak_net_of_imports_bytes": peak - rss_imports,
        "recommend_10k_top100_s": round(rec_s, 3),
        "load1_before_fit": round(load_before, 2),
    }


def _subprocess(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *extra, "--interactions", str(args.interactions)]
    cmd += ["--cache-dir", args.cache_dir, "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(var, "1")  # implicit parallelises itself, as in the peers' runner
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "implicit", "threadpoolctl"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interactions", type=int, default=FULL["n_interactions"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--models", default="als,bpr")
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "recsys-bench"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale_classical.json"))
    ap.add_argument("--_prepare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_worker", nargs=3, metavar=("MODEL", "SIDE", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._prepare:
        print(json.dumps(prepare(args)))
        return
    if args._worker:
        args.model, args.side, seed = args._worker
        args.seed = int(seed)
        print(json.dumps(worker(args)))
        return

    cache = _cache_dir(args)
    data_info = (
        json.loads((cache / "info.json").read_text())
        if (cache / "info.json").is_file()
        else _subprocess(args, ["--_prepare"])
    )
    print(f"data: {data_info}", flush=True)
    result: dict[str, Any] = {
        "benchmark": "scale_classical",
        "data": data_info,
        "params": PARAMS,
        "threads": args.threads,
        "repeats": args.repeats,
        "recommend": "top-100 for 10,000 random users (seed 7), seen items excluded",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/scale_classical.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "memory_total_bytes": _meminfo_total(),
        },
        "versions": _versions(),
        "models": {},
    }
    out = Path(args.out)
    if out.is_file():  # keep other models measured earlier on the same data
        earlier = json.loads(out.read_text())
        if earlier.get("data", {}).get("n_interactions") == data_info["n_interactions"]:
            result["models"] = {
                name: {**entry, "command": earlier.get("command"), "date": earlier.get("date")}
                if "command" not in entry
                else entry
                for name, entry in earlier.get("models", {}).items()
            }
    for model in args.models.split(","):
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "implicit": []}
        for r in range(args.repeats):
            for side in ("ours", "implicit"):  # alternate, so drift in load hits both
                run = _subprocess(args, ["--_worker", model, side, str(42 + r)])
                runs[side].append(run)
                print(f"{model} {side} repeat {r}: {run}", flush=True)
        entry: dict[str, Any] = {"command": result["command"], "date": result["date"]}
        for side, side_runs in runs.items():
            entry[side] = {
                "fit_s_median": statistics.median(x["fit_s"] for x in side_runs),
                "fit_cpu_s_median": statistics.median(x["fit_cpu_s"] for x in side_runs),
                "peak_rss_bytes_max": max(x["peak_rss_bytes"] for x in side_runs),
                "fit_extra_bytes_max": max(x["fit_extra_bytes"] for x in side_runs),
                "peak_net_of_imports_bytes_max": max(
                    x["peak_net_of_imports_bytes"] for x in side_runs
                ),
                "recommend_10k_top100_s_median": statistics.median(
                    x["recommend_10k_top100_s"] for x in side_runs
                ),
                "runs": side_runs,
            }
        entry["fit_time_ratio_ours_over_implicit"] = (
            entry["ours"]["fit_s_median"] / entry["implicit"]["fit_s_median"]
        )
        entry["fit_cpu_time_ratio_ours_over_implicit"] = (
            entry["ours"]["fit_cpu_s_median"] / entry["implicit"]["fit_cpu_s_median"]
        )
        result["models"][model] = entry
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")  # partial results survive
    print(f"wrote {out}")


def _meminfo_total() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


if __name__ == "__main__":
    main()
