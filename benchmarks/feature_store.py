"""Benchmark: build the feature store for a MovieLens-20M-sized synthetic log.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/feature_store.py            # 20M rows
    PYTHONPATH=. .venv/bin/python benchmarks/feature_store.py --n-interactions 2000000

A first subprocess draws the synthetic log with ``recsys.data.synth.generate_synthetic``
(138,000 users x 27,000 items by default, with the items and users frames) and caches it
(interaction columns as ``.npy``, frames as parquet; ``--cache-dir``). The measurement runs
in a fresh subprocess that imports, loads the cached columns into a DataFrame without extra
copies, and then builds the store, so neither the generator's garbage nor its peak is
counted. Peak memory is the kernel's high-water mark of the process (``VmHWM`` in
``/proc/self/status``), reset just before each measured step by writing ``5`` to
``/proc/self/clear_refs``. Reported:

* ``raw_bytes``: the in-memory size of the raw ``user_id``, ``item_id``, ``rating``,
  ``timestamp`` arrays (int64 + int64 + float32 + int64 per row);
* ``peak_rss_bytes``: the absolute high-water mark during ``FeatureStore.build``;
* ``peak_net_bytes``: that minus the interpreter + imports baseline, so it *includes* the
  input frames themselves; ``peak_net_over_raw`` is the ratio the 3x budget applies to;
* ``build_extra_bytes``: the high-water mark minus the resident size just before the build
  (the store's own working memory), and its ratio to ``raw_bytes``.

Then, separately timed: the offline frame, 100k on-demand sequences, online lookups,
``append`` of 100k events, ``save`` and ``load``. Results go to
``benchmarks/results/feature_store.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


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


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _cache_dir(args: argparse.Namespace) -> Path:
    name = f"n{args.n_interactions}_u{args.n_users}_i{args.n_items}_s{args.seed}"
    return Path(args.cache_dir) / name


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Draw the synthetic dataset once and cache it: interaction columns as ``.npy``, the
    items and users frames as parquet (run in its own subprocess)."""
    import numpy as np

    from recsys.data.synth import generate_synthetic

    cache = _cache_dir(args)
    t0 = time.perf_counter()
    data = generate_synthetic(
        args.n_users, args.n_items, args.n_interactions, seed=args.seed, string_ids=False
    )
    elapsed = time.perf_counter() - t0
    tmp = cache.with_suffix(".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for col in ("user_id", "item_id", "rating", "timestamp"):
        np.save(tmp / f"{col}.npy", data.interactions[col].to_numpy())
    for name in ("items", "users", "item_relations"):
        frame = getattr(data, name)
        if frame is not None:
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
    (tmp / "generate.json").write_text(json.dumps({"generate_s": round(elapsed, 2)}))
    tmp.rename(cache)
    return {"generate_s": round(elapsed, 2)}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Everything measured, run inside a fresh subprocess on the cached dataset."""
    import numpy as np
    import pandas as pd

    from recsys.features import FeatureStore

    gc.collect()
    rss_imports = _status("VmRSS")
    cache = _cache_dir(args)
    cols = ("user_id", "item_id", "rating", "timestamp")
    arrays = {c: np.load(cache / f"{c}.npy") for c in cols}
    if args.shuffle:
        perm = np.random.default_rng(args.seed).permutation(len(arrays["user_id"]))
        arrays = {c: a[perm] for c, a in arrays.items()}
        del perm
    interactions = pd.DataFrame(arrays, copy=False)  # shares the arrays, no second copy
    del arrays
    frames = {
        name: pd.read_parquet(cache / f"{name}.parquet")
        if (cache / f"{name}.parquet").exists()
        else None
        for name in ("items", "users", "item_relations")
    }
    raw_bytes = int(sum(interactions[c].to_numpy().nbytes for c in cols))
    dtypes = {c: str(interactions[c].dtype) for c in cols}
    gc.collect()
    rss_data = _status("VmRSS")

    load_before = os.getloadavg()
    _reset_peak()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    store = FeatureStore.build(
        interactions,
        frames["items"],
        frames["users"],
        frames["item_relations"],
        sequence_length=args.sequence_length,
        show_progress=False,
    )
    build_s = time.perf_counter() - t0
    build_cpu_s = time.process_time() - cpu0
    peak_build = _status("VmHWM")
    gc.collect()
    rss_after_build = _status("VmRSS")

    out: dict[str, Any] = {
        "n_interactions": len(interactions),
        "n_users": len(store.user_map),
        "n_items": len(store.item_map),
        "input_dtypes": dtypes,
        "input_order": "shuffled" if args.shuffle else "as generated (sorted by user, time)",
        "generate_s": json.loads((cache / "generate.json").read_text())["generate_s"],
        "raw_bytes": raw_bytes,
        "rss_imports_bytes": rss_imports,
        "rss_with_data_bytes": rss_data,
        "build_s": round(build_s, 2),
        "build_cpu_s": round(build_cpu_s, 2),
        "loadavg_1m_before_build": round(load_before[0], 2),
        "loadavg_1m_after_build": round(os.getloadavg()[0], 2),
        "peak_rss_bytes": peak_build,
        "peak_net_bytes": peak_build - rss_imports,
        "peak_net_over_raw": round((peak_build - rss_imports) / raw_bytes, 3),
        "build_extra_bytes": peak_build - rss_data,
        "build_extra_over_raw": round((peak_build - rss_data) / raw_bytes, 3),
        "store_resident_bytes": rss_after_build - rss_data,
    }

    rng = np.random.default_rng(1)
    _reset_peak()
    t0, cpu0 = time.perf_counter(), time.process_time()
    frame = store.offline_features()
    out["offline_frame_s"] = round(time.perf_counter() - t0, 2)
    out["offline_frame_cpu_s"] = round(time.process_time() - cpu0, 2)
    out["offline_frame_peak_net_bytes"] = _status("VmHWM") - rss_imports
    del frame
    rows = rng.integers(0, len(interactions), 100_000)
    t0 = time.perf_counter()
    seqs = store.sequences(rows)
    out["sequences_100k_s"] = round(time.perf_counter() - t0, 3)
    out["sequences_shape"] = list(seqs.shape)
    users = store.user_map.ids[rng.integers(0, len(store.user_map), 10_000)]
    t0 = time.perf_counter()
    store.online_user_features(users)
    out["online_user_features_10k_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    store.user_sequences(users)
    out["user_sequences_10k_s"] = round(time.perf_counter() - t0, 3)
    latest = int(store.latest_timestamp or 0)
    events = pd.DataFrame(
        {
            "user_id": store.user_map.ids[rng.integers(0, len(store.user_map), 100_000)],
            "item_id": store.item_map.ids[rng.integers(0, len(store.item_map), 100_000)],
            "rating": rng.integers(1, 6, 100_000).astype(np.float32),
            "timestamp": latest + rng.integers(1, 86_400, 100_000),
        }
    )
    t0 = time.perf_counter()
    store.append(events)
    out["append_100k_s"] = round(time.perf_counter() - t0, 3)

    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        path = Path(tmp) / "store"
        _reset_peak()
        t0, cpu0 = time.perf_counter(), time.process_time()
        store.save(path)
        out["save_s"] = round(time.perf_counter() - t0, 2)
        out["save_cpu_s"] = round(time.process_time() - cpu0, 2)
        out["save_peak_net_bytes"] = _status("VmHWM") - rss_imports
        out["saved_bytes"] = _dir_bytes(path)
        del store, interactions, frames
        gc.collect()
        rss_before_load = _status("VmRSS")
        _reset_peak()
        t0, cpu0 = time.perf_counter(), time.process_time()
        loaded = FeatureStore.load(path)
        out["load_s"] = round(time.perf_counter() - t0, 2)
        out["load_cpu_s"] = round(time.process_time() - cpu0, 2)
        out["load_peak_extra_bytes"] = _status("VmHWM") - rss_before_load
        out["loaded_n_interactions"] = loaded.n_interactions
    return out


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except OSError:
        mem = -1
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "mem_total_bytes": mem,
    }


def _versions() -> dict[str, str]:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    import recsys

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "recsys": recsys.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-users", type=int, default=138_000)
    parser.add_argument("--n-items", type=int, default=27_000)
    parser.add_argument("--n-interactions", type=int, default=20_000_000)
    parser.add_argument("--sequence-length", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--orders",
        default="generated,shuffled",
        help="row orders to measure, comma-separated: generated (sorted by user and time, "
        "as the generator writes it) and/or shuffled (random row order)",
    )
    parser.add_argument("--shuffle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp-dir", default=None, help="where save/load writes (default /tmp)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/feature_store.json"))
    parser.add_argument(
        "--cache-dir",
        default=str(Path(tempfile.gettempdir()) / "recsys-bench-feature-store"),
        help="where the drawn dataset is cached between runs",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        json.dump(worker(args), sys.stdout)
        return 0
    if args.prepare:
        json.dump(prepare(args), sys.stdout)
        return 0
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(
        ["PYTHONPATH=. .venv/bin/python benchmarks/feature_store.py", *map(shlex.quote, given)]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    if not _cache_dir(args).is_dir():
        proc = subprocess.run(
            [sys.executable, __file__, "--prepare", *given],
            capture_output=True, text=True, env=env, cwd=ROOT, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
    runs = []
    for order in args.orders.split(","):
        if order not in ("generated", "shuffled"):
            parser.error(f"--orders: unknown order {order!r}; use generated and/or shuffled")
        extra = ["--shuffle"] if order == "shuffled" else []
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", *given, *extra],
            capture_output=True, text=True, env=env, cwd=ROOT, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        runs.append(json.loads(proc.stdout))
    mib = 1024 * 1024
    result = {
        "benchmark": "feature_store_build",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "budget": "peak_net_bytes < 3 * raw_bytes (peak of the build process over the "
        "interpreter+imports baseline, input frames included)",
        "within_budget": all(r["peak_net_over_raw"] < 3.0 for r in runs),
        "runs": [
            {
                **figures,
                "mib": {
                    k.replace("_bytes", ""): round(v / mib, 1)
                    for k, v in figures.items()
                    if k.endswith("_bytes")
                },
            }
            for figures in runs
        ],
        "threads": {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "note": "the build is single-threaded numpy/pandas; *_s are wall seconds and "
            "*_cpu_s process CPU seconds (pyarrow's parquet I/O may use several threads). "
            "The machine is shared: loadavg_* show the contention during each build.",
        },
        "versions": _versions(),
        "machine": _machine(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
