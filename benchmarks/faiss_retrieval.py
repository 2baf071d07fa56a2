"""Benchmark: FAISS item indexes against exact search on a 1M-item synthetic catalogue.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/faiss_retrieval.py --hnsw-norm-ranges 8,1  # 1M
    PYTHONPATH=. .venv/bin/python benchmarks/faiss_retrieval.py --items 100000 --skip-hnsw
    PYTHONPATH=. .venv/bin/python benchmarks/faiss_retrieval.py --items 100000 \
        --hnsw-norm-ranges 8,4,1 --out benchmarks/results/faiss_retrieval_100k.json
    PYTHONPATH=. .venv/bin/python benchmarks/faiss_retrieval.py --skip-hnsw --hnsw-from OLD.json

Data: ``--items`` item vectors of dimension 64 drawn around 1,000 Gaussian cluster centres
(``0.6`` within-cluster noise, log-normal norms, sigma 0.3), the shape of trained factor
vectors; ``--queries`` query vectors are random items plus noise (users close to the
items they like). Ground truth is exact inner-product search (``IndexFlatIP``, the
``"flat"`` kind of :class:`recsys.retrieval.ItemIndex`); recall@100 is the share of the
exact top 100 that an index returns, averaged over queries.

Measured for the exact index, IVF (``4 sqrt(N)`` cells, a sweep of ``nprobe``) and HNSW
(M 32, efConstruction 128, one graph per norm range: ``--hnsw-norm-ranges``, the default 8
and e.g. 1 for a single graph; a sweep of ``efSearch``): build time, batch search time for all
queries, single-query latency (median and p99 over ``--single`` queries, one at a time)
and the speed-ups over exact search, all in the same run with the same threads. The
figures go to ``benchmarks/results/faiss_retrieval.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import importlib.metadata as md
import json
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.retrieval import IndexConfig, ItemIndex

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "faiss_retrieval.json"
K = 100


def clustered_vectors(
    n: int, dim: int, n_clusters: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dim)`` float32 vectors around ``n_clusters`` centres, and the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    step = 200_000
    for start in range(0, n, step):
        m = min(step, n - start)
        c = rng.integers(0, n_clusters, m)
        block = centres[c] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
        block *= rng.lognormal(0.0, 0.3, m).astype(np.float32)[:, None] / np.sqrt(dim)
        out[start : start + m] = block
    return out, centres


def queries_near(items: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Queries: random items plus noise."""
    rng = np.random.default_rng(seed)
    dim = items.shape[1]
    base = items[rng.choice(len(items), n, replace=False)]
    return (base + 0.3 * rng.normal(size=base.shape).astype(np.float32) / np.sqrt(dim)).astype(
        np.float32
    )


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each truth row found in the same row of ``found``."""
    hits = [np.intersect1d(f[f >= 0], t).size / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def timed_search(index: ItemIndex, queries: np.ndarray, single: int) -> dict[str, Any]:
    """Batch time for all queries, and per-query latency of ``single`` one-at-a-time calls."""
    t0 = time.perf_counter()
    items, _ = index.search(queries, K)
    batch = time.perf_counter() - t0
    lat = []
    for q in queries[:single]:
        t0 = time.perf_counter()
        index.search(q[None, :], K)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.asarray(lat) * 1e3
    return {
        "items": items,
        "batch_s": batch,
        "single_median_ms": float(np.median(lat_ms)),
        "single_p99_ms": float(np.percentile(lat_ms, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--nprobe", default="16,32,48,64,96,128")
    parser.add_argument("--ef-search", default="64,128,256,512")
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument(
        "--hnsw-norm-ranges",
        default=str(IndexConfig().hnsw_norm_ranges),
        help="comma-separated numbers of norm ranges (graphs) to build and sweep; 1 is a "
        "single graph",
    )
    parser.add_argument(
        "--hnsw-from",
        type=Path,
        help="with --skip-hnsw: copy the HNSW results of an earlier run of this benchmark "
        "(same data and settings; building HNSW over 1M items takes about 30 min on 2 busy "
        "cores), recording that run's command and date",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    threads = faiss.omp_get_max_threads()
    load_before = os.getloadavg()[0]
    items, _ = clustered_vectors(args.items, args.dim, 1000, seed=0)
    queries = queries_near(items, args.queries, seed=1)

    exact = ItemIndex.build(items, IndexConfig(kind="flat"))
    ex = timed_search(exact, queries, args.single)
    truth = ex["items"]
    results: dict[str, Any] = {
        "flat": {
            "build_s": exact.build_seconds,
            "batch_s": ex["batch_s"],
            "single_median_ms": ex["single_median_ms"],
            "single_p99_ms": ex["single_p99_ms"],
            "recall@100": 1.0,
        }
    }
    print(f"flat build {exact.build_seconds:.1f}s batch {ex['batch_s']:.2f}s", flush=True)
    del exact

    def sweep(index: ItemIndex, name: str, param: str, values: list[int]) -> list[dict[str, Any]]:
        rows = []
        for v in values:
            index.set_search_params(**{param: v})
            r = timed_search(index, queries, args.single)
            row = {
                param: v,
                "recall@100": recall(r["items"], truth),
                "batch_s": r["batch_s"],
                "single_median_ms": r["single_median_ms"],
                "single_p99_ms": r["single_p99_ms"],
                "batch_speedup": ex["batch_s"] / r["batch_s"],
                "single_speedup": ex["single_median_ms"] / r["single_median_ms"],
            }
            rows.append(row)
            print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
        return rows

    ivf = ItemIndex.build(items, IndexConfig(kind="ivf"))
    nlist = int(ivf.index.nlist)
    print(f"ivf nlist={nlist} build {ivf.build_seconds:.1f}s", flush=True)
    results["ivf"] = {
        "nlist": nlist,
        "build_s": ivf.build_seconds,
        "default_nprobe": IndexConfig().nprobe,
        "sweep": sweep(ivf, "ivf", "nprobe", [int(x) for x in args.nprobe.split(",")]),
    }
    del ivf
    for ranges in [] if args.skip_hnsw else [int(x) for x in args.hnsw_norm_ranges.split(",")]:
        # the default number of norm ranges is "hnsw"; others "hnsw_norm_ranges_<r>"
        key = "hnsw" if ranges == IndexConfig().hnsw_norm_ranges else f"hnsw_norm_ranges_{ranges}"
        hnsw = ItemIndex.build(items, IndexConfig(kind="hnsw", hnsw_norm_ranges=ranges))
        print(f"{key} build {hnsw.build_seconds:.1f}s", flush=True)
        results[key] = {
            "m": IndexConfig().hnsw_m,
            "ef_construction": IndexConfig().ef_construction,
            "norm_ranges": ranges,
            "build_s": hnsw.build_seconds,
            "default_ef_search": IndexConfig().ef_search,
            "sweep": sweep(hnsw, key, "ef_search", [int(x) for x in args.ef_search.split(",")]),
        }
        del hnsw
    if args.skip_hnsw and args.hnsw_from:
        earlier = json.loads(args.hnsw_from.read_text())
        if earlier.get("data", {}).get("n_items") != args.items:
            raise SystemExit(f"{args.hnsw_from}: another catalogue size; run HNSW here instead")
        results["hnsw"] = {
            **earlier["results"]["hnsw"],
            "from_earlier_run": {
                "command": earlier.get("command"),
                "date": earlier.get("date"),
                "machine": earlier.get("machine"),
                "exact_batch_s_in_that_run": earlier["results"]["flat"]["batch_s"],
                "exact_single_median_ms_in_that_run": earlier["results"]["flat"][
                    "single_median_ms"
                ],
            },
        }
    default_nprobe = results["ivf"]["default_nprobe"]
    default = next((r for r in results["ivf"]["sweep"] if r["nprobe"] == default_nprobe), None)
    report = {
        "benchmark": "faiss_retrieval",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/faiss_retrieval.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "n_items": args.items,
            "dim": args.dim,
            "clusters": 1000,
            "n_queries": args.queries,
            "single_queries": args.single,
            "k": K,
        },
        "threads": threads,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load1_before": load_before,
            "load1_after": os.getloadavg()[0],
        },
        "versions": {
            "python": platform.python_version(),
            "faiss": md.version("faiss-cpu"),
            "numpy": np.__version__,
        },
        "results": results,
        "default_ivf": default,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
