"""Run the ``recsys`` command line in a subprocess, as a user's shell would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["run_cli"]


def run_cli(
    *args: str | Path, ok: bool = True, timeout: float = 600, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m recsys.cli -q ARGS`` with captured text output.

    Parameters
    ----------
    args
        The command and its options, e.g. ``"train", "--config", path``.
    ok
        Assert that the command exits 0 (its stderr is the assertion message).
    timeout
        Seconds before the subprocess is killed (``subprocess.TimeoutExpired``).
    quiet
        Pass ``-q``; ``False`` runs at default verbosity (or pass ``-v`` in ``args``).
    """
    flags = ["-q"] if quiet else []
    proc = subprocess.run(
        [sys.executable, "-m", "recsys.cli", *flags, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc
