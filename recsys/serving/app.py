"""The application factory: ``create_app(settings)`` assembles routers, errors, middleware.

Nothing is loaded here: the artifact loads in :func:`recsys.serving.lifespan.lifespan`.
Run with ``recsys serve --artifact DIR`` or
``RECSYS_ARTIFACT=DIR uvicorn --factory recsys.serving.app:create_app``.
"""

from __future__ import annotations

from fastapi import FastAPI

from recsys import __version__
from recsys.serving.errors import install_error_handlers
from recsys.serving.lifespan import lifespan
from recsys.serving.middleware import RequestContextMiddleware
from recsys.serving.routers import admin, events, health, items, recommend, ui, users
from recsys.serving.service import RecommendService
from recsys.serving.settings import Settings, get_settings

__all__ = ["create_app"]

DESCRIPTION = """\
Online recommendations from one recsys artifact.

**Ids are opaque strings** in paths and JSON (JSON bodies may also use integers). They are
matched to the artifact's vocabulary type: with integer ids (MovieLens), `"196"` means user
196 and responses carry ids as JSON numbers; with string ids, `"007"` stays `"007"`.
`strategy` says what answered: `personalized` (a user of the training data), `fold_in` (an
unknown user's events or `recent_items` folded in), `cold_start` (no usable history: the
popularity list); an unknown user is never an error. Malformed requests get a 4xx
answer `{"detail": ..., "request_id": ...}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI application.

    Parameters
    ----------
    settings
        Server settings; default: :func:`get_settings` (``RECSYS_*`` environment variables).
        Endpoints read them through :data:`recsys.serving.deps.SettingsDep`.

    Returns
    -------
    FastAPI
        The app; its lifespan loads the artifact.
    """
    settings = settings or get_settings()
    app = FastAPI(
        title="recsys",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    service = RecommendService(settings)
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=service.metrics,
        max_body_bytes=settings.max_body_bytes,
        model_version=lambda: service.model_version,
        log_requests=settings.log_requests,
    )
    for module in (recommend, items, events, users, health, admin, ui):
        app.include_router(module.router)
    return app
