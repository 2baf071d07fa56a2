"""DeepFM (Guo et al., IJCAI 2017) as a recommender: click probabilities from the feature
store, trained on the shared torch trainer.

Stability: provisional
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from recsys.models._torch.ctr_features import CTRFeatureEncoder
from recsys.models._torch.ctr_model import CTRConfig, CTRRecommender
from recsys.models.base import ModelConfig

if TYPE_CHECKING:
    import torch

__all__ = ["DeepFM", "DeepFMConfig"]


class DeepFMConfig(CTRConfig):
    """Hyperparameters of :class:`DeepFM`; every option is described on
    :class:`~recsys.models._torch.ctr_model.CTRConfig`."""


class DeepFM(CTRRecommender):
    """DeepFM click-through-rate model (Guo, Tang, Ye, Li, He: "DeepFM: A
    Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017).

    A factorization machine and a DNN share one embedding per sparse field: user id, item
    id, every user and item attribute of the feature store (categorical codes, numeric
    attributes bucketised at quantiles, multi-valued genres mean-pooled through
    ``EmbeddingBag``), plus the store's point-in-time activity features (counts, mean
    ratings, recency; ``log1p``-scaled and standardised) as dense inputs. ``score`` is the
    click probability; ids or category values unknown at fit time map to each field's
    reserved slot 0, never to an index error.

    Features are read from a :class:`~recsys.features.FeatureStore` (``fit(data,
    features=store)``; without one, the model builds a store from ``data``). The model
    keeps the encoded attribute tables and a snapshot of the store's online view (latest
    activity per user and item) in its own directory, so ``load`` is self-contained;
    :meth:`refresh_features` re-reads the snapshot after new events. The feature schema
    it was fitted on is recorded and checked (:class:`~recsys.errors.FeatureSchemaError`
    lists missing and unexpected columns).

    Network (:mod:`recsys.models.deepfm.arch`): ``EmbeddingArch`` -> ``InteractionArch``
    (FM) + ``OverArch`` (DNN, ``hidden_units``, ReLU) + first-order term.

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing import block_dataset
    >>> data = block_dataset()
    >>> model = DeepFM(labels="implicit", epochs=2, device="cpu").fit(data, show_progress=False)
    >>> model.score([0], [0]).shape
    (1,)
    """

    name: ClassVar[str] = "deepfm"
    Config: ClassVar[type[ModelConfig]] = DeepFMConfig
    _pairs_per_block: ClassVar[int] = 65536

    def _build_module(self, encoder: CTRFeatureEncoder) -> torch.nn.Module:
        from recsys.models.deepfm.arch import DeepFMModule

        cfg = self._cfg
        arch = self._embedding_arch(encoder, first_order=True)
        return DeepFMModule(arch, encoder.n_dense, tuple(cfg.hidden_units), cfg.dropout)
