"""DIN's network in named parts: embedding stage, attention over the behaviour sequence,
over-arch.

Zhou, Zhu, Song, Fan, Zhu, Ma, Yan, Jin, Li and Gai, "Deep Interest Network for
Click-Through Rate Prediction", KDD 2018. The user's interest in a candidate item is the
sum of their past items' embeddings, each weighted by a *local activation unit* (eq. 3) that
reads the candidate and the past item; weights are not normalised by a softmax (section
4.3, to keep the intensity of the interest), padding positions weigh 0. Item vectors
concatenate the item id embedding and the item's attribute embeddings (the paper's
"goods id" and "category id"; here release-year bucket and mean-pooled genres).

Stability: internal
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.models._torch.layers import MLP, Activation, EmbeddingArch, make_activation
from recsys.models.deepfm.arch import InteractionArch, OverArch

__all__ = ["AttentionArch", "DINModule"]


class AttentionArch(nn.Module):
    """Local activation unit and weighted sum pooling (DIN eq. 3).

    The unit is an MLP over ``[k, q, k - q, k * q]`` for a past item ``k`` and the
    candidate ``q``. Its first layer is applied in the equivalent split form
    ``W_k k + W_p (k * q) + W_q q`` (``[k, q, k - q] W`` is linear in ``k`` and ``q``, so
    the ``k - q`` block folds into the other two). The ``q`` term is then computed once
    per row instead of once per position, and ``W_k k`` depends on the item alone, so the
    caller can compute it once per distinct item (``key_terms``).

    Parameters
    ----------
    dim
        ``D``, the width of an item vector.
    hidden
        Widths of the unit's layers (the paper's 36; DeepCTR's default (64, 16)).
    activation
        ``"dice"`` or ``"prelu"``.
    normalize
        Softmax the weights over the positions (off in the paper).

    Shapes
    ------
    query ``(B, D)``, keys ``(B, L, D)``, mask ``(B, L) bool`` (True = real item) and
    optionally ``key_terms`` ``(B, L, H)`` (``key_proj(keys)``, precomputed) in; ``(B, D)``
    pooled interest and ``(B, L)`` weights out.
    """

    def __init__(
        self, dim: int, hidden: tuple[int, ...], activation: Activation, normalize: bool
    ) -> None:
        super().__init__()
        first = hidden[0]
        self.key_proj = nn.Linear(dim, first)
        self.product_proj = nn.Linear(dim, first, bias=False)
        self.query_proj = nn.Linear(dim, first, bias=False)
        self.first_activation = make_activation(activation, first)
        self.mlp = MLP(first, tuple(hidden[1:]), activation)
        self.out = nn.Linear(self.mlp.out_features, 1)
        self.normalize = normalize

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor,
        key_terms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = query.unsqueeze(1)
        if key_terms is None:
            key_terms = self.key_proj(keys)
        base = key_terms + self.query_proj(query).unsqueeze(1)
        # W_p (k * q) added to the rest in the matrix product's epilogue (one pass less)
        h = torch.addmm(
            base.reshape(-1, base.shape[-1]),
            (keys * q).reshape(-1, keys.shape[-1]),
            self.product_proj.weight.t(),
        ).view(base.shape)
        scores = self.out(self.mlp(self.first_activation(h))).squeeze(-1)
        if self.normalize:
            scores = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            weights = torch.nan_to_num(scores, nan=0.0)  # rows without history
        else:
            weights = scores * mask.to(scores.dtype)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1), weights


class DINModule(nn.Module):
    """DIN: attention-pooled behaviour sequence plus user, candidate and dense features.

    Parameters
    ----------
    embedding_arch
        The shared embedding stage.
    n_dense
        Width of the dense input (0 for none).
    attention_units, attention_activation, normalize
        The local activation unit (:class:`AttentionArch`).
    hidden, activation, dropout
        Over-arch layers.
    interest_product
        Also feed ``candidate * interest`` (element-wise) to the over-arch: an explicit
        match signal an MLP otherwise has to learn from the concatenation.
    first_order
        Add the fields' first-order weights (per-id biases, the "wide" part of DeepFM
        and Wide & Deep) to the logit; needs an ``embedding_arch`` built with them.
    fm_interaction
        Add DeepFM's factorization-machine term (:class:`InteractionArch`) over the user
        fields, the candidate's fields and the pooled interest (one vector per item
        field), so pairwise matches need not be learnt by the MLP.

    Inputs
    ------
    A dict with ``user`` ``(B,) int64``, ``item`` ``(B,) int64`` (rows of the feature
    tables), ``seq`` ``(B, L) int64`` (item rows of the behaviour sequence, the unknown /
    padding row ``n_items`` after the last item) and ``dense`` ``(B, n_dense) float32``.

    Returns
    -------
    ``((B,) logits, 0-d embedding penalty)``.
    """

    def __init__(
        self,
        embedding_arch: EmbeddingArch,
        n_dense: int,
        attention_units: tuple[int, ...],
        hidden: tuple[int, ...],
        activation: Activation,
        attention_activation: Activation,
        dropout: float,
        normalize: bool,
        interest_product: bool = False,
        first_order: bool = False,
        fm_interaction: bool = False,
    ) -> None:
        super().__init__()
        self.embedding_arch = embedding_arch
        e = embedding_arch.embedding_dim
        item_dim = embedding_arch.n_item_fields * e
        self.attention_arch = AttentionArch(
            item_dim, attention_units, attention_activation, normalize
        )
        self.interest_product = interest_product
        self.interaction_arch = InteractionArch() if fm_interaction else None
        self.first_order = first_order and embedding_arch.has_first_order
        if self.first_order:
            self.bias = nn.Parameter(torch.zeros(()))
        width = embedding_arch.n_user_fields * e + (3 if interest_product else 2) * item_dim
        width += n_dense
        self.n_dense = n_dense
        self.over_arch = OverArch(width, hidden, dropout, activation)

    def _item_table(
        self, items: torch.Tensor, seq: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vectors of the distinct items of ``items`` ``(B,)`` and ``seq`` ``(B, L)`` and
        where each is.

        A batch references ``B (1 + L)`` items but few distinct ones; each distinct item's
        vector (one lookup of its fields) is computed once and gathered, which makes the
        backward pass an ``index_add`` over the distinct items instead of a sort over
        every reference. Returns ``table`` ``(T, fields, E [+ 1])`` and the rows of it of
        ``items`` ``(B,)`` and of ``seq`` ``(B, L)``.
        """
        arch = self.embedding_arch
        n_table = int(arch.item_fields.shape[0])
        if n_table <= items.numel() + seq.numel():  # small catalogue: the whole item table
            return arch.item_table(first_order=self.first_order), items, seq
        both = torch.cat([items.unsqueeze(1), seq], dim=1)
        distinct, index = torch.unique(both, return_inverse=True)
        table, _ = arch.item_vectors(distinct, first_order=self.first_order)
        return table, index[:, 0], index[:, 1:]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        arch = self.embedding_arch
        users, items, seq = batch["user"], batch["item"], batch["seq"]
        n, length = int(users.shape[0]), int(seq.shape[1])
        user_fields, user_penalty = arch.user_vectors(users, first_order=self.first_order)
        # the candidate and its history, gathered from the distinct items' vectors
        table, item_index, seq_index = self._item_table(items, seq)
        seq_index = seq_index.reshape(-1)
        e = arch.embedding_dim
        n_fields = table.shape[1]
        vectors = table[..., :e].reshape(table.shape[0], n_fields * e)  # small: T rows
        candidate = vectors.index_select(0, item_index)
        history = vectors.index_select(0, seq_index).view(n, length, -1)
        # the attention's key term per distinct item, gathered for the history
        key_table = self.attention_arch.key_proj(vectors)
        key_terms = key_table.index_select(0, seq_index).view(n, length, -1)
        logit_bias = None
        if self.first_order:
            item_bias = table[..., e].sum(dim=1).index_select(0, item_index)
            logit_bias = self.bias + user_fields[..., e].sum(1) + item_bias
            user_fields = user_fields[..., :e]
        padding = arch.item_fields.shape[0] - 1
        mask = seq != padding
        penalty = user_penalty
        if arch.reg > 0 and self.training:
            masked = history * mask.unsqueeze(-1).to(history.dtype)
            penalty = penalty + arch.penalty(candidate) + arch.penalty(masked)
        interest, _ = self.attention_arch(candidate, history, mask, key_terms)
        parts = [user_fields.flatten(1), candidate, interest]
        if self.interest_product:
            parts.append(candidate * interest)
        if self.n_dense:
            parts.append(batch["dense"].to(candidate.dtype))
        logit = self.over_arch(torch.cat(parts, dim=1))
        if self.interaction_arch is not None:
            item_fields = torch.stack([candidate, interest], dim=1).view(n, 2 * n_fields, e)
            fields = torch.cat([user_fields, item_fields], dim=1)
            logit = logit + self.interaction_arch(fields)
        if logit_bias is not None:
            logit = logit + logit_bias
        return logit, penalty / max(n, 1)
