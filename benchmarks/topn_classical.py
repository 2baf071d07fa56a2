"""Benchmark: classical collaborative filters on the Top-N protocol, beside implicit.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/topn_classical.py                # evaluate
    PYTHONPATH=. .venv/bin/python benchmarks/topn_classical.py --part tune    # pick defaults
    PYTHONPATH=. .venv/bin/python benchmarks/topn_classical.py --part all

Protocol (BENCHMARKS.md, "Top-N"): MovieLens 100K bundled with the package
(``recsys.data.load_dataset("ml-100k")``), every rating a positive; per user the last
``max(1, floor(0.2 n_u))`` interactions by (timestamp, item id) are test
(``recsys.data.temporal_user_split``); full ranking over the whole 1,682-item catalogue
minus the user's training items; K = 10 and 20; metrics from ``recsys.eval.topn_metrics``
and, as a cross-check, the peers' ``protocol.evaluate_topn`` when
``../shared/peers/classical/protocol.py`` is there.

``--part eval``: for ``bpr``, ``als`` and ``itemknn`` our model (its default
hyperparameters) and implicit called directly with the *same* hyperparameters, seeds and
thread count, fitted alternately ``--repeats`` times (seed ``42 + r`` in repeat ``r``):
metrics are the mean over repeats, fit times (wall clock, and CPU time of the process
as a less load-sensitive second figure) the median, and the fit-time ratio is
ours / implicit; the two sides take turns going first. Both sides get the same prebuilt
binary CSR matrix (our TrainingData caches it), so the times compare the training work.
``userknn``, ``ease`` and ``popular`` (the floor) are reported for ours alone. For ALS
and BPR the fold-in is measured too: the quality of recommending from the training
histories (fold-in) instead of the stored user vectors, and the latency of folding in
one user.

``--part tune``: ``recsys.tuning.tune`` on the *train* split only (it carves its own
per-user temporal validation split, val_frac 0.2) over ``recsys.tuning.DEFAULT_GRIDS``
(the whole grid, except ``--n-trials`` sampled configurations for the slow BPR); the
chosen values are recorded under
``"tuning"`` and are the models' defaults. An ``--part eval`` run keeps an earlier tuning
section in the JSON.

BLAS pools are pinned to one thread before numpy loads (implicit parallelises itself, as
in the peers' runner); our models that call BLAS get ``num_threads`` explicitly.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "peers" / "classical"
KS = (10, 20)
REPORTED = ("ndcg@10", "recall@10", "precision@10", "map@10", "ndcg@20", "recall@20")

warnings.filterwarnings("ignore", message="Method expects CSR input")


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "pandas", "implicit", "threadpoolctl"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    from threadpoolctl import threadpool_info

    out["blas"] = [
        {k: d.get(k) for k in ("internal_api", "version", "num_threads")} for d in threadpool_info()
    ]
    return out


def _load_protocol() -> Any:
    if not (PEERS / "protocol.py").is_file():
        return None
    sys.path.insert(0, str(PEERS))
    import protocol  # type: ignore[import-not-found]

    return protocol


class Setup:
    """The split, as our TrainingData and as the arrays implicit and the metrics take."""

    def __init__(self) -> None:
        from recsys.data import load_dataset, temporal_user_split
        from recsys.types import IdMap, TrainingData

        df = load_dataset("ml-100k").interactions
        split = temporal_user_split(df, 0.2)
        # The catalogue is every item of the data set (the protocol's 1,682), so items
        # seen only in test stay candidates (misses for every model).
        user_map = IdMap.from_values(df["user_id"].to_numpy())
        item_map = IdMap.from_values(df["item_id"].to_numpy())
        self.train_frame = split.train
        self.test_frame = split.test
        self.train = TrainingData.from_frame(split.train, user_map=user_map, item_map=item_map)
        self.matrix = self.train.user_items  # built once, shared by both sides
        rows = user_map.to_index(split.test["user_id"].to_numpy())
        cols = item_map.to_index(split.test["item_id"].to_numpy())
        truth = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)),
            shape=(self.train.n_users, self.train.n_items),
        )
        truth.data[:] = 1.0
        self.users = np.flatnonzero(np.diff(truth.indptr) > 0).astype(np.int64)
        self.truth = truth[self.users]
        self.split_report = {
            k: v for k, v in split.report.items() if not k.startswith("examples")
        } | {
            "n_users": self.train.n_users,
            "n_items": self.train.n_items,
            "n_eval_users": len(self.users),
        }
        self.protocol = _load_protocol()
        self.peer_split = None
        if self.protocol is not None:
            self.peer_split = self.protocol.topn_split(self.protocol.load_ml100k())

    def metrics(self, recs: np.ndarray) -> dict[str, float]:
        from recsys.eval import topn_metrics

        out = topn_metrics(recs, self.truth, KS, train=self.matrix, diversity=False)
        return {k: float(out[k]) for k in REPORTED}

    def peer_ndcg(self, recs: np.ndarray) -> float | None:
        """NDCG@10 by the peers' own protocol code (rows: its eval users, sorted raw ids)."""
        if self.protocol is None or self.peer_split is None:
            return None
        user_ids = self.train.user_map.ids[self.users]
        order = np.argsort(user_ids, kind="stable")
        if not np.array_equal(
            user_ids[order], self.peer_split.user_ids[self.peer_split.eval_users]
        ):
            return None
        item_ids = self.train.item_map.ids
        raw = np.where(recs >= 0, item_ids[np.maximum(recs, 0)], -1)[order]
        dense = np.where(raw >= 0, np.searchsorted(self.peer_split.item_ids, raw), -1)
        return float(self.protocol.evaluate_topn(dense, self.peer_split)["ndcg@10"])


# --------------------------------------------------------------------------- peers
def _implicit_model(name: str, params: dict[str, Any], threads: int, seed: int) -> Any:
    if name == "bpr":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=params["embedding_dim"],
            learning_rate=params["learning_rate"],
            regularization=params["reg"],
            iterations=params["epochs"],
            verify_negative_samples=params["verify_negative_samples"],
            num_threads=threads,
            random_state=seed,
        )
    if name == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=params["embedding_dim"],
            regularization=params["reg"],
            alpha=params["alpha"],
            iterations=params["epochs"],
            num_threads=threads,
            random_state=seed,
        )
    from implicit.nearest_neighbours import (
        BM25Recommender,
        CosineRecommender,
        TFIDFRecommender,
    )

    if params["shrinkage"] != 0:
        raise SystemExit("implicit's item-KNN has no shrinkage; cannot compare this default")
    sim = params["similarity"]
    if sim == "cosine":
        return CosineRecommender(K=params["n_neighbors"], num_threads=threads)
    if sim == "tfidf":
        return TFIDFRecommender(K=params["n_neighbors"], num_threads=threads)
    if sim == "bm25":
        return BM25Recommender(
            K=params["n_neighbors"], K1=params["bm25_k1"], B=params["bm25_b"], num_threads=threads
        )
    raise SystemExit(f"implicit has no item-KNN with similarity {sim!r}")


def _ours(name: str, threads: int, seed: int) -> Any:
    from recsys.models import get_model_class

    cls = get_model_class(name)
    params: dict[str, Any] = {"seed": seed}
    if "num_threads" in cls.Config.model_fields:
        params["num_threads"] = threads
    if "device" in cls.Config.model_fields:
        params["device"] = "cpu"
    return cls(**params)


def _fold_in_figures(model: Any, setup: Setup) -> dict[str, Any]:
    """Quality of recommending from histories, and one-user fold-in latency."""
    hist = setup.matrix[setup.users]
    fitted, _ = model.recommend(setup.users, k=max(KS))
    folded, _ = model.recommend_for_history(hist, k=max(KS))
    overlap = float(
        np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(fitted, folded, strict=True)])
    )
    rng = np.random.default_rng(0)
    sample = rng.choice(setup.users, size=200, replace=False)
    single = setup.matrix[sample]
    vector_s, recommend_s = [], []
    for row in range(single.shape[0]):
        one = single[row]
        start = time.perf_counter()
        model.fold_in(one)
        vector_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.recommend_for_history(one, k=10)
        recommend_s.append(time.perf_counter() - start)
    return {
        "metrics_fold_in": setup.metrics(folded),
        "top10_overlap_fold_in_vs_fitted": overlap,
        "one_user_fold_in_ms_median": 1000 * statistics.median(vector_s),
        "one_user_recommend_for_history_ms_median": 1000 * statistics.median(recommend_s),
        "latency_sample": "200 random eval users, one call each, train history",
    }


def run_eval(setup: Setup, repeats: int, threads: int) -> dict[str, Any]:
    section: dict[str, Any] = {"models": {}}
    users32 = setup.users.astype(np.int32)
    history = setup.matrix[setup.users]
    for name in ("bpr", "als", "itemknn"):
        params = _ours(name, threads, 42).config.model_dump()
        ours_fit: list[float] = []
        peer_fit: list[float] = []
        ours_cpu: list[float] = []
        peer_cpu: list[float] = []
        ours_runs, peer_runs, peer_xcheck, ours_xcheck = [], [], [], []
        for r in range(repeats):
            seed = 42 + r
            model = _ours(name, threads, seed)
            peer = _implicit_model(name, params, threads, seed)
            # alternate who goes first, so drift in the machine's load hits both sides
            sides = [("ours", model, setup.train), ("implicit", peer, setup.matrix)]
            for side, estimator, train_input in sides if r % 2 == 0 else sides[::-1]:
                wall, cpu = time.perf_counter(), time.process_time()
                estimator.fit(train_input, show_progress=False)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                (ours_fit if side == "ours" else peer_fit).append(wall)
                (ours_cpu if side == "ours" else peer_cpu).append(cpu)
            recs, _ = model.recommend(setup.users, k=max(KS))
            ours_runs.append(setup.metrics(recs))
            ours_xcheck.append(setup.peer_ndcg(recs))
            ids, _ = peer.recommend(users32, history, N=max(KS), filter_already_liked_items=True)
            peer_recs = np.asarray(ids, np.int64)
            peer_runs.append(setup.metrics(peer_recs))
            peer_xcheck.append(setup.peer_ndcg(peer_recs))
            print(
                f"{name} repeat {r}: ours fit {ours_fit[-1]:.3f}s ndcg@10 "
                f"{ours_runs[-1]['ndcg@10']:.4f} | implicit fit {peer_fit[-1]:.3f}s "
                f"ndcg@10 {peer_runs[-1]['ndcg@10']:.4f}",
                flush=True,
            )
        ours_m = {k: float(np.mean([m[k] for m in ours_runs])) for k in REPORTED}
        peer_m = {k: float(np.mean([m[k] for m in peer_runs])) for k in REPORTED}
        entry: dict[str, Any] = {
            "params": params,
            "ours": {
                "metrics": ours_m,
                "ndcg@10_per_repeat": [m["ndcg@10"] for m in ours_runs],
                "ndcg@10_by_peer_protocol_code": _mean_or_none(ours_xcheck),
                "fit_s_median": statistics.median(ours_fit),
                "fit_s_all": ours_fit,
                "fit_cpu_s_median": statistics.median(ours_cpu),
            },
            "implicit": {
                "call": type(_implicit_model(name, params, threads, 0)).__module__
                + "."
                + type(_implicit_model(name, params, threads, 0)).__name__,
                "metrics": peer_m,
                "ndcg@10_per_repeat": [m["ndcg@10"] for m in peer_runs],
                "ndcg@10_by_peer_protocol_code": _mean_or_none(peer_xcheck),
                "fit_s_median": statistics.median(peer_fit),
                "fit_s_all": peer_fit,
                "fit_cpu_s_median": statistics.median(peer_cpu),
            },
            "fit_time_ratio_ours_over_implicit": statistics.median(ours_fit)
            / statistics.median(peer_fit),
            "fit_cpu_time_ratio_ours_over_implicit": statistics.median(ours_cpu)
            / statistics.median(peer_cpu),
            "ndcg@10_ours_minus_implicit": ours_m["ndcg@10"] - peer_m["ndcg@10"],
            "recall@10_ours_minus_implicit": ours_m["recall@10"] - peer_m["recall@10"],
        }
        if name in ("bpr", "als") and model is not None:
            entry["ours"]["fold_in"] = _fold_in_figures(model, setup)
        section["models"][name] = entry

    for name in ("userknn", "ease", "popular"):
        fits, runs = [], []
        model = None
        for r in range(repeats):
            model = _ours(name, threads, 42 + r)
            start = time.perf_counter()
            model.fit(setup.train, show_progress=False)
            fits.append(time.perf_counter() - start)
            start = time.perf_counter()
            recs, _ = model.recommend(setup.users, k=max(KS))
            rec_s = time.perf_counter() - start
            runs.append(setup.metrics(recs))
        assert model is not None
        section["models"][name] = {
            "params": model.config.model_dump(),
            "ours": {
                "metrics": {k: float(np.mean([m[k] for m in runs])) for k in REPORTED},
                "ndcg@10_by_peer_protocol_code": setup.peer_ndcg(recs),
                "fit_s_median": statistics.median(fits),
                "fit_s_all": fits,
                "recommend_all_users_s_last": rec_s,
            },
        }
        print(f"{name}: fit {statistics.median(fits):.3f}s {runs[-1]}", flush=True)

    from recsys.eval import evaluate_model

    check = _ours("itemknn", threads, 42).fit(setup.train, show_progress=False)
    via_runner = evaluate_model(check, setup.train, setup.test_frame, KS, diversity=False)
    section["cross_check_evaluate_model_itemknn_ndcg@10"] = float(via_runner["ndcg@10"])
    section["table"] = _table(section["models"])
    return section


def _mean_or_none(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept and len(kept) == len(values) else None


def _table(models: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, entry in models.items():
        rows.append(
            {
                "model": f"{name} (recsys)",
                "ndcg@10": round(entry["ours"]["metrics"]["ndcg@10"], 4),
                "recall@10": round(entry["ours"]["metrics"]["recall@10"], 4),
                "fit_s": round(entry["ours"]["fit_s_median"], 3),
            }
        )
        if "implicit" in entry:
            rows.append(
                {
                    "model": f"{name} (implicit, same params)",
                    "ndcg@10": round(entry["implicit"]["metrics"]["ndcg@10"], 4),
                    "recall@10": round(entry["implicit"]["metrics"]["recall@10"], 4),
                    "fit_s": round(entry["implicit"]["fit_s_median"], 3),
                    "fit_time_ratio": round(entry["fit_time_ratio_ours_over_implicit"], 3),
                }
            )
    return rows


def run_tune(
    setup: Setup, n_trials: int, threads: int, names: list[str], previous: dict[str, Any]
) -> dict[str, Any]:
    from recsys.models import get_model_class
    from recsys.tuning import DEFAULT_GRIDS, tune

    section: dict[str, Any] = {
        "data": "ML-100K train split only (80%); validation = last 20% of each user's "
        "train interactions by (timestamp, item id); full ranking; metric ndcg@10",
        "n_trials": f"{n_trials} sampled configurations for bpr; the whole grid for the "
        "cheaper models (itemknn, userknn, ease, als)",
        "models": dict(previous.get("models", {})),
    }
    for name in names:
        fields = get_model_class(name).Config.model_fields
        base: dict[str, Any] = {"num_threads": threads} if "num_threads" in fields else {}
        if "device" in fields:
            base["device"] = "cpu"
        start = time.perf_counter()
        size = int(np.prod([len(v) for v in DEFAULT_GRIDS[name].values()]))
        trials_here = n_trials if name == "bpr" else max(n_trials, size)
        result = tune(name, setup.train, n_trials=trials_here, seed=42, base_params=base)
        elapsed = time.perf_counter() - start
        trials = result.trials.drop(columns=[c for c in ("eval_s",) if c in result.trials])
        section["models"][name] = {
            "command": " ".join(sys.argv),
            "grid": DEFAULT_GRIDS[name],
            "n_trials": trials_here,
            "best_params": result.best_params,
            "best_validation_ndcg@10": result.best_score,
            "split": result.split,
            "elapsed_s": elapsed,
            "trials": json.loads(trials.to_json(orient="records")),
        }
        print(f"tune {name}: {result.best_params} ndcg@10={result.best_score:.4f}", flush=True)
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["eval", "tune", "all"], default="eval")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-trials", type=int, default=20)
    ap.add_argument(
        "--tune-models",
        default="itemknn,userknn,ease,als,bpr",
        help="models to (re)tune; others keep their earlier tuning results",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "topn_classical.json"))
    args = ap.parse_args()

    out = Path(args.out)
    previous: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    setup = Setup()
    result: dict[str, Any] = {
        "benchmark": "topn_classical",
        "protocol": "BENCHMARKS.md Top-N: ML-100K, per-user temporal 80/20 by (timestamp, "
        "item id), all ratings positive, full ranking over the 1,682-item catalogue minus "
        "train items, K = 10, 20; metrics averaged over users with a test item",
        "split": setup.split_report,
        "threads": args.threads,
        "repeats": args.repeats,
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/topn_classical.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load1_before": os.getloadavg()[0],
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
        },
        "versions": _versions(),
    }
    stamp: dict[str, Any] = {"command": result["command"], "date": result["date"]}
    if args.part in ("tune", "all"):
        names = args.tune_models.split(",")
        tuned = run_tune(setup, args.n_trials, args.threads, names, previous.get("tuning", {}))
        result["tuning"] = {**stamp, **tuned}
    elif "tuning" in previous:
        result["tuning"] = previous["tuning"]
    if args.part in ("eval", "all"):
        result["eval"] = {**stamp, **run_eval(setup, args.repeats, args.threads)}
    elif "eval" in previous:
        result["eval"] = previous["eval"]
    result["machine"]["load1_after"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
