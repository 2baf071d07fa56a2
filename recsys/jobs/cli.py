"""Command-line wiring of the batch job: the arguments and body of ``recsys recommend``.

:mod:`recsys.cli` builds the ``recommend`` subparser with
:func:`add_recommend_arguments` and runs :func:`run_recommend_job`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Literal

from recsys.errors import ConfigError
from recsys.jobs.batch import DEFAULT_CHUNK_SIZE, run_batch

__all__ = ["add_recommend_arguments", "run_recommend_job"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Write top-k recommendations (user_id, item_id, rank, score, sources) for every user or
the users of a file. Users are scored in chunks, each written as one part: --out
recs.parquet makes a parquet dataset directory (part-*.parquet + _manifest.json) that
pandas.read_parquet reads directly; --out recs.csv makes one CSV file (+
recs.csv.manifest.json). --resume continues a killed job. --engine dask runs the chunks
on a Dask cluster (--scheduler ADDR, or a local cluster) whose workers see the artifact
and the output at the same paths.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_recommend_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``recsys recommend`` options to ``parser``.

    Parameters
    ----------
    parser
        The ``recommend`` subparser; its ``description`` is set when it has none.
    """
    if not parser.description:
        parser.description = DESCRIPTION
    parser.add_argument(
        "--artifact", type=Path, required=True, metavar="DIR", help="artifact directory"
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--users", type=Path, metavar="F", help="CSV or parquet file with a user_id column"
    )
    who.add_argument("--all-users", action="store_true", help="every user of the artifact")
    parser.add_argument(
        "--k", type=_positive_int, default=10, metavar="N", help="items per user (default 10)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="PATH",
        help="recs.parquet (dataset directory) or recs.csv / recs.tsv (one file)",
    )
    parser.add_argument(
        "--model", metavar="NAME", help="use this component instead of the primary one"
    )
    parser.add_argument("--include-seen", action="store_true", help="do not exclude training items")
    parser.add_argument(
        "--chunk-size",
        type=_positive_int,
        metavar="N",
        default=DEFAULT_CHUNK_SIZE,
        help=f"users per part; bounds memory (default {DEFAULT_CHUNK_SIZE})",
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep finished parts of an interrupted run"
    )
    parser.add_argument(
        "--engine",
        choices=["local", "dask"],
        default=None,
        help="local threads (default) or a Dask cluster (default with --scheduler)",
    )
    parser.add_argument(
        "--scheduler", metavar="ADDR", help="Dask scheduler address, e.g. tcp://host:8786"
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="local: threads (default: all CPUs); dask local cluster: threads per worker",
    )
    parser.add_argument(
        "--dask-workers",
        type=_positive_int,
        metavar="N",
        default=2,
        help="workers of the local Dask cluster started without --scheduler (default 2)",
    )


def run_recommend_job(args: argparse.Namespace) -> int:
    """Run the batch job for parsed ``recsys recommend`` arguments; returns the exit status.

    Raises
    ------
    ConfigError
        ``--engine local`` together with ``--scheduler``.
    """
    engine: Literal["local", "dask"] = "dask" if args.scheduler else "local"
    if args.engine == "local" and args.scheduler:
        raise ConfigError("--scheduler needs --engine dask")
    if args.engine == "dask":
        engine = "dask"
    run_batch(
        args.artifact,
        args.out,
        users_file=None if args.all_users else args.users,
        k=args.k,
        model=args.model,
        exclude_seen=not args.include_seen,
        chunk_size=args.chunk_size,
        engine=engine,
        threads=args.threads,
        scheduler=args.scheduler,
        dask_workers=args.dask_workers,
        resume=args.resume,
        show_progress=not getattr(args, "quiet", False),
    )
    return 0
