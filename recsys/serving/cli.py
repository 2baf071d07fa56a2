"""``recsys serve``: run the API under uvicorn.

Wired into the ``recsys`` command by :func:`add_serve_parser`; also runnable on its own as
``python -m recsys.serving.cli --artifact DIR``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.errors import RecsysError

__all__ = ["add_serve_parser", "cmd_serve", "main"]

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Seconds a worker may take to answer uvicorn's supervisor (start-up included).
WORKER_HEALTHCHECK_S = 60
#: Bind address and port when neither the flags nor RECSYS_HOST / RECSYS_PORT give them.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {value}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be >= 1, got {value}")
    return value


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--artifact", type=Path, required=True, help="artifact directory")
    # Defaults from the environment (the container sets both); a flag still wins. A string
    # default goes through ``type`` only when the flag is absent, so a bad RECSYS_PORT is
    # reported (exit 2) only when it would be used.
    parser.add_argument(
        "--host",
        default=os.environ.get("RECSYS_HOST") or DEFAULT_HOST,
        help=f"bind address (default $RECSYS_HOST, else {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("RECSYS_PORT") or DEFAULT_PORT,
        help=f"port (default $RECSYS_PORT, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="worker processes (default 1); each loads the artifact and follows the shared "
        "events log; /admin/reload and /metrics act per worker (SIGHUP to the parent "
        "restarts every worker, reloading the artifact directory, one at a time)",
    )
    parser.add_argument(
        "--events-log",
        type=Path,
        default=None,
        help="JSON-lines events log (default: <artifact>/state/events.jsonl)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="server log level (default info; the recsys -q/-v flags also apply)",
    )
    parser.set_defaults(func=cmd_serve)
    return parser


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to the ``recsys`` command's subparsers."""
    parser = subparsers.add_parser(
        "serve",
        help="serve recommendations over HTTP (FastAPI; docs at /docs)",
        description="Serve an artifact over HTTP: /recommend, /similar-items, /events, "
        "/healthz, /readyz, /metrics, /admin/reload (needs RECSYS_ADMIN_KEY) and a demo "
        "page at /. The artifact is verified before the server starts.",
        epilog="environment: RECSYS_HOST and RECSYS_PORT (defaults of --host and --port), "
        "RECSYS_ADMIN_KEY, RECSYS_EVENTS_LOG, RECSYS_MAX_BODY_BYTES, "
        "RECSYS_MAX_EVENTS_PER_USER, RECSYS_RECOMMEND_CACHE_SIZE (plain lists cached per "
        "model, default 50000; 0 = off), RECSYS_RECOMMEND_WARM_USERS and "
        "RECSYS_RECOMMEND_WARM_K (lists computed before serving, default 5000 users x top "
        "20), RECSYS_LOG_REQUESTS (see recsys.serving.settings.Settings)",
    )
    return _configure(parser)


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config plus the ``recsys`` logger (applied in every worker)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["recsys"] = {"format": LOG_FORMAT}
    config["handlers"]["recsys"] = {
        "class": "logging.StreamHandler",
        "formatter": "recsys",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["recsys"] = {
        "handlers": ["recsys"],
        "level": level.upper(),
        "propagate": False,
    }
    config["loggers"]["uvicorn"]["level"] = level.upper()
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    """Verify the artifact, then run uvicorn until interrupted (exit 0 on a clean stop).

    Raises
    ------
    ArtifactError
        If the artifact is missing or damaged (the ``recsys`` command prints it as a one-line
        error and exits 1).
    """
    import uvicorn

    from recsys.artifacts import verify_artifact
    from recsys.serving.app import create_app
    from recsys.serving.settings import Settings

    level = args.log_level or (
        "warning"
        if getattr(args, "quiet", False)
        else "debug"
        if getattr(args, "verbose", False)
        else "info"
    )
    artifact = Path(args.artifact).resolve()
    verify_artifact(artifact)  # a clear one-line error before any server starts
    # every worker process reads its settings from the environment
    os.environ["RECSYS_ARTIFACT"] = str(artifact)
    if args.events_log is not None:
        os.environ["RECSYS_EVENTS_LOG"] = str(Path(args.events_log).resolve())
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": _log_config(level),
        "access_log": False,  # the app logs one structured line per request
        "timeout_graceful_shutdown": 10,
    }
    if args.workers > 1:
        uvicorn.run("recsys.serving.app:create_app", factory=True, workers=args.workers, **common)
    else:
        settings = Settings()  # type: ignore[call-arg]  # from the environment set above
        uvicorn.run(create_app(settings), **common)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``serve`` as a stand-alone command (``python -m recsys.serving.cli``)."""
    parser = _configure(argparse.ArgumentParser(prog="recsys serve", description=__doc__))
    args = parser.parse_args(argv)
    try:
        return cmd_serve(args)
    except RecsysError as exc:
        print(f"recsys: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
