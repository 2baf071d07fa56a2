"""DeepFM's network in named parts: embedding stage, FM interaction, deep over-arch.

Guo, Tang, Ye, Li and He, "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction", IJCAI 2017: ``y = sigmoid(y_FM + y_DNN)`` where the FM component (first-order
weights plus pairwise inner products of the field embeddings, Rendle 2010) and the DNN
component read the *same* field embeddings. Dense features, which the paper does not have,
join the first-order term through a linear layer and the DNN input by concatenation, as
in DeepCTR.

Stability: internal
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.models._torch.layers import MLP, Activation, EmbeddingArch

__all__ = ["DeepFMModule", "InteractionArch", "OverArch"]


class InteractionArch(nn.Module):
    """The FM second-order term: ``sum_{f < g} <v_f, v_g>`` over the fields of a row.

    Computed in ``O(F E)`` as ``0.5 * sum_k ((sum_f v_fk)^2 - sum_f v_fk^2)`` (Rendle 2010,
    lemma 3.1).

    Shapes
    ------
    ``(B, F, E)`` float in, ``(B,)`` out.
    """

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        total = fields.sum(dim=1)
        return 0.5 * (total.square() - fields.square().sum(dim=1)).sum(dim=1)


class OverArch(nn.Module):
    """The deep component: an MLP over the flattened field embeddings and the dense
    features, ending in one logit.

    Parameters
    ----------
    in_features
        ``F * E + n_dense``.
    hidden
        Hidden layer widths.
    dropout
        Dropout after each hidden layer.
    activation
        Of the hidden layers: ReLU in DeepFM; DIN's over-arch passes Dice or PReLU.

    Shapes
    ------
    ``(B, in_features)`` float in, ``(B,)`` out.
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        dropout: float,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.mlp = MLP(in_features, hidden, activation, dropout)
        self.out = nn.Linear(self.mlp.out_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(x)).squeeze(-1)


class DeepFMModule(nn.Module):
    """DeepFM: first-order + FM + DNN logits over shared field embeddings.

    Parameters
    ----------
    embedding_arch
        The shared embedding stage (built with first-order weights).
    n_dense
        Width of the dense input (0 for none).
    hidden, dropout
        Over-arch layers.

    Inputs
    ------
    A dict with ``user`` ``(B,) int64``, ``item`` ``(B,) int64`` (rows of the feature
    tables) and ``dense`` ``(B, n_dense) float32``.

    Returns
    -------
    ``((B,) logits, 0-d embedding penalty)``.
    """

    def __init__(
        self,
        embedding_arch: EmbeddingArch,
        n_dense: int,
        hidden: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        self.embedding_arch = embedding_arch
        self.interaction_arch = InteractionArch()
        self.dense_linear = nn.Linear(n_dense, 1, bias=False) if n_dense else None
        self.bias = nn.Parameter(torch.zeros(()))
        width = embedding_arch.n_fields * embedding_arch.embedding_dim + n_dense
        self.over_arch = OverArch(width, hidden, dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = batch["user"], batch["item"]
        fields, first_order, penalty = self.embedding_arch(users, items)
        assert first_order is not None  # built with first-order weights
        logit = self.bias + first_order + self.interaction_arch(fields)
        deep_in = fields.flatten(1)
        if self.dense_linear is not None:
            dense = batch["dense"]
            logit = logit + self.dense_linear(dense).squeeze(-1)
            deep_in = torch.cat([deep_in, dense.to(deep_in.dtype)], dim=1)
        return logit + self.over_arch(deep_in), penalty
