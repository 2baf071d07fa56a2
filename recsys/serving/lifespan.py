"""Start-up and shut-down: the artifact is loaded here, never at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from recsys.serving.service import RecommendService

__all__ = ["lifespan"]

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the artifact (checksums first) and replay the event log; close the log at exit.

    A missing or damaged artifact raises :class:`recsys.errors.ArtifactError` here, so
    the server fails to start with that message rather than serving nothing.
    """
    service: RecommendService = app.state.service
    await run_in_threadpool(service.start)
    try:
        yield
    finally:
        service.close()
        logger.info("stopped serving version=%s", service.model_version)
