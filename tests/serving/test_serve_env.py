"""``recsys serve`` takes its bind address and port from RECSYS_HOST / RECSYS_PORT (the
container sets both); ``--host`` / ``--port`` still win."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn

from recsys.cli import build_parser
from recsys.serving import cli as serve_cli


@pytest.fixture
def no_bind_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("RECSYS_HOST", raising=False)
    monkeypatch.delenv("RECSYS_PORT", raising=False)
    return monkeypatch


def _bind(argv: list[str]) -> tuple[str, int]:
    args = build_parser().parse_args(["serve", "--artifact", "art", *argv])
    return args.host, args.port


def test_defaults_without_environment(no_bind_env: pytest.MonkeyPatch) -> None:
    assert _bind([]) == ("127.0.0.1", 8000)
    no_bind_env.setenv("RECSYS_HOST", "")  # empty counts as unset
    no_bind_env.setenv("RECSYS_PORT", "")
    assert _bind([]) == ("127.0.0.1", 8000)


def test_environment_gives_the_defaults(no_bind_env: pytest.MonkeyPatch) -> None:
    no_bind_env.setenv("RECSYS_HOST", "0.0.0.0")
    no_bind_env.setenv("RECSYS_PORT", "9123")
    assert _bind([]) == ("0.0.0.0", 9123)


def test_flags_win_over_environment(no_bind_env: pytest.MonkeyPatch) -> None:
    no_bind_env.setenv("RECSYS_HOST", "0.0.0.0")
    no_bind_env.setenv("RECSYS_PORT", "9123")
    assert _bind(["--host", "127.0.0.2", "--port", "9"]) == ("127.0.0.2", 9)
    assert _bind(["--port", "0"]) == ("0.0.0.0", 0)
    # a bad RECSYS_PORT does not matter when --port overrides it ...
    no_bind_env.setenv("RECSYS_PORT", "http")
    assert _bind(["--port", "8080"]) == ("0.0.0.0", 8080)


@pytest.mark.parametrize("bad", ["http", "70000", "-1"])
def test_bad_port_in_environment_is_a_usage_error(
    no_bind_env: pytest.MonkeyPatch, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # ... and is a usage error (exit 2, the value named) when it would be used
    no_bind_env.setenv("RECSYS_PORT", bad)
    with pytest.raises(SystemExit) as exc:
        _bind([])
    assert exc.value.code == 2
    assert bad in capsys.readouterr().err


def test_serve_binds_uvicorn_to_the_environment(
    no_bind_env: pytest.MonkeyPatch, tiny_artifact: Path
) -> None:
    calls: list[dict[str, Any]] = []
    no_bind_env.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    # cmd_serve exports the artifact for its workers: monkeypatch restores it afterwards
    no_bind_env.setenv("RECSYS_ARTIFACT", str(tiny_artifact))
    no_bind_env.setenv("RECSYS_HOST", "0.0.0.0")
    no_bind_env.setenv("RECSYS_PORT", "9123")
    assert serve_cli.main(["--artifact", str(tiny_artifact)]) == 0
    assert serve_cli.main(["--artifact", str(tiny_artifact), "--port", "9124"]) == 0
    assert [(c["host"], c["port"]) for c in calls] == [("0.0.0.0", 9123), ("0.0.0.0", 9124)]
