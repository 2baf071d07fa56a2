"""FastAPI dependencies as ``Annotated`` aliases: the service, settings and admin auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from recsys.serving.service import RecommendService
from recsys.serving.settings import Settings

__all__ = [
    "AdminDep",
    "ServiceDep",
    "SettingsDep",
    "app_settings",
    "get_service",
    "require_admin",
]


async def get_service(request: Request) -> RecommendService:
    """The service the lifespan put on ``app.state``.

    ``async`` on purpose: FastAPI runs plain ``def`` dependencies in the thread pool, a
    costly hop on every request's hot path.
    """
    service: RecommendService = request.app.state.service
    return service


async def app_settings(request: Request) -> Settings:
    """The settings this app was built with (``create_app(settings)``, by default
    :func:`recsys.serving.settings.get_settings`).

    Read from ``app.state`` rather than through ``dependency_overrides``: FastAPI rebuilds
    every dependency's signature on every request while any override is registered.
    """
    settings: Settings = request.app.state.settings
    return settings


ServiceDep = Annotated[RecommendService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(app_settings)]


async def require_admin(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="The admin API key.")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Admin endpoints need ``RECSYS_ADMIN_KEY``: 401 without a key, 403 with a wrong one.

    The key comes as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. With no key
    configured, admin endpoints are disabled (403 for everyone).
    """
    expected = settings.admin_key.get_secret_value() if settings.admin_key else ""
    if not expected:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "admin endpoints are disabled: start the server with RECSYS_ADMIN_KEY set",
        )
    given = x_api_key
    if given is None and authorization and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    if not given:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "admin API key required (X-API-Key header or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong admin API key")


AdminDep = Depends(require_admin)
