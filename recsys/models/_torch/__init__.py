"""Torch machinery shared by the models that train with torch (SVD++, DeepFM, DIN).

* :mod:`~recsys.models._torch.device`: ``device="auto"`` resolution and seeded generators;
* :mod:`~recsys.models._torch.trainer`: the one training loop of the autograd models
  (device and bf16 autocast, tensor batching, early stopping, checkpoint/resume, progress,
  ``on_epoch``, training curves, DDP under ``torchrun``);
* :mod:`~recsys.models._torch.distributed`: the ``torch.distributed`` context;
* :mod:`~recsys.models._torch.checkpoint`: safetensors files with a JSON header, written
  atomically;
* :mod:`~recsys.models._torch.layers`: ``EmbeddingArch``, ``MLP``, ``Dice``, ``PReLU``;
* :mod:`~recsys.models._torch.ctr_features`, :mod:`~recsys.models._torch.ctr_model`,
  :mod:`~recsys.models._torch.sampling`, :mod:`~recsys.models._torch.finetuning`: the
  feature-store encoding, model body, negative sampling and warm start that DeepFM and
  DIN share.

Nothing here imports torch at import time (``layers`` excepted, which only the models'
network builders import), so importing the model registry stays cheap.

Stability: internal
"""

from __future__ import annotations

from recsys.models._torch.device import DEVICE_PATTERN, resolve_device, seeded_generator
from recsys.models._torch.trainer import (
    FitResult,
    Trainer,
    TrainerSettings,
    epoch_seed,
    predict_proba,
)

__all__ = [
    "DEVICE_PATTERN",
    "FitResult",
    "Trainer",
    "TrainerSettings",
    "epoch_seed",
    "predict_proba",
    "resolve_device",
    "seeded_generator",
]
