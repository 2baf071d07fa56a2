"""Per-stage cost of one recommend request, in process, for a known user and a fold-in.

Loads an artifact into :class:`recsys.serving.service.RecommendService` (list cache and
warm-up off, as the cache-off serving benchmark runs it) and answers ``--requests``
requests one at a time of each kind:

- ``known``: ``GET /recommend/{user}?k=10`` for a user of the training data;
- ``foldin``: ``POST /recommend`` for an unknown user with 5 ``recent_items``.

Every stage is timed by wrapping the function that does it (each candidate source, the
merge of the sources, query building, feature assembly, ranker inference, the top-k cut,
response building and JSON encoding); ``other`` is what the request cost beyond the
stages. The JSON holds milliseconds per request (median over requests) and each stage's
share of the mean request, plus a cProfile top list of the fold-in request.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/profile_recommend.py --artifact DIR \
        [--requests 300] [--out benchmarks/results/profile_recommend.json]

The artifact is the default hybrid of a held-out ML-100K temporal split (``make demo``'s)::

    recsys datasets split --dataset ml-100k --method temporal --test-frac 0.2 --out D/data
    recsys train --interactions D/data/train.parquet --items D/data/items.parquet \
        --users D/data/users.parquet --item-relations D/data/item_relations.parquet \
        --out D/artifact
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys.ranking import features as features_mod
from recsys.ranking import hybrid as hybrid_mod
from recsys.retrieval import candidates as candidates_mod
from recsys.retrieval import sources as sources_mod
from recsys.serving import service as service_mod
from recsys.serving.schemas import RecommendRequest
from recsys.serving.service import RecommendService
from recsys.serving.settings import Settings


class StageClock:
    """Wall time per stage of the current request (nested stages are not subtracted)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.current[name] += time.perf_counter() - t0

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            with clock.stage(name):
                return fn(*args, **kwargs)

        setattr(owner, attr, timed)


def instrument(clock: StageClock) -> None:
    """Wrap every stage's function (class attributes: every instance is timed)."""
    gen = sources_mod.CandidateGenerator
    propose = gen._propose

    def timed_propose(self: Any, spec: Any, *args: Any, **kwargs: Any) -> Any:
        with clock.stage(f"source:{spec.name}"):
            return propose(self, spec, *args, **kwargs)

    gen._propose = timed_propose  # type: ignore[method-assign]
    clock.wrap(candidates_mod.CandidateSet, "merge", "merge_sources")
    clock.wrap(hybrid_mod.HybridRecommender, "queries_for_users", "queries")
    clock.wrap(hybrid_mod.HybridRecommender, "queries_for_histories", "queries")
    clock.wrap(features_mod.FeatureBuilder, "build", "feature_assembly")
    clock.wrap(hybrid_mod.HybridRanker, "score_features", "ranker_inference")
    clock.wrap(candidates_mod.CandidateSet, "top", "top_k")
    clock.wrap(service_mod.RecommendService, "_finish", "response_build")


def run_kind(
    svc: RecommendService,
    clock: StageClock,
    reqs: list[RecommendRequest],
    warmup: int,
) -> dict[str, Any]:
    encode: Callable[[Any], bytes] = lambda d: json.dumps(d).encode()  # noqa: E731
    try:  # what the app's JSONResponse uses
        from starlette.responses import JSONResponse

        def encode(d: Any) -> bytes:
            return bytes(JSONResponse(d).body)
    except ImportError:  # pragma: no cover
        pass
    for r in reqs[:warmup]:
        encode(svc.recommend(r))
    totals: list[float] = []
    per_stage: dict[str, list[float]] = defaultdict(list)
    strategies: set[str] = set()
    for r in reqs:
        clock.current = defaultdict(float)
        t0 = time.perf_counter()
        out = svc.recommend(r)
        with clock.stage("serialise_json"):
            encode(out)
        totals.append(time.perf_counter() - t0)
        strategies.add(out["strategy"])
        for name, sec in clock.current.items():
            per_stage[name].append(sec)
    total = np.array(totals) * 1000
    mean_total = float(total.mean())
    stages: dict[str, Any] = {}
    accounted = 0.0
    top_level = [s for s in per_stage if s not in ("feature_assembly",)]
    for name in sorted(per_stage, key=lambda s: -float(np.mean(per_stage[s]))):
        ms = np.array(per_stage[name]) * 1000
        ms = np.concatenate([ms, np.zeros(len(reqs) - len(ms))])
        stages[name] = {
            "median_ms": round(float(np.median(ms)), 3),
            "mean_ms": round(float(ms.mean()), 3),
            "share": round(float(ms.mean()) / mean_total, 4),
        }
        if name in top_level:
            accounted += float(ms.mean())
    # feature assembly contains ranker-free work only; response_build and the rest are
    # disjoint, so "other" is the request minus the sum of disjoint stages
    accounted += stages.get("feature_assembly", {}).get("mean_ms", 0.0)
    stages["other"] = {
        "mean_ms": round(mean_total - accounted, 3),
        "share": round((mean_total - accounted) / mean_total, 4),
    }
    return {
        "requests": len(reqs),
        "strategy": sorted(strategies),
        "request_ms": {
            "median": round(float(np.median(total)), 3),
            "p90": round(float(np.percentile(total, 90)), 3),
            "p99": round(float(np.percentile(total, 99)), 3),
            "mean": round(mean_total, 3),
        },
        "stages": stages,
    }


def profile_top(svc: RecommendService, reqs: list[RecommendRequest], n: int = 25) -> list[str]:
    pr = cProfile.Profile()
    pr.enable()
    for r in reqs:
        svc.recommend(r)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(n)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return [ln for ln in lines[start:] if ln.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, default=Path("build/demo/artifact"))
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/profile_recommend.json"))
    args = ap.parse_args(argv)

    clock = StageClock()
    instrument(clock)
    events = Path(tempfile.mkdtemp(prefix="recsys-profile-")) / "events.jsonl"
    svc = RecommendService(
        Settings(
            artifact=args.artifact,
            events_log=events,
            recommend_cache_size=0,
            recommend_warm_users=0,
        )
    )
    svc.start()
    pipe = svc.state.model.pipeline
    rng = np.random.default_rng(args.seed)
    n = args.requests + args.warmup
    users = rng.choice(pipe.user_map.ids, n)
    item_ids = pipe.item_map.ids
    known = [RecommendRequest(user_id=u.item(), k=10) for u in users]
    foldin = [
        RecommendRequest(
            user_id=f"profile-new-{i}",
            k=10,
            recent_items=[x.item() for x in rng.choice(item_ids, 5, replace=False)],
        )
        for i in range(n)
    ]
    result: dict[str, Any] = {
        "benchmark": "profile_recommend",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "PYTHONPATH=. .venv/bin/python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "artifact": str(args.artifact),
        "components": pipe.components,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "notes": (
            "in-process RecommendService.recommend + JSON encoding, one request at a time, "
            "list cache and warm-up off; stage times are medians/means over requests; "
            "feature_assembly includes the component scores (fold-in for unknown users); "
            "other = request minus the disjoint stages"
        ),
    }
    for name, reqs in (("known", known), ("foldin", foldin)):
        result[name] = run_kind(svc, clock, reqs[args.warmup :], args.warmup)
        r = result[name]["request_ms"]
        print(f"{name}: median {r['median']:.2f} ms p99 {r['p99']:.2f} ms", file=sys.stderr)
    result["cprofile_foldin_tottime"] = profile_top(svc, foldin[:100])
    svc.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k]["stages"] for k in ("known", "foldin")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
