"""Benchmark: DeepFM and DIN on the MovieLens 100K CTR protocol, beside DeepCTR-Torch.

Run from the repository root (one command; the peers need ``.venv-deep``, see
``../shared/peers/README.md``)::

    PYTHONPATH=. .venv/bin/python benchmarks/ctr_deep.py                    # ctr + finetune
    PYTHONPATH=. .venv/bin/python benchmarks/ctr_deep.py --part ctr --seeds 2024 2025 2026
    PYTHONPATH=. .venv/bin/python benchmarks/ctr_deep.py --part tune        # valid split only

Protocol (BENCHMARKS.md, "CTR", implemented by ``../shared/peers/deep/ctr_protocol.py``,
whose split and metrics both sides use): label ``rating >= 4``; per user sorted by
(timestamp, item id) the last 10% (at least 1) is test, the 10% before valid, the rest
train; AUC, GAUC and log loss on test. Budget of both sides: embedding 16, DNN 256-128,
Adam, batch 256, at most 10 epochs, early stopping on valid AUC with patience 3, best
epoch restored; DIN history of the last 20 earlier items, attention unit (64, 16) (the
peer's default; ours in the like-for-like run, while our default unit is (16,)).

Features. The peers get user id, item id, gender, age bucket, occupation, zip prefix,
first genre, release-year bucket and the genre list. Ours read the same source columns
from the feature store built on the whole log (``recsys.features.FeatureStore``, bundled
ML-100K side tables): user id, item id, gender, occupation, zip code, age and release year
(bucketised at deciles by the model), the genre list (mean-pooled bag) and, for DIN, the
last 20 earlier items. Two configurations of ours are run:

* ``peer_features`` (``dense_features=False``, and for DIN the peer's attention unit
  ``attention_units=(64, 16)``): the peers' feature set and architecture, the like-for-like
  comparison;
* ``default``: the models' defaults, which add the store's point-in-time activity features
  (counts, mean ratings, recency before each row) and give DIN a (16,) attention unit.

Each side runs in its own process per (model, seed), with the same number of torch threads
(``--threads``, 1 by default as in BENCHMARKS.md) and one interop thread; the processes
take turns going first. Times: ``train_seconds`` per epoch (wall clock of the optimisation
pass, validation excluded; median over epochs, then over seeds) and its CPU time, the
less load-sensitive figure on a shared machine. Scoring throughput: rows per second at
batch 4096 over all 100,000 rows, for a forward pass over pre-built inputs (the peers'
``raw forward``) and for our end-to-end ``score_rows`` (feature-store read + encoding +
forward; the peers' figure with input handling is their ``predict``).

``--part finetune``: a global time split of the same rows (oldest 80% ``old``, next 10%
``new``, newest 10% ``test``). The stale model is fitted on ``old``; fine-tuned copies are
trained 2 epochs on ``new`` (``mode="full"`` and ``"top"``, learning rate x 0.1); the
full retrain fits ``old + new``. All are scored on ``test`` with point-in-time features.

``--part tune``: a small grid on the VALID split (test never looked at) for the
hyperparameters the defaults come from; results under ``"tuning"``.

The JSON keeps the parts a run does not redo from the previous file; each part records the
``command`` and ``date`` that produced it (``null`` where an older file did not say).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "peers" / "deep"
PEER_PYTHON = ROOT / ".venv-deep" / "bin" / "python"
RESULT = ROOT / "benchmarks" / "results" / "ctr_deep.json"
BATCH = 256
MAX_EPOCHS = 10
PATIENCE = 3
SCORE_BATCH = 4096
MODELS = ("deepfm", "din")
#: our configurations: name -> overrides of the model defaults
CONFIGS: dict[str, dict[str, Any]] = {
    "peer_features": {"dense_features": False},
    "default": {},
}
#: per-model additions: like for like, DIN gets the peer's attention unit (64, 16)
MODEL_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "din": {"peer_features": {"attention_units": [64, 16]}},
}


def _config(model_name: str, config: str) -> dict[str, Any]:
    """Our overrides of ``model_name``'s defaults in configuration ``config``."""
    return {**CONFIGS[config], **MODEL_CONFIGS.get(model_name, {}).get(config, {})}


# ============================================================================ peer side
def _peer_worker(model_name: str, seed: int, threads: int, out: Path) -> None:
    """DeepCTR-Torch under the protocol (mirrors ../shared/peers/deep/peer_deepctr.py:
    same features, budget and library defaults), timing each epoch's fit (wall and CPU).
    Runs in .venv-deep: imports neither recsys nor anything outside the peer venv."""
    import copy
    import warnings

    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(PEERS))
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import ctr_protocol as cp
    import deepctr_torch
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat, get_feature_names
    from deepctr_torch.models import DIN, DeepFM

    data = cp.load_ctr_data()
    emb = 16
    cols = [SparseFeat(c, data.vocab_sizes[c], embedding_dim=emb) for c in cp.CAT_FEATURES]
    cols.append(
        VarLenSparseFeat(
            SparseFeat("genre_seq", data.n_genres + 1, embedding_dim=emb),
            maxlen=cp.GENRE_MAXLEN,
            combiner="mean",
        )
    )
    if model_name == "din":
        cols += [
            VarLenSparseFeat(
                SparseFeat(
                    "hist_item_id",
                    data.vocab_sizes["item_id"],
                    embedding_dim=emb,
                    embedding_name="item_id",
                ),
                maxlen=cp.SEQ_LEN,
                length_name="seq_length",
            ),
            VarLenSparseFeat(
                SparseFeat(
                    "hist_first_genre",
                    data.vocab_sizes["first_genre"],
                    embedding_dim=emb,
                    embedding_name="first_genre",
                ),
                maxlen=cp.SEQ_LEN,
                length_name="seq_length",
            ),
        ]
    names = get_feature_names(cols)
    seqs = ("genre_seq", "hist_item_id", "hist_first_genre")

    def inputs(df: Any) -> dict[str, Any]:
        return {
            n: np.stack(df[n].to_numpy()).astype(np.int64)
            if n in seqs
            else df[n].to_numpy().astype(np.int64)
            for n in names
        }

    def fresh(x: dict[str, Any]) -> dict[str, Any]:  # deepctr mutates 1-d inputs
        return {k: v.copy() for k, v in x.items()}

    x_tr, x_va, x_te = inputs(data.train), inputs(data.valid), inputs(data.test)
    x_all = inputs(data.all_rows())
    y_tr = data.train["label"].to_numpy().astype(np.float32)
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - deepctr shuffles with the global numpy RNG
    if model_name == "deepfm":
        model = DeepFM(
            cols,
            cols,
            dnn_hidden_units=(256, 128),
            dnn_dropout=0.0,
            seed=seed,
            task="binary",
            device="cpu",
        )
    else:
        model = DIN(
            cols,
            ["item_id", "first_genre"],
            dnn_hidden_units=(256, 128),
            dnn_dropout=0.0,
            seed=seed,
            task="binary",
            device="cpu",
        )
    model.compile(torch.optim.Adam(model.parameters(), lr=1e-3), "binary_crossentropy", metrics=[])
    best, best_state, best_epoch, bad, epochs = -1.0, None, 0, 0, []
    for ep in range(1, MAX_EPOCHS + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        quiet, sys.stdout = sys.stdout, open(os.devnull, "w")
        try:
            model.fit(fresh(x_tr), y_tr, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
        finally:
            sys.stdout.close()
            sys.stdout = quiet
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        val = cp.evaluate(data.valid, model.predict(fresh(x_va), batch_size=SCORE_BATCH))
        epochs.append(
            {
                "epoch": ep,
                "train_seconds": wall,
                "train_cpu_seconds": cpu,
                "val_auc": val["auc"],
                "val_logloss": val["logloss"],
            }
        )
        if val["auc"] > best:
            best, best_epoch, bad = val["auc"], ep, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= PATIENCE:
                break
    model.load_state_dict(best_state)
    test = cp.evaluate(data.test, model.predict(fresh(x_te), batch_size=SCORE_BATCH))
    n_all = len(next(iter(x_all.values())))
    model.eval()
    feats = [x_all[f] if x_all[f].ndim == 2 else x_all[f][:, None] for f in model.feature_index]
    tensor = torch.from_numpy(np.concatenate(feats, axis=1)).float()

    def forward(start: int, stop: int) -> Any:
        with torch.no_grad():
            return model(tensor[start:stop])

    raw = cp.measure_throughput(forward, n_all, batch_size=SCORE_BATCH, repeats=3)
    lib = cp.measure_throughput(
        lambda s, e: model.predict(
            fresh({k: v[s:e] for k, v in x_all.items()}), batch_size=SCORE_BATCH
        ),
        n_all,
        batch_size=SCORE_BATCH,
        repeats=3,
    )
    out.write_text(
        json.dumps(
            {
                "side": "peer",
                "library": f"deepctr-torch {deepctr_torch.__version__}",
                "model": model_name,
                "seed": seed,
                "threads": threads,
                "split_fingerprint": data.fingerprint,
                "test": test,
                "best_epoch": best_epoch,
                "epochs": epochs,
                "scoring_rows_per_second": {
                    "forward": raw["rows_per_second_median"],
                    "end_to_end": lib["rows_per_second_median"],
                },
                "n_params": int(sum(p.numel() for p in model.parameters())),
                "versions": cp.versions(),
            }
        )
    )


# ============================================================================ our side
def _protocol() -> Any:
    sys.path.insert(0, str(PEERS))
    import ctr_protocol as cp

    return cp


def _our_data() -> dict[str, Any]:
    """The protocol's rows as our interactions, the store on the whole log, the split."""
    import pandas as pd

    from recsys.data import load_dataset
    from recsys.features import FeatureStore
    from recsys.types import TrainingData

    cp = _protocol()
    data = cp.load_ctr_data()
    rows = data.all_rows()
    ds = load_dataset("ml-100k")
    frame = pd.DataFrame(
        {
            "user_id": rows["raw_user_id"].astype(np.int64).to_numpy(),
            "item_id": rows["raw_item_id"].astype(np.int64).to_numpy(),
            "rating": rows["rating"].astype(np.float32).to_numpy(),
            "timestamp": rows["timestamp"].astype(np.int64).to_numpy(),
        }
    )
    store = FeatureStore.build(
        frame, items=ds.items, users=ds.users, sequence_length=20, show_progress=False
    )
    td = TrainingData.from_frame(frame, items=ds.items, users=ds.users)
    split = rows["split"].to_numpy()
    return {
        "cp": cp,
        "protocol": data,
        "rows": rows,
        "frame": frame,
        "store": store,
        "data": td,
        "split": split,
        "labels": rows["label"].to_numpy(),
    }


def _fit(
    name: str, params: dict[str, Any], d: dict[str, Any], part_train: str, part_valid: str = "valid"
) -> tuple[Any, float]:
    from recsys.models import get_model_class

    split, td, store = d["split"], d["data"], d["store"]
    tr = np.flatnonzero(np.isin(split, part_train.split("+")))
    va = np.flatnonzero(split == part_valid)
    model = get_model_class(name)(
        **{
            "device": "cpu",
            "patience": PATIENCE,
            "epochs": MAX_EPOCHS,
            "batch_size": BATCH,
            **params,
        }
    )
    t0 = time.perf_counter()
    model.fit(
        td.select(np.isin(split, part_train.split("+"))),
        features=store,
        rows=tr,
        validation=td.select(split == part_valid),
        validation_rows=va,
        show_progress=False,
    )
    return model, time.perf_counter() - t0


def _our_worker(model_name: str, config: str, seed: int, threads: int, out: Path) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from recsys.eval import ctr_metrics
    from recsys.models._torch.trainer import predict_proba

    d = _our_data()
    cp, split, store = d["cp"], d["split"], d["store"]
    model, fit_seconds = _fit(model_name, {**_config(model_name, config), "seed": seed}, d, "train")
    test_rows = np.flatnonzero(split == "test")
    probs = model.score_rows(store, test_rows)
    test = cp.evaluate(d["protocol"].test, probs)  # rows are in the protocol's order
    ours = ctr_metrics(
        d["labels"][test_rows],
        np.clip(probs, 1e-7, 1 - 1e-7),
        d["rows"]["user_id"].to_numpy()[test_rows],
    )
    all_rows = np.arange(len(split))
    inputs = model.encoder_.row_inputs(store, all_rows, sequences=model._uses_sequences)
    forward = cp.measure_throughput(
        lambda s, e: predict_proba(
            model.module_, {k: v[s:e] for k, v in inputs.items()}, batch_size=SCORE_BATCH
        ),
        len(all_rows),
        batch_size=SCORE_BATCH,
        repeats=3,
    )
    end_to_end = cp.measure_throughput(
        lambda s, e: model.score_rows(store, all_rows[s:e]),
        len(all_rows),
        batch_size=SCORE_BATCH,
        repeats=3,
    )
    out.write_text(
        json.dumps(
            {
                "side": "ours",
                "model": model_name,
                "config": config,
                "params": model.config.model_dump(mode="json"),
                "seed": seed,
                "threads": threads,
                "split_fingerprint": d["protocol"].fingerprint,
                "test": test,
                "test_recsys_metrics": ours,
                "best_epoch": model.best_epoch_,
                "epochs": model.history_,
                "fit_seconds": fit_seconds,
                "scoring_rows_per_second": {
                    "forward": forward["rows_per_second_median"],
                    "end_to_end": end_to_end["rows_per_second_median"],
                },
                "n_params": int(sum(p.numel() for p in model.module_.parameters())),
            }
        )
    )


# ============================================================================ parts
def _spawn(args: list[str], python: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
        cmd = [str(python), str(Path(__file__).resolve()), *args, "--out", str(out)]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        return json.loads(out.read_text())


def _median_epoch(run: dict[str, Any], key: str) -> float:
    return float(statistics.median(e[key] for e in run["epochs"]))


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_runs": len(runs)}
    for key in ("auc", "gauc", "logloss"):
        values = np.array([r["test"][key] for r in runs])
        out[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist(),
        }
    for key in ("train_seconds", "train_cpu_seconds"):
        out[f"{key}_per_epoch_median"] = float(
            statistics.median(_median_epoch(r, key) for r in runs)
        )
    for key in ("forward", "end_to_end"):
        out[f"scoring_rows_per_second_{key}"] = float(
            statistics.median(r["scoring_rows_per_second"][key] for r in runs)
        )
    out["best_epochs"] = [r["best_epoch"] for r in runs]
    out["epochs_run"] = [len(r["epochs"]) for r in runs]
    return out


def part_ctr(seeds: list[int], threads: int) -> dict[str, Any]:
    if not PEER_PYTHON.exists():
        raise SystemExit(
            f"{PEER_PYTHON} is missing; set up the peer venv first (../shared/peers/README.md)"
        )
    runs: dict[str, list[dict[str, Any]]] = {}
    turn = 0
    for seed in seeds:
        for model in MODELS:
            jobs: list[tuple[str, list[str], Path]] = [
                (
                    f"deepctr_{model}",
                    ["--_peer", model, "--seed", str(seed), "--threads", str(threads)],
                    PEER_PYTHON,
                ),
            ]
            for config in CONFIGS:
                jobs.append(
                    (
                        f"{model}_{config}",
                        [
                            "--_ours",
                            model,
                            "--config",
                            config,
                            "--seed",
                            str(seed),
                            "--threads",
                            str(threads),
                        ],
                        Path(sys.executable),
                    )
                )
            if turn % 2:
                jobs.reverse()  # the sides take turns going first
            turn += 1
            for key, args, python in jobs:
                t0 = time.perf_counter()
                result = _spawn(args, python)
                print(
                    f"[ctr] {key} seed={seed}: test AUC {result['test']['auc']:.4f}, "
                    f"{_median_epoch(result, 'train_seconds'):.2f} s/epoch "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
                runs.setdefault(key, []).append(result)
    summary = {key: _summary(value) for key, value in runs.items()}
    goals: dict[str, Any] = {}
    for model in MODELS:
        peer = summary[f"deepctr_{model}"]
        for config in CONFIGS:
            ours = summary[f"{model}_{config}"]
            goals[f"{model}_{config}"] = {
                "auc_minus_peer": ours["auc"]["mean"] - peer["auc"]["mean"],
                "train_seconds_ratio_to_peer": ours["train_seconds_per_epoch_median"]
                / peer["train_seconds_per_epoch_median"],
                "train_cpu_seconds_ratio_to_peer": ours["train_cpu_seconds_per_epoch_median"]
                / peer["train_cpu_seconds_per_epoch_median"],
            }
    for config in CONFIGS:
        goals[f"din_minus_deepfm_auc_{config}"] = (
            summary[f"din_{config}"]["auc"]["mean"] - summary[f"deepfm_{config}"]["auc"]["mean"]
        )
    return {"summary": summary, "goals": goals, "runs": runs}


def _time_split(split_frame: Any) -> np.ndarray:
    ts = split_frame["timestamp"].to_numpy()
    order = np.lexsort((np.arange(len(ts)), ts))
    part = np.empty(len(ts), dtype=object)
    n = len(ts)
    part[order[: int(0.8 * n)]] = "old"
    part[order[int(0.8 * n) : int(0.9 * n)]] = "new"
    part[order[int(0.9 * n) :]] = "test"
    return part.astype(str)


def _finetune_worker(model_name: str, threads: int, out: Path) -> None:
    import copy

    import torch

    torch.set_num_threads(threads)
    from recsys.eval import ctr_metrics

    d = _our_data()
    store, frame, labels = d["store"], d["frame"], d["labels"]
    d["split"] = _time_split(frame)
    # the stale and the retrained models stop early on the last 10% of their own rows
    old = np.flatnonzero(d["split"] == "old")
    new = np.flatnonzero(d["split"] == "new")
    test = np.flatnonzero(d["split"] == "test")
    users = d["rows"]["user_id"].to_numpy()

    def evaluate(model: Any) -> dict[str, float]:
        p = np.clip(model.score_rows(store, test), 1e-7, 1 - 1e-7)
        return ctr_metrics(labels[test], p, users[test])

    from recsys.models import get_model_class

    cls = get_model_class(model_name)
    params = {
        "device": "cpu",
        "seed": 2024,
        "batch_size": BATCH,
        "epochs": MAX_EPOCHS,
        "patience": PATIENCE,
    }
    td = d["data"]
    results: dict[str, Any] = {
        "model": model_name,
        "rows": {"old": len(old), "new": len(new), "test": len(test)},
    }
    t0 = time.perf_counter()
    stale = cls(**params).fit(
        td.select(d["split"] == "old"), features=store, rows=old, show_progress=False
    )
    results["stale"] = {
        "seconds": time.perf_counter() - t0,
        "test": evaluate(stale),
        "epochs": len(stale.history_),
    }
    new_frame = frame.iloc[new].reset_index(drop=True)
    for mode in ("full", "top"):
        tuned = copy.deepcopy(stale)
        t0 = time.perf_counter()
        tuned.finetune(
            new_frame,
            features=store,
            rows=new,
            mode=mode,
            epochs=2,
            learning_rate_scale=0.1,
            show_progress=False,
        )
        results[f"finetune_{mode}"] = {
            "seconds": time.perf_counter() - t0,
            "test": evaluate(tuned),
            "epochs": 2,
        }
    t0 = time.perf_counter()
    both = np.isin(d["split"], ["old", "new"])
    retrain = cls(**params).fit(
        td.select(both), features=store, rows=np.flatnonzero(both), show_progress=False
    )
    results["full_retrain"] = {
        "seconds": time.perf_counter() - t0,
        "test": evaluate(retrain),
        "epochs": len(retrain.history_),
    }
    for key in ("finetune_full", "finetune_top"):
        results[key]["auc_minus_stale"] = (
            results[key]["test"]["auc"] - results["stale"]["test"]["auc"]
        )
        results[key]["seconds_fraction_of_retrain"] = (
            results[key]["seconds"] / results["full_retrain"]["seconds"]
        )
    out.write_text(json.dumps(results))


def part_finetune(threads: int) -> dict[str, Any]:
    out = {}
    for model in MODELS:
        t0 = time.perf_counter()
        out[model] = _spawn(["--_finetune", model, "--threads", str(threads)], Path(sys.executable))
        r = out[model]
        print(
            f"[finetune] {model}: stale {r['stale']['test']['auc']:.4f}, "
            f"fine-tuned {r['finetune_full']['test']['auc']:.4f} in "
            f"{r['finetune_full']['seconds']:.1f} s, retrain "
            f"{r['full_retrain']['test']['auc']:.4f} in {r['full_retrain']['seconds']:.1f} s "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    out["protocol"] = (
        "global time split of the CTR rows: oldest 80% old, next 10% new, "
        "newest 10% test; stale = fit(old); finetune = stale + 2 epochs on new "
        "at lr x 0.1; full_retrain = fit(old + new); early stopping of fits on "
        "the latest 10% of each user's own rows"
    )
    return out


def _tune_worker(model_name: str, grid: str, threads: int, out: Path) -> None:
    import torch

    torch.set_num_threads(threads)
    d = _our_data()
    split = d["split"]
    results = []
    for params in json.loads(grid):
        model, seconds = _fit(model_name, {**params, "seed": 2024}, d, "train")
        results.append(
            {
                "params": params,
                "best_val_auc": max(h["val_auc"] for h in model.history_),
                "best_epoch": model.best_epoch_,
                "fit_seconds": seconds,
            }
        )
        print(
            f"[tune] {model_name} {params}: valid AUC {results[-1]['best_val_auc']:.4f}",
            file=sys.stderr,
            flush=True,
        )
    del split
    out.write_text(json.dumps(results))


_PAPER_DIN = {
    "attention_units": [64, 16],
    "attention_activation": None,
    "attention_normalization": False,
    "first_order": False,
    "fm_interaction": False,
}
TUNE_GRIDS: dict[str, list[dict[str, Any]]] = {
    "deepfm": [
        {"dense_features": False, "learning_rate": 1e-3},
        {"dense_features": False, "learning_rate": 3e-4},
        {"dense_features": False},  # the default learning rate 3e-3, init_std 0.01
        {"dense_features": False, "init_std": 1e-4},
        {"dense_features": False, "embedding_reg": 1e-4},
        {},
    ],
    "din": [
        {"dense_features": False, "learning_rate": 1e-3, **_PAPER_DIN},
        {
            "dense_features": False,
            "learning_rate": 1e-3,
            **_PAPER_DIN,
            "attention_normalization": True,
        },
        {
            "dense_features": False,
            "learning_rate": 1e-3,
            **_PAPER_DIN,
            "attention_normalization": True,
            "first_order": True,
            "fm_interaction": True,
        },
        # PReLU in the attention unit
        {"dense_features": False, "learning_rate": 1e-3, "attention_units": [64, 16]},
        {"dense_features": False, "attention_units": [64, 16]},  # learning rate 3e-3
        {"attention_units": [64, 16]},
        {"dense_features": False, "attention_units": [36]},
        {"dense_features": False},  # the defaults: attention unit (16,)
        {},
    ],
}


def part_tune(threads: int) -> dict[str, Any]:
    out = {}
    for model, grid in TUNE_GRIDS.items():
        out[model] = _spawn(
            ["--_tune", model, "--grid", json.dumps(grid), "--threads", str(threads)],
            Path(sys.executable),
        )
    out["note"] = "hyperparameters compared on the protocol's VALID split only (seed 2024)"
    return out


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_end": load,
    }


def _versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version()}
    for pkg in ("numpy", "pandas", "torch", "scikit-learn", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


#: the parts each ``--part`` value runs, and the result key of each part
_PART_KEYS = {
    "ctr": {"ctr"},
    "finetune": {"finetune"},
    "tune": {"tuning"},
    "all": {"ctr", "finetune"},
}


def _with_provenance(part: dict[str, Any], key: str, previous: dict[str, Any]) -> dict[str, Any]:
    """A part kept from the previous JSON, with the ``command`` and ``date`` that produced
    it: its own when recorded, else the previous file's when that command ran this part,
    else ``None`` (a file written before parts carried their own)."""
    if "command" in part:
        return part
    command = str(previous.get("command", ""))
    words = command.split()
    which = words[words.index("--part") + 1] if "--part" in words[:-1] else "all"
    if command and key in _PART_KEYS.get(which, set()):
        return {"command": command, "date": previous.get("date"), **part}
    return {"command": None, "date": None, **part}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["ctr", "finetune", "tune", "all"], default="all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=RESULT)
    # internal: one side in its own process
    ap.add_argument("--_peer", choices=MODELS)
    ap.add_argument("--_ours", choices=MODELS)
    ap.add_argument("--_finetune", choices=MODELS)
    ap.add_argument("--_tune", choices=MODELS)
    ap.add_argument("--config", choices=list(CONFIGS), default="default")
    ap.add_argument("--grid", default="[]")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args._peer:
        return _peer_worker(args._peer, args.seed, args.threads, args.out)
    if args._ours:
        return _our_worker(args._ours, args.config, args.seed, args.threads, args.out)
    if args._finetune:
        return _finetune_worker(args._finetune, args.threads, args.out)
    if args._tune:
        return _tune_worker(args._tune, args.grid, args.threads, args.out)

    previous = json.loads(args.json.read_text()) if args.json.exists() else {}
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "ctr_deep",
        "protocol": "BENCHMARKS.md CTR (../shared/peers/deep/ctr_protocol.py)",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/"
        + shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": args.threads,
        "batch_size": BATCH,
        "budget": {
            "embedding_dim": 16,
            "hidden_units": [256, 128],
            "max_epochs": MAX_EPOCHS,
            "early_stopping": f"valid AUC, patience {PATIENCE}, best epoch restored",
            "din_sequence_length": 20,
            "din_attention_units": "(64, 16) for the peer and our peer_features run; "
            "ours (16,) by default",
        },
        "machine": _machine(),
        "versions": _versions(),
    }
    for key in ("ctr", "finetune", "tuning"):
        if key in previous:
            result[key] = _with_provenance(previous[key], key, previous)
    stamp = {"command": result["command"], "date": result["date"]}
    if args.part in ("ctr", "all"):
        result["ctr"] = {**stamp, **part_ctr(args.seeds, args.threads)}
    if args.part in ("finetune", "all"):
        result["finetune"] = {**stamp, **part_finetune(args.threads)}
    if args.part == "tune":
        result["tuning"] = {**stamp, **part_tune(args.threads)}
    result["seconds"] = time.perf_counter() - started
    result["machine"] = _machine()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
