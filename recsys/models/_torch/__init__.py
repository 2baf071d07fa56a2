"""Small torch helpers shared by the models that train with torch (SVD++, DeepFM, DIN).

Only device resolution and seeding live here so far; the deep models' shared trainer
will join them. Nothing here imports a model.

Stability: internal
"""

from __future__ import annotations

from recsys.models._torch.device import DEVICE_PATTERN, resolve_device, seeded_generator

__all__ = ["DEVICE_PATTERN", "resolve_device", "seeded_generator"]
