"""Serving errors and the one place that maps every error to an HTTP status.

Domain errors (:mod:`recsys.errors`) become short ``{"detail": ..., "request_id": ...}``
answers with a 4xx (or 503) status; validation errors name the field and the bound; anything
unexpected is logged with its traceback and answered ``500`` with no internals. A client
never sees a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    FeatureSchemaError,
    NotFittedError,
    RecsysError,
)

__all__ = [
    "BadRequestError",
    "NotReadyError",
    "ReloadBusyError",
    "install_error_handlers",
    "status_for",
]

logger = logging.getLogger(__name__)


class BadRequestError(RecsysError, ValueError):
    """A well-formed request asks for something impossible (e.g. an unknown genre filter)."""


class NotReadyError(RecsysError, RuntimeError):
    """No artifact is loaded yet (or any more)."""


class ReloadBusyError(RecsysError, RuntimeError):
    """Another reload is in progress."""


#: Most specific first.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (ReloadBusyError, 409),
    (ArtifactError, 409),
    (NotReadyError, 503),
    (NotFittedError, 503),
    (BadRequestError, 422),
    (FeatureSchemaError, 422),
    (ConfigError, 422),
    (DataError, 422),
    (RecsysError, 400),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status of a domain error (500 for anything unexpected)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _body(request: Request, detail: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "request_id": _request_id(request), **extra}


def _first_line(text: str, limit: int = 500) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


def _format_loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "request"


async def _recsys_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    detail = _first_line(str(exc)) or type(exc).__name__
    if status >= 500:
        logger.warning("request_id=%s unavailable: %s", _request_id(request), type(exc).__name__)
    return JSONResponse(_body(request, detail), status_code=status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (err.get("ctx") or {}).get("error", "malformed JSON")
        return JSONResponse(
            _body(request, f"request body is not valid JSON: {reason}"), status_code=400
        )
    # never echo the offending input: it may be huge or sensitive
    compact = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e["type"]}
        for e in errors[:10]
    ]
    detail = "; ".join(f"{_format_loc(e['loc'])}: {e['msg']}" for e in compact[:3])
    if len(errors) > 3:
        detail += f" (and {len(errors) - 3} more)"
    return JSONResponse(_body(request, detail, errors=compact), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    return JSONResponse(
        _body(request, detail), status_code=exc.status_code, headers=exc.headers or None
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "request_id=%s unhandled %s on %s",
        _request_id(request),
        type(exc).__name__,
        request.scope.get("route", None) and request.scope["route"].path,
        exc_info=exc,
    )
    return JSONResponse(_body(request, "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the exception handlers on ``app``."""
    app.add_exception_handler(RecsysError, _recsys_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
