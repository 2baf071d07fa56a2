"""One pure-ASGI middleware: request ids, the body-size limit, metrics and the request log.

Pure ASGI (not ``BaseHTTPMiddleware``) because it sits on every request's hot path.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.serving.metrics import Metrics

__all__ = ["RequestContextMiddleware"]

logger = logging.getLogger("recsys.serving.access")

_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Tag, limit, time, count and log every HTTP request.

    * ``X-Request-ID``: taken from the request when it is a short token, else a new one;
      echoed in the response and kept in ``request.state.request_id``.
    * Bodies larger than ``max_body_bytes`` (by ``Content-Length`` or while streaming) get
      ``413`` before any endpoint runs.
    * One log line per request: request id, method, route template (never the raw path,
      which may carry ids), status, model version, latency.

    Stability: internal
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        model_version: Callable[[], str | None],
        log_requests: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.model_version = model_version
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        header_id = request_id.encode()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", header_id))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if scope["method"] in _BODY_METHODS:
                try:
                    receive = await self._bounded_body(scope, receive)
                except _BodyTooLarge:
                    await _reject_too_large(send_wrapper, request_id, self.max_body_bytes)
                    return
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(template, scope["method"], status, elapsed)
            if self.log_requests:
                extra = scope["state"].get("log_extra", "")
                logger.info(
                    "request_id=%s method=%s route=%s status=%d model_version=%s latency_ms=%.2f%s",
                    request_id,
                    scope["method"],
                    template,
                    status,
                    self.model_version(),
                    elapsed * 1000,
                    extra,
                )

    async def _bounded_body(self, scope: Scope, receive: Receive) -> Receive:
        """Read the whole body (at most ``max_body_bytes``) and replay it to the app."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_body_bytes:
                    raise _BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away: pass it on
                return _replay([message], receive)
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return _replay([whole], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and _SAFE_REQUEST_ID.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


async def _reject_too_large(send: Send, request_id: str, limit: int) -> None:
    body: dict[str, Any] = {
        "detail": f"request body too large: the limit is {limit} bytes",
        "request_id": request_id,
    }
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
