"""DIN: attention of the candidate over the user's behaviour sequence (Zhou et al. 2018).

Parts: :mod:`recsys.models.din.model` (the recommender and its config, torch-free at
import) and :mod:`recsys.models.din.arch` (``AttentionArch``, ``DINModule`` with DeepFM's
``OverArch``; imports torch).
"""

from __future__ import annotations

from recsys.models.din.model import DIN, DINConfig

__all__ = ["DIN", "DINConfig"]
