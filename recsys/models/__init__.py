"""Recommender models, all answering the one protocol in :mod:`recsys.protocols`.

Models are selected by name through :func:`get_model_class`; names are the component
names of the CLI contract (``popular``, ``itemknn``, ...).
"""

from __future__ import annotations

from recsys.errors import ConfigError
from recsys.models.base import BaseRecommender, ModelConfig
from recsys.models.deepfm import DeepFM, DeepFMConfig
from recsys.models.din import DIN, DINConfig
from recsys.models.doc2vec import Doc2VecConfig, Doc2VecRetriever, Item2Vec, Item2VecConfig
from recsys.models.ease import EASE, EASEConfig
from recsys.models.factors import ALS, BPR, ALSConfig, BPRConfig
from recsys.models.knn import ItemKNN, ItemKNNConfig, UserKNN, UserKNNConfig
from recsys.models.popular import Popular, PopularConfig
from recsys.models.svdpp import SVDPlusPlus, SVDPlusPlusConfig

__all__ = [
    "ALS",
    "BPR",
    "DIN",
    "EASE",
    "MODEL_REGISTRY",
    "ALSConfig",
    "BPRConfig",
    "BaseRecommender",
    "DINConfig",
    "DeepFM",
    "DeepFMConfig",
    "Doc2VecConfig",
    "Doc2VecRetriever",
    "EASEConfig",
    "Item2Vec",
    "Item2VecConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "ModelConfig",
    "Popular",
    "PopularConfig",
    "SVDPlusPlus",
    "SVDPlusPlusConfig",
    "UserKNN",
    "UserKNNConfig",
    "get_model_class",
]

#: Component name -> model class. Later models register here.
MODEL_REGISTRY: dict[str, type[BaseRecommender]] = {
    Popular.name: Popular,
    ItemKNN.name: ItemKNN,
    UserKNN.name: UserKNN,
    BPR.name: BPR,
    ALS.name: ALS,
    EASE.name: EASE,
    SVDPlusPlus.name: SVDPlusPlus,
    DeepFM.name: DeepFM,
    DIN.name: DIN,
    Doc2VecRetriever.name: Doc2VecRetriever,
    Item2Vec.name: Item2Vec,
}


def get_model_class(name: str) -> type[BaseRecommender]:
    """The model class registered under ``name``.

    Raises
    ------
    ConfigError
        If no model has that name; the message lists the available ones.
    """
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; available: {', '.join(sorted(MODEL_REGISTRY))}"
        ) from None
