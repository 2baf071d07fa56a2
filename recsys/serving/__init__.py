"""Online serving: a FastAPI app over one artifact (``recsys serve``).

Build the app with :func:`create_app`; the artifact loads in the lifespan.
"""

from __future__ import annotations

from recsys.serving.app import create_app
from recsys.serving.settings import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]
