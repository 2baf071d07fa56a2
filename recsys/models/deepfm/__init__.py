"""DeepFM: factorization machine and DNN over shared embeddings (Guo et al. 2017).

Parts: :mod:`recsys.models.deepfm.model` (the recommender and its config, torch-free at
import) and :mod:`recsys.models.deepfm.arch` (``InteractionArch``, ``OverArch``,
``DeepFMModule``; imports torch).
"""

from __future__ import annotations

from recsys.models.deepfm.model import DeepFM, DeepFMConfig

__all__ = ["DeepFM", "DeepFMConfig"]
