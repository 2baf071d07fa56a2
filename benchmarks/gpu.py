"""Benchmark: SVD++, DeepFM and DIN trained on CUDA and on the CPU with the same settings.

Run from the repository root on a machine with a GPU::

    PYTHONPATH=. .venv/bin/python benchmarks/gpu.py                 # writes $OUT/gpu.json
    PYTHONPATH=. .venv/bin/python benchmarks/gpu.py --out gpu.json

Without CUDA it says so and exits 0 (``--cpu-only`` runs the CPU half alone, to check the
script). Data: the bundled MovieLens 100K. SVD++ on the rating protocol of BENCHMARKS.md
(random 80/20 split, seed 42; RMSE on test), DeepFM and DIN on its CTR protocol (label
``rating >= 4``, per-user temporal 80/10/10 by (timestamp, item id); early stopping on
valid AUC, patience 3; AUC on test), rebuilt here with numpy so the script needs nothing
outside the repository. Each model is fitted once per device with identical
hyperparameters and seed; per-epoch wall times come from the models' ``history_``, peak
GPU memory from ``torch.cuda.max_memory_allocated``. CUDA runs use bf16 autocast for the
deep models (their ``mixed_precision`` default) and fp32 for SVD++.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def _ctr_split(frame: Any) -> np.ndarray:
    """Per user sorted by (timestamp, item id): last 10% test, 10% before valid, rest train
    (at least one each), as the CTR protocol."""
    users = frame["user_id"].to_numpy()
    order = np.lexsort((frame["item_id"].to_numpy(), frame["timestamp"].to_numpy(), users))
    su = users[order]
    starts = np.flatnonzero(np.r_[True, su[1:] != su[:-1]])
    counts = np.diff(np.r_[starts, len(su)])
    pos = np.arange(len(su)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    hold = np.maximum(1, n // 10)
    part = np.where(pos >= n - hold, "test", np.where(pos >= n - 2 * hold, "valid", "train"))
    out = np.empty(len(su), dtype=object)
    out[order] = part
    return out.astype(str)


def _run_svdpp(ds: Any, device: str, epochs: int) -> dict[str, Any]:
    from recsys.eval import rmse
    from recsys.models import SVDPlusPlus
    from recsys.types import TrainingData

    frame = ds.interactions
    perm = np.random.default_rng(42).permutation(len(frame))
    train = np.zeros(len(frame), bool)
    train[perm[: int(0.8 * len(frame))]] = True
    data = TrainingData.from_frame(frame)
    model = SVDPlusPlus(device=device, epochs=epochs, seed=42)
    t0 = time.perf_counter()
    model.fit(data.select(train), show_progress=False)
    fit = time.perf_counter() - t0
    test = data.select(~train)
    pred = model.predict_rating(test.user_idx, test.item_idx)
    assert test.rating is not None
    return {
        "fit_seconds": fit,
        "metric": "rmse",
        "value": rmse(test.rating, pred),
        "epoch_seconds": [h["seconds"] for h in model.history_],
    }


def _run_ctr(
    name: str, ds: Any, store: Any, split: np.ndarray, device: str, epochs: int, batch_size: int
) -> dict[str, Any]:
    from recsys.eval import ctr_metrics
    from recsys.models import get_model_class
    from recsys.types import TrainingData

    data = TrainingData.from_frame(ds.interactions, items=ds.items, users=ds.users)
    tr, va, te = (np.flatnonzero(split == s) for s in ("train", "valid", "test"))
    model = get_model_class(name)(device=device, epochs=epochs, batch_size=batch_size, seed=42)
    t0 = time.perf_counter()
    model.fit(
        data.select(split == "train"),
        features=store,
        rows=tr,
        validation=data.select(split == "valid"),
        validation_rows=va,
        show_progress=False,
    )
    fit = time.perf_counter() - t0
    labels = (ds.interactions["rating"].to_numpy() >= 4).astype(np.float32)
    probs = np.clip(model.score_rows(store, te), 1e-7, 1 - 1e-7)
    metrics = ctr_metrics(labels[te], probs, ds.interactions["user_id"].to_numpy()[te])
    t1 = time.perf_counter()
    model.score_rows(store, np.arange(len(split)))
    score = time.perf_counter() - t1
    return {
        "fit_seconds": fit,
        "metric": "auc",
        "value": metrics["auc"],
        "test": metrics,
        "best_epoch": model.best_epoch_,
        "epoch_seconds": [h["seconds"] for h in model.history_],
        "train_seconds_per_epoch_median": statistics.median(
            h["train_seconds"] for h in model.history_
        ),
        "score_rows_per_second": len(split) / score,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: $OUT/gpu.json, else benchmarks/results/gpu.json)",
    )
    ap.add_argument("--models", default="svdpp,deepfm,din")
    ap.add_argument("--epochs", type=int, default=10, help="deep models' max epochs")
    ap.add_argument("--svdpp-epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--cpu-only", action="store_true", help="run the CPU half without CUDA")
    args = ap.parse_args()

    import torch

    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.cpu_only:
        print(
            "benchmarks/gpu.py: no CUDA device on this machine; nothing to measure "
            "(use --cpu-only to run the CPU half)"
        )
        return 0
    out = args.out
    if out is None:
        base = os.environ.get("OUT")
        out = (Path(base) if base else Path(__file__).resolve().parent / "results") / "gpu.json"

    from recsys.data import load_dataset
    from recsys.features import FeatureStore

    ds = load_dataset("ml-100k")
    split = _ctr_split(ds.interactions)
    store = FeatureStore.build(
        ds.interactions, items=ds.items, users=ds.users, sequence_length=20, show_progress=False
    )
    devices = (["cuda"] if has_cuda else []) + ["cpu"]
    runs: dict[str, dict[str, Any]] = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for device in devices:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
            if name == "svdpp":
                result = _run_svdpp(ds, device, args.svdpp_epochs)
            else:
                result = _run_ctr(name, ds, store, split, device, args.epochs, args.batch_size)
            if device == "cuda":
                torch.cuda.synchronize()
                result["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated())
            runs.setdefault(name, {})[device] = result
            print(
                f"{name} on {device}: {result['metric']} {result['value']:.4f}, fit "
                f"{result['fit_seconds']:.1f} s",
                flush=True,
            )
        if "cuda" in runs[name]:
            cuda, cpu = runs[name]["cuda"], runs[name]["cpu"]
            runs[name]["cpu_over_cuda_fit_time"] = cpu["fit_seconds"] / cuda["fit_seconds"]
            runs[name][f"{cuda['metric']}_cuda_minus_cpu"] = cuda["value"] - cpu["value"]
    report = {
        "benchmark": "gpu",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/"
        + shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cuda": has_cuda,
        "gpu": torch.cuda.get_device_name(0) if has_cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
        "settings": {
            "deep_epochs": args.epochs,
            "svdpp_epochs": args.svdpp_epochs,
            "batch_size": args.batch_size,
            "seed": 42,
        },
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
