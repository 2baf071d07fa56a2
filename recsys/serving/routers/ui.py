"""``/``: the demo page (plain HTML + a little JS over the API), from package data."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("recsys.serving").joinpath("static", name).read_bytes()


@router.get("/")
async def index() -> Response:
    """The demo page."""
    return Response(_asset("index.html"), media_type="text/html; charset=utf-8")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """A file of the demo page; only the known names (no paths)."""
    media_type = _STATIC.get(name)
    if media_type is None:
        raise HTTPException(404, "not found")
    return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "max-age=300"})
