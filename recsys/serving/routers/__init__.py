"""One router per resource."""

from __future__ import annotations

from recsys.serving.routers import admin, events, health, items, recommend, ui, users

__all__ = ["admin", "events", "health", "items", "recommend", "ui", "users"]
