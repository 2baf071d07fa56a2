"""Server settings, read from ``RECSYS_*`` environment variables (pydantic-settings).

The one instance is behind the cached :func:`get_settings` dependency; tests and
:func:`recsys.serving.app.create_app` override it with an explicit :class:`Settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Configuration of one server process.

    Every field can be set from the environment with the ``RECSYS_`` prefix, e.g.
    ``RECSYS_ARTIFACT=/models/current`` or ``RECSYS_ADMIN_KEY=...``.

    Stability: provisional

    Attributes
    ----------
    artifact
        The artifact directory loaded at start-up (``recsys train --out``).
    events_log
        JSON-lines file of accepted ``POST /events``; default
        ``<artifact>/state/events.jsonl`` (``state/`` is outside the artifact checksums).
        It stays the same across hot reloads, so online state survives a model swap; a
        deployment that reloads into *other* directories should set it explicitly, so that
        a restart on the new directory still replays every accepted event.
    admin_key
        The API key of ``/admin/*`` (``RECSYS_ADMIN_KEY``); unset disables admin endpoints.
    max_body_bytes
        Largest request body accepted; larger ones get 413.
    max_events_per_user
        Most recent events per user kept in memory for fold-in (the log keeps all).
    recommend_cache_size
        Plain top lists (no events, ``recent_items`` or filters) cached per loaded model,
        one per user, least recently used first out; one list answers every ``k`` up to its
        length; 0 disables the cache. Every reload starts a new cache. A cached list is
        the one the model gave when it was computed; with the hybrid, whose ranker reads
        item activity from the online feature store, other users' later events can shift
        a fresh computation slightly until the next reload (a user's own events always
        take the fold-in path, never the cache).
    recommend_warm_users, recommend_warm_k
        At start-up and on every reload, before the model serves, the top-``k`` lists of
        the most active ``recommend_warm_users`` users are computed in batches into the
        cache (0 turns it off): the first requests then do not each pay for a model call.
        Startup takes about ``users x`` the per-user batch cost (ML-100K's 943 users with
        the default hybrid: a few seconds).
    model_threads
        Worker threads that run model calls (fold-in, batched top lists, similar items,
        ``/recommend/batch``) off the event loop; default ``min(2, CPUs)``. More threads
        help only where the model releases the GIL, and each busy one delays the loop
        thread (``/healthz``) a little more.
    log_requests
        Log one structured line per request (request id, route, status, model version,
        latency); never ids or features.
    """

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore", frozen=True)

    artifact: Path
    events_log: Path | None = None
    admin_key: SecretStr | None = None
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_events_per_user: int = Field(default=1000, ge=1)
    recommend_cache_size: int = Field(default=50_000, ge=0)
    recommend_warm_users: int = Field(default=5_000, ge=0)
    recommend_warm_k: int = Field(default=20, ge=1, le=100)
    model_threads: int | None = Field(default=None, ge=1, le=64)
    log_requests: bool = True

    @property
    def events_path(self) -> Path:
        """Where accepted events are appended: ``events_log`` or the artifact's ``state/``."""
        return self.events_log or Path(self.artifact) / "state" / "events.jsonl"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from the environment (cached; a FastAPI dependency)."""
    return Settings()  # type: ignore[call-arg]  # artifact comes from RECSYS_ARTIFACT
