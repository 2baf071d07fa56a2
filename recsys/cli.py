"""The ``recsys`` command: train, evaluate, recommend and manage datasets.

Every subcommand exits 0 on success and prints a one-line ``recsys: error: ...`` naming the
file, row or field and exits 1 on bad input (2 on bad command-line usage).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recsys.errors import ConfigError, RecsysError

logger = logging.getLogger("recsys.cli")

# Spinning OpenMP waiters slow torch badly on shared or oversubscribed machines; the CLI is
# an entry point, so it may set this process-wide default (before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EXAMPLES = """\
examples:
  recsys datasets split --dataset ml-100k --method temporal --test-frac 0.2 --out data/
  recsys train --interactions data/train.parquet --items data/items.parquet --out model/
  recsys evaluate --artifact model/ --test data/test.parquet --k 10,20 --json metrics.json
  recsys recommend --artifact model/ --all-users --k 10 --out recs.parquet
  recsys evaluate --recs recs.parquet --test data/test.parquet --train data/train.parquet
  recsys evaluate --artifact model/ --test data/test.parquet --html report.html
  recsys score --artifact model/ --pairs pairs.csv --out scores.parquet
  recsys finetune --artifact model/ --interactions new.parquet --out model-v2/
"""


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k must be integers like 10,20; got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--k values must be >= 1; got {text!r}")
    return ks


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# ---------------------------------------------------------------------------- inputs
def _add_data_inputs(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a bundled dataset by name (see `recsys datasets list`)")
    src.add_argument("--interactions", type=Path, help="interactions file (CSV or parquet)")
    p.add_argument("--items", type=Path, help="item catalogue file (item_id, title, genres, ...)")
    p.add_argument("--users", type=Path, help="user attributes file (user_id, ...)")
    p.add_argument(
        "--item-relations",
        type=Path,
        help="item knowledge-graph triples (item_id, relation, entity)",
    )
    p.add_argument(
        "--on-bad-rows",
        choices=["fail", "drop"],
        default=None,
        help="bad rows fail with a report (default) or are dropped with a count",
    )


def _load_inputs(args: argparse.Namespace, on_bad_rows: Literal["fail", "drop"] = "fail") -> Any:
    from recsys.data import (
        Dataset,
        load_dataset,
        read_interactions,
        read_item_relations,
        read_items,
        read_users,
    )

    if args.dataset:
        return load_dataset(args.dataset)
    policy: Literal["fail", "drop"] = args.on_bad_rows or on_bad_rows
    relations = None
    if args.item_relations:
        relations = read_item_relations(args.item_relations, on_bad_rows=policy)
    return Dataset(
        name=args.interactions.stem,
        interactions=read_interactions(args.interactions, on_bad_rows=policy),
        items=read_items(args.items, on_bad_rows=policy) if args.items else None,
        users=read_users(args.users, on_bad_rows=policy) if args.users else None,
        item_relations=relations,
    )


def _write(df: pd.DataFrame, path: Path) -> None:
    from recsys.data import write_frame

    path.parent.mkdir(parents=True, exist_ok=True)
    write_frame(df, path)


# ---------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    """Train a pipeline artifact."""
    from recsys.config import load_config
    from recsys.pipeline import Pipeline

    config = load_config(args.config)
    data = _load_inputs(args, config.data.on_bad_rows)
    t0 = time.perf_counter()
    pipe = Pipeline.fit(
        data.interactions,
        items=data.items,
        users=data.users,
        item_relations=data.item_relations,
        config=config,
        models=_names(args.models) if args.models else None,
        show_progress=config.training.show_progress and not args.quiet,
    )
    pipe.save(args.out)
    logger.info(
        "trained components=%s in %.1fs -> %s",
        ",".join(pipe.components),
        time.perf_counter() - t0,
        args.out,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate an artifact's components or a recommendation file."""
    from recsys.data import read_interactions, read_recommendations
    from recsys.eval import evaluate_recommendations, format_table

    policy: Literal["fail", "drop"] = args.on_bad_rows or "fail"
    test = read_interactions(args.test, on_bad_rows=policy)
    # the HTML report's recall@k curves need more cut-offs than the table shows
    ks = tuple(sorted(set(args.k) | ({1, 5, 10, 20, 50} if args.html else set())))
    extras: dict[str, Any] = {}
    if args.artifact:
        from recsys.eval.report import pipeline_extras
        from recsys.pipeline import Pipeline

        pipe = Pipeline.load(args.artifact)
        full = pipe.evaluate(test, ks=ks, models=_names(args.models) if args.models else None)
        table = full[_columns_at(full.columns, args.k)]
        results: dict[str, Any] = {
            str(name): {str(k): float(v) for k, v in row.items()} for name, row in table.iterrows()
        }
        print(format_table(table))
        primary = pipe.primary if pipe.primary in results else next(iter(results))
        flat = {**results[primary], "models": results}
        extras = pipeline_extras(pipe)
        extras["info"] = {"artifact": str(args.artifact), "test": str(args.test), **extras["info"]}
    else:
        recs = read_recommendations(args.recs, on_bad_rows=policy)
        train = read_interactions(args.train, on_bad_rows=policy) if args.train else None
        all_metrics = evaluate_recommendations(recs, test, train, ks=ks)
        keep = set(_columns_at(list(all_metrics), args.k))
        flat = {k: v for k, v in all_metrics.items() if k in keep}
        full = pd.DataFrame.from_dict({args.recs.name: all_metrics}, orient="index")
        print(format_table({args.recs.name: flat}))
        extras = {"info": {"recommendations": str(args.recs), "test": str(args.test)}}
    if args.html:
        from recsys.eval.report import write_report

        write_report(args.html, full, title="recsys evaluation", ks=args.k, **extras)
        logger.info("wrote report -> %s", args.html)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_safe(flat), indent=2, sort_keys=True) + "\n")
        logger.info("wrote metrics -> %s", args.json)
    return 0


def _columns_at(columns: Any, ks: Sequence[int]) -> list[str]:
    """Metric columns at the cut-offs ``ks`` (and every column without one)."""
    out = []
    for c in columns:
        name, _, cut = str(c).rpartition("@")
        if not name or not cut.isdigit() or int(cut) in ks:
            out.append(str(c))
    return out


def _json_safe(value: Any) -> Any:
    """NaN/inf (e.g. diversity@1, GAUC without mixed users) become null: strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def cmd_recommend(args: argparse.Namespace) -> int:
    """Write top-k recommendations for users, in chunks, locally or on Dask."""
    from recsys.jobs import run_recommend_job

    return run_recommend_job(args)


def cmd_score(args: argparse.Namespace) -> int:
    """Write every component's score of user-item pairs to a parquet or CSV file."""
    from recsys.data import read_pairs
    from recsys.pipeline import Pipeline
    from recsys.types import warn_if_all_unknown

    pairs = read_pairs(args.pairs)
    pipe = Pipeline.load(args.artifact)
    # ids as read (kept in the output); score_pairs maps them by the one id rule
    users, items = pairs["user_id"].to_numpy(), pairs["item_id"].to_numpy()
    for column, ids, vocab in (
        ("user_id", users, pipe.user_map),
        ("item_id", items, pipe.item_map),
    ):
        warn_if_all_unknown(
            vocab.to_index(ids),
            ids,
            vocab,
            source=str(args.pairs),
            column=column,
            consequence="their scores are NaN",
        )
    t0 = time.perf_counter()
    scores = pipe.score_pairs(users, items)
    _write(scores, args.out)
    logger.info(
        "scored %d pairs with %s in %.2fs -> %s",
        len(scores),
        ",".join(pipe.components),
        time.perf_counter() - t0,
        args.out,
    )
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    """Dataset utilities: list, export, fetch, split, synth."""
    from recsys import data as D

    if args.ds_command == "list":
        for name in D.available_datasets():
            print(f"{name}\t(bundled)")
        print("ml-100k, ml-1m, ml-20m, ml-25m\t(GroupLens releases: `recsys datasets fetch NAME`)")
        return 0
    if args.ds_command == "fetch":
        ds = D.fetch_grouplens(args.name, cache_dir=args.cache_dir)
        if args.out:
            _export(ds, args.out, args.format)
        print(f"{ds.name}: {len(ds.interactions)} interactions")
        return 0
    if args.ds_command == "export":
        _export(D.load_dataset(args.name), args.out, args.format)
        return 0
    if args.ds_command == "synth":
        ds = D.generate_synthetic(
            args.users,
            args.items,
            args.interactions,
            seed=args.seed,
            string_ids=args.string_ids,
            iso_timestamps=args.iso_timestamps,
            new_item_frac=args.new_item_frac,
        )
        _export(ds, args.out, args.format)
        return 0
    if args.ds_command == "split":
        ds = _load_inputs(args)
        params: dict[str, Any] = {}
        if args.method in ("random", "temporal"):
            params["test_frac"] = args.test_frac
        if args.method == "random":
            params["seed"] = args.seed
        if args.method == "leave-last":
            params["k"] = args.last
        if args.method == "cutoff":
            if args.cutoff is None:
                raise ConfigError("--method cutoff needs --cutoff (Unix seconds or ISO-8601)")
            params["cutoff"] = args.cutoff
        split = D.split_dataset(ds.interactions, args.method, **params)
        ext = args.format
        args.out.mkdir(parents=True, exist_ok=True)
        _write(split.train, args.out / f"train.{ext}")
        _write(split.test, args.out / f"test.{ext}")
        _export_side_tables(ds, args.out, ext)
        (args.out / "split.json").write_text(json.dumps(split.report, indent=2, default=str) + "\n")
        print(json.dumps(split.report, default=str))
        return 0
    raise ConfigError(f"unknown datasets command {args.ds_command!r}")


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune one model on a validation split carved from training data; write the best config."""
    from recsys.tuning import tune

    data = _load_inputs(args)
    result = tune(
        args.model,
        data.interactions,
        n_trials=args.trials,
        seed=args.seed,
        metric=args.metric,
        val_frac=args.val_frac,
        show_progress=not args.quiet,
    )
    result.write(args.out)
    print(f"best {args.metric}={result.best_score:.4f} params={result.best_params} -> {args.out}")
    return 0


def _export_side_tables(ds: Any, out: Path, ext: str) -> None:
    for name in ("items", "users", "item_relations"):
        frame = getattr(ds, name, None)
        if frame is not None:
            _write(frame, out / f"{name}.{ext}")


def _export(ds: Any, out: Path, ext: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write(ds.interactions, out / f"interactions.{ext}")
    _export_side_tables(ds, out, ext)
    logger.info("wrote dataset %s (%d interactions) -> %s", ds.name, len(ds.interactions), out)


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``recsys`` command."""
    parser = argparse.ArgumentParser(
        prog="recsys",
        description="Train, evaluate and serve recommenders: one artifact for batch jobs, "
        "the online API and offline evaluation.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, with third-party libraries' logs and progress bars",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a pipeline artifact", description=cmd_train.__doc__)
    _add_data_inputs(p)
    p.add_argument("--config", type=Path, help="TOML config (default: built-in defaults)")
    p.add_argument("--models", help="train only these components, e.g. popular,itemknn")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="evaluate an artifact or a recommendation file",
        description="Either --artifact (every component, full ranking) or --recs (any file "
        "with user_id, item_id, rank). Prints a table; --json writes flat keys like ndcg@10.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--artifact", type=Path, help="artifact directory from `recsys train`")
    src.add_argument("--recs", type=Path, help="recommendations file (user_id, item_id, rank)")
    p.add_argument("--test", type=Path, required=True, help="held-out interactions file")
    p.add_argument("--train", type=Path, help="training interactions (novelty, popularity)")
    p.add_argument("--k", type=_parse_ks, default=(10,), help="cut-offs, e.g. 10,20 (default 10)")
    p.add_argument("--models", help="with --artifact: only these components")
    p.add_argument("--json", type=Path, help="write the metrics as JSON")
    p.add_argument(
        "--html",
        type=Path,
        help="also write a self-contained HTML report (metrics, recall@k curves, coverage "
        "and popularity bias, ranker and training curves)",
    )
    p.add_argument("--on-bad-rows", choices=["fail", "drop"], default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "score",
        help="score user-item pairs with every component",
        description="Writes user_id, item_id and one column per component: svdpp the "
        "predicted rating, deepfm/din the click probability, hybrid the ranker's score, the "
        "others their ranking score; NaN for unknown ids (parquet, or CSV by extension).",
    )
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--pairs", type=Path, required=True, help="file with user_id, item_id")
    p.add_argument("--out", type=Path, required=True, help="output .parquet or .csv")
    p.set_defaults(func=cmd_score)

    from recsys.jobs.cli import add_recommend_arguments

    p = sub.add_parser("recommend", help="write top-k recommendations for users (local or Dask)")
    add_recommend_arguments(p)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("datasets", help="list, export, fetch, split and synthesise datasets")
    dsub = p.add_subparsers(dest="ds_command", required=True, metavar="ACTION")
    dsub.add_parser("list", help="datasets available offline and for download")
    d = dsub.add_parser("export", help="write a bundled dataset to files")
    d.add_argument("name")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    d = dsub.add_parser("fetch", help="download a GroupLens MovieLens release into the cache")
    d.add_argument("name", choices=["ml-100k", "ml-1m", "ml-20m", "ml-25m"])
    d.add_argument("--cache-dir", type=Path)
    d.add_argument("--out", type=Path, help="also export it to this directory")
    d.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    d = dsub.add_parser(
        "split", help="split interactions into train/test files (seeded, leak-free)"
    )
    _add_data_inputs(d)
    d.add_argument(
        "--method", choices=["temporal", "random", "leave-last", "cutoff"], default="temporal"
    )
    d.add_argument("--test-frac", type=float, default=0.2)
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--last", type=_positive_int, default=1, help="leave-last: items per user")
    d.add_argument("--cutoff", help="cutoff: Unix seconds or ISO-8601")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    d = dsub.add_parser(
        "synth", help="synthetic interactions (Zipf item popularity, lognormal user activity)"
    )
    d.add_argument("--users", type=_positive_int, required=True)
    d.add_argument("--items", type=_positive_int, required=True)
    d.add_argument("--interactions", type=_positive_int, required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--string-ids", action="store_true", help="ids like 'u000123'")
    d.add_argument("--iso-timestamps", action="store_true", help="ISO-8601 timestamps")
    d.add_argument("--new-item-frac", type=float, default=0.0, help="items that appear late")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser(
        "tune",
        help="tune a model's hyperparameters on a validation split of training data",
        description="Splits the given TRAINING interactions per user in time (the last "
        "--val-frac of each user's history is validation), runs a seeded search and writes "
        "the best [models.NAME] table as TOML (or JSON by extension). Never pass test data.",
    )
    _add_data_inputs(p)
    p.add_argument("--model", required=True, help="component name, e.g. als, itemknn, ease")
    p.add_argument("--trials", type=_positive_int, default=20, help="configurations to try")
    p.add_argument("--metric", default="ndcg@10", help="validation metric (default ndcg@10)")
    p.add_argument("--val-frac", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, required=True, help="config file to write (.toml/.json)")
    p.set_defaults(func=cmd_tune)

    from recsys.finetune import add_finetune_parser

    add_finetune_parser(sub)

    from recsys.serving.cli import add_serve_parser

    add_serve_parser(sub)
    return parser


#: Libraries whose INFO records (gensim's lifecycle, FAISS's CPU probing, numba's compiler)
#: and progress bars (implicit's) bury recsys's own lines: at WARNING unless ``-v``.
_THIRD_PARTY_LOGGERS = (
    "gensim",
    "implicit",
    "faiss",
    "urllib3",
    "numba",
    "torch",
    "matplotlib",
    "PIL",
    "httpx",
    "distributed",
    "asyncio",
)


class _RecsysInfoOnly(logging.Filter):
    """Pass recsys's records at any level, other loggers' from WARNING up."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return record.levelno >= logging.WARNING or name == "recsys" or name.startswith("recsys.")


def _configure_logging(*, quiet: bool, verbose: bool) -> None:
    """One stderr handler at INFO (WARNING with ``-q``, DEBUG with ``-v``).

    At default verbosity only recsys's own records (stage milestones, the summary line)
    get through below WARNING: the listed third-party loggers are set to WARNING and the
    handler drops any other library's INFO records. That also turns implicit's
    per-iteration progress bars off (the factor models follow the ``implicit`` logger's
    level, see :class:`recsys.models.factors.FactorModel`); recsys's own bars stay.
    ``-v`` lets everything through (#14).
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    configured = bool(root.handlers)  # e.g. called in-process by an application or a test
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    if not configured:
        for handler in root.handlers:
            handler.addFilter(_RecsysInfoOnly())
    for name in _THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recsys`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(quiet=args.quiet, verbose=args.verbose)
    try:
        return int(args.func(args))
    except RecsysError as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"recsys: error: {lines[0]}", file=sys.stderr)
        if len(lines) > 1:
            print("\n".join("  " + line for line in lines[1:]), file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"recsys: error: {exc.filename}: file not found", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
