"""Run a real ``recsys serve`` process for tests and benchmarks.

:class:`ServerProcess` starts the server on ``127.0.0.1`` on a free port in a subprocess,
waits until ``/readyz`` answers 200 and stops it with SIGTERM (then SIGKILL). The server's
output goes to a log file, so a test can show it when something fails.

Stability: provisional
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m recsys.serving.cli`` on loopback, as a context manager.

    Parameters
    ----------
    artifact
        The artifact directory to serve.
    log_path
        Where the server's stdout and stderr go.
    env
        Extra environment variables (e.g. ``RECSYS_ADMIN_KEY``); ``None`` values remove one.
    args
        Extra command-line arguments (e.g. ``["--events-log", path]``).
    startup_timeout
        Seconds to wait for ``/readyz``.

    Examples
    --------
    >>> with ServerProcess(artifact, log_path=tmp / "server.log") as server:  # doctest: +SKIP
    ...     json.load(urllib.request.urlopen(f"{server.url}/recommend/196"))["strategy"]
    'personalized'
    """

    def __init__(
        self,
        artifact: Path,
        *,
        log_path: Path,
        env: Mapping[str, str | None] | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 60.0,
    ) -> None:
        self.artifact = Path(artifact)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = dict(env or {})
        self._args = list(args)
        self._timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        """Start the process and wait until it is ready.

        Raises
        ------
        RuntimeError
            If it exits or is not ready in time (the message ends with its log).
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
        for key, value in self._env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        cmd = [
            sys.executable,
            "-m",
            "recsys.serving.cli",
            "--artifact",
            str(self.artifact),
            "--port",
            str(self.port),
            *self._args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with status {self.proc.returncode}:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1.0) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {self._timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def log(self) -> str:
        """The server's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
