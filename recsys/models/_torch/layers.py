"""Building blocks shared by the deep CTR models: the embedding stage, MLPs and Dice.

Every categorical field of a model (user id, item id, user and item attribute codes,
bucketised numeric attributes) lives in **one** embedding table with a row offset per field,
so a batch's lookups are one ``index_select``; multi-valued item attributes (genres) are
mean-pooled bags over the same table. Global row 0 is padding (always zero, never
updated); inside a field, local code 0 is that field's "unknown" slot.

Stability: internal
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

__all__ = ["MLP", "Dice", "EmbeddingArch", "PReLU", "make_activation"]

Activation = Literal["relu", "prelu", "dice"]


class Dice(nn.Module):
    """Dice activation (Zhou et al., "Deep Interest Network for Click-Through Rate
    Prediction", KDD 2018, eq. 2).

    ``f(s) = p(s) s + (1 - p(s)) alpha s`` with ``p(s) = sigmoid((s - E[s]) /
    sqrt(Var[s] + eps))``: a PReLU whose rectifying point follows the data. ``E`` and
    ``Var`` are batch statistics in training and running averages in eval mode (a batch
    norm without affine parameters).

    Parameters
    ----------
    num_features
        Size of the last input dimension.
    eps
        Variance guard.

    Shapes
    ------
    ``(..., num_features)`` float in, same shape out.
    """

    def __init__(self, num_features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        p = torch.sigmoid(self.norm(x.reshape(-1, shape[-1]))).reshape(shape)
        # p x + (1 - p) alpha x = x (alpha + p (1 - alpha)), two fused ops
        return x * torch.addcmul(self.alpha, p, 1.0 - self.alpha)


class PReLU(nn.Module):
    """PReLU with one slope per feature of the **last** dimension (``nn.PReLU`` takes
    dimension 1, the sequence axis of a ``(B, L, H)`` input).

    Shapes
    ------
    ``(..., num_features)`` float in, same shape out.
    """

    def __init__(self, num_features: int, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return nn.functional.prelu(x.reshape(-1, shape[-1]), self.weight).reshape(shape)


def make_activation(kind: Activation, width: int) -> nn.Module:
    """``nn.ReLU``, :class:`PReLU` or :class:`Dice` of ``width`` features."""
    if kind == "relu":
        return nn.ReLU()
    if kind == "prelu":
        return PReLU(width)
    if kind == "dice":
        return Dice(width)
    raise ValueError(f"unknown activation {kind!r}")


class MLP(nn.Module):
    """Fully connected layers ``in -> hidden[0] -> ... -> hidden[-1]`` with an activation
    (and optional dropout) after each.

    Parameters
    ----------
    in_features
        Input width.
    hidden
        Widths of the hidden layers; empty gives the identity.
    activation
        ``"relu"``, ``"prelu"`` or ``"dice"``.
    dropout
        Dropout probability after each activation.

    Shapes
    ------
    ``(..., in_features)`` float in, ``(..., hidden[-1])`` out.
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        activation: Activation = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for units in hidden:
            layers.append(nn.Linear(width, units))
            layers.append(make_activation(activation, units))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _ConstantSparseProduct(torch.autograd.Function):
    """``matrix @ weight`` for a constant sparse ``matrix``, differentiable in ``weight``
    (``grad_weight = matrix_t @ grad``, with the transpose built once by the caller)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, weight: torch.Tensor, matrix: torch.Tensor, matrix_t: torch.Tensor
    ) -> torch.Tensor:
        ctx.matrix_t = matrix_t
        return matrix @ weight

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return ctx.matrix_t @ grad.contiguous(), None, None


class _PoolingCache:
    """The item table's pooling as a sparse matrix, built on first use.

    Derived from the buffers, so it is not module state: a copy or a pickle of the module
    starts empty, and :meth:`EmbeddingArch.set_tables`, :meth:`EmbeddingArch.grow` and a
    move to another device make it stale (its key no longer matches).
    """

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.matrix: torch.Tensor | None = None
        self.matrix_t: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _PoolingCache:
        return _PoolingCache()

    def __reduce__(self) -> tuple[type[_PoolingCache], tuple[()]]:
        return (_PoolingCache, ())


class EmbeddingArch(nn.Module):
    """The embedding stage of the deep CTR models: every sparse field of a (user, item)
    pair as a ``(B, n_fields, E)`` tensor, from one shared ``nn.EmbeddingBag`` call.

    The module holds the encoded feature tables of the model's vocabulary as buffers (not
    parameters, not in the ``state_dict``; the model saves them with its feature encoder):
    ``user_fields`` ``(n_users + 1, Fu) int64`` and ``item_fields`` ``(n_items + 1, Fi)
    int64`` global table rows of each entity's fields, and ``item_bags`` ``(n_items + 1,
    n_bags, bag_len) int64`` rows of its multi-valued attributes (0 = padding). The last
    row of each table is the "unknown" entity (every field at its unknown slot), also
    used as sequence padding.

    One lookup serves every field: a single-valued field is a bag of one, a multi-valued
    one (genres) a bag whose members weigh ``1 / n_members`` (its mean), padding excluded
    (``padding_idx=0``). With ``first_order`` the table has one extra column, the fields'
    first-order weights (the "linear" part of FM-style models), read by the same lookup.

    Parameters
    ----------
    n_rows
        Rows of the shared table (row 0 is padding: zero and never updated).
    embedding_dim
        ``E``.
    user_fields, item_fields, item_bags
        The tables above.
    init_std
        Standard deviation of the normal initialisation (first-order weights start at 0).
    first_order
        Keep first-order weights.
    reg
        L2 weight on the embeddings a batch looks up: the regularisation term is ``reg *
        sum(e**2) / B`` over the batch's field vectors, so a row is penalised in
        proportion to how often it is used rather than every row at every step.
    """

    def __init__(
        self,
        *,
        n_rows: int,
        embedding_dim: int,
        user_fields: torch.Tensor,
        item_fields: torch.Tensor,
        item_bags: torch.Tensor,
        init_std: float,
        first_order: bool = False,
        reg: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.reg = reg
        self.has_first_order = first_order
        weight = torch.randn(n_rows, embedding_dim + int(first_order)) * init_std
        if first_order:
            weight[:, -1] = 0.0
        weight[0] = 0.0
        self.embedding = self._table(weight)
        self.set_tables(user_fields, item_fields, item_bags)

    @staticmethod
    def _table(weight: torch.Tensor) -> nn.EmbeddingBag:
        return nn.EmbeddingBag.from_pretrained(weight, freeze=False, mode="sum", padding_idx=0)

    # the buffers, typed for mypy
    user_fields: torch.Tensor
    item_fields: torch.Tensor
    item_bags: torch.Tensor
    bag_weights: torch.Tensor
    _pooling: _PoolingCache

    @property
    def n_user_fields(self) -> int:
        """``Fu``."""
        return int(self.user_fields.shape[1])

    @property
    def n_item_fields(self) -> int:
        """``Fi`` plus the number of bags: the fields of one item vector."""
        return int(self.item_fields.shape[1]) + int(self.item_bags.shape[1])

    @property
    def n_fields(self) -> int:
        """Fields of a (user, item) pair."""
        return self.n_user_fields + self.n_item_fields

    def set_tables(
        self, user_fields: torch.Tensor, item_fields: torch.Tensor, item_bags: torch.Tensor
    ) -> None:
        """Install (or replace, after new users or items) the feature tables."""
        device = self.embedding.weight.device
        bags = item_bags.to(device=device, dtype=torch.int64)
        counts = (bags > 0).sum(dim=-1).clamp_min(1).to(torch.float32)
        self.register_buffer("user_fields", user_fields.to(device, torch.int64), persistent=False)
        self.register_buffer("item_fields", item_fields.to(device, torch.int64), persistent=False)
        self.register_buffer("item_bags", bags, persistent=False)
        self.register_buffer("bag_weights", 1.0 / counts, persistent=False)
        self._pooling = _PoolingCache()

    def grow(self, n_rows: int, init_std: float, generator: torch.Generator) -> None:
        """Append freshly initialised rows up to ``n_rows``; existing rows are kept."""
        weight = self.embedding.weight.detach()
        old = weight.shape[0]
        if n_rows <= old:
            return
        fresh = torch.randn(n_rows - old, weight.shape[1], generator=generator) * init_std
        if self.has_first_order:
            fresh[:, -1] = 0.0
        self.embedding = self._table(torch.cat([weight, fresh.to(weight.device)]))

    def _lookup(
        self, index: torch.Tensor, n_single: int, bag_weights: torch.Tensor | None
    ) -> torch.Tensor:
        """Pool rows of ``index`` ``(N, n_single + n_bags * bag_len)``: the first
        ``n_single`` columns one field each, then one field per bag (weighted members).

        Returns ``(N, n_single + n_bags, E [+1])``.
        """
        n, width = index.shape
        n_bags = 0 if bag_weights is None else int(self.item_bags.shape[1])
        per_row = n_single + n_bags
        starts = torch.arange(n_single, device=index.device)
        weights = torch.ones(n, n_single, device=index.device)
        if bag_weights is not None and n_bags:
            bag_len = int(self.item_bags.shape[2])
            starts = torch.cat(
                [starts, n_single + bag_len * torch.arange(n_bags, device=index.device)]
            )
            members = bag_weights.unsqueeze(-1).expand(n, n_bags, bag_len).reshape(n, -1)
            weights = torch.cat([weights, members], dim=1)
        offsets = (torch.arange(n, device=index.device).unsqueeze(1) * width + starts).flatten()
        pooled = self.embedding(index.flatten(), offsets, per_sample_weights=weights.flatten())
        return pooled.view(n, per_row, -1)

    def _item_index(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.item_fields[items]
        if not self.item_bags.shape[1]:
            return idx, None
        idx = torch.cat([idx, self.item_bags[items].flatten(-2)], dim=-1)
        return idx, self.bag_weights[items]

    def penalty(self, vectors: torch.Tensor) -> torch.Tensor:
        """``reg * sum(vectors**2)`` in training mode, else 0 (0-d float)."""
        if self.reg <= 0 or not self.training:
            return vectors.new_zeros((), dtype=torch.float32)
        return self.reg * vectors.float().square().sum()

    def item_vectors(
        self, items: torch.Tensor, *, first_order: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Field embeddings of items.

        Parameters
        ----------
        items : (...) int64
            Rows of the item tables (``n_items`` = unknown / padding).
        first_order
            Keep the first-order weight as a last column (``E + 1`` wide).

        Returns
        -------
        vectors : (..., Fi + n_bags, E) float
        penalty : 0-d float
            ``reg * sum(e**2)`` over the embeddings (not divided by the batch size).
        """
        shape = items.shape
        flat = items.reshape(-1)
        idx, weights = self._item_index(flat)
        rows = self._lookup(idx, int(self.item_fields.shape[1]), weights)
        width = self.embedding_dim + int(first_order and self.has_first_order)
        vectors = rows[..., :width].reshape(*shape, rows.shape[1], width)
        return vectors, self.penalty(vectors[..., : self.embedding_dim])

    def _pooling_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S, S.T)``: sparse CSR ``((n_items + 1) (Fi + n_bags), n_rows)`` with
        ``S @ weight`` the pooled fields of every item (as :meth:`item_vectors` of every
        row); padding members (row 0) are left out, so row 0 gets no gradient."""
        import warnings

        weight = self.embedding.weight
        cache = self._pooling
        key = (weight.device, int(weight.shape[0]), weight.dtype)
        if cache.key == key and cache.matrix is not None and cache.matrix_t is not None:
            return cache.matrix, cache.matrix_t
        n_items, n_single = (int(d) for d in self.item_fields.shape)
        n_bags, bag_len = int(self.item_bags.shape[1]), int(self.item_bags.shape[2])
        per_item = n_single + n_bags
        fields = torch.cat(
            [
                torch.arange(n_single).expand(n_items, n_single),
                (n_single + torch.arange(n_bags)).repeat_interleave(bag_len).expand(n_items, -1),
            ],
            dim=1,
        )
        out_rows = torch.arange(n_items).unsqueeze(1) * per_item + fields
        cols = torch.cat([self.item_fields.cpu(), self.item_bags.cpu().flatten(1)], dim=1)
        values = torch.cat(
            [
                torch.ones(n_items, n_single),
                self.bag_weights.cpu().repeat_interleave(bag_len, dim=1),
            ],
            dim=1,
        )
        keep = cols != 0
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            coo = torch.sparse_coo_tensor(
                torch.stack([out_rows[keep], cols[keep]]),
                values[keep].to(weight.dtype),
                (n_items * per_item, int(weight.shape[0])),
            ).coalesce()
            matrix = coo.to_sparse_csr().to(weight.device)
            matrix_t = coo.t().coalesce().to_sparse_csr().to(weight.device)
        cache.key, cache.matrix, cache.matrix_t = key, matrix, matrix_t
        return matrix, matrix_t

    def item_table(self, *, first_order: bool = False) -> torch.Tensor:
        """``(n_items + 1, Fi + n_bags, E [+1])`` field embeddings of every row of the item
        table: :meth:`item_vectors` of ``arange(n_items + 1)`` without the penalty.

        On the CPU this is one product of a constant sparse pooling matrix with the
        embedding table (and its transpose in the backward pass), several times faster
        than the bag lookup, whose backward sorts every index; elsewhere the bag lookup.
        """
        weight = self.embedding.weight
        n_items = int(self.item_fields.shape[0])
        if weight.device.type != "cpu":
            rows = torch.arange(n_items, device=weight.device)
            return self.item_vectors(rows, first_order=first_order)[0]
        matrix, matrix_t = self._pooling_matrix()
        pooled = _ConstantSparseProduct.apply(weight, matrix, matrix_t)
        width = self.embedding_dim + int(first_order and self.has_first_order)
        return pooled.view(n_items, self.n_item_fields, -1)[..., :width]

    def user_vectors(
        self, users: torch.Tensor, *, first_order: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, Fu, E)`` field embeddings of users (rows of the user table) and penalty
        (``E + 1`` wide with ``first_order``, as in :meth:`item_vectors`)."""
        # every user field holds one value: a plain gather (the bag lookup's backward sorts)
        idx = self.user_fields[users]
        width = self.embedding_dim + int(first_order and self.has_first_order)
        rows = nn.functional.embedding(idx, self.embedding.weight, padding_idx=0)
        vectors = rows if width == rows.shape[-1] else rows[..., :width]
        return vectors, self.penalty(vectors[..., : self.embedding_dim])

    def forward(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Field embeddings of (user, item) pairs, in one table lookup.

        Parameters
        ----------
        users, items : (B,) int64
            Rows of the user and item tables.

        Returns
        -------
        fields : (B, Fu + Fi + n_bags, E) float
        first_order : (B,) float or None
            Sum of the fields' first-order weights (``None`` without them).
        penalty : 0-d float
            The embedding regularisation of these lookups, already divided by ``B``.
        """
        item_idx, weights = self._item_index(items)
        idx = torch.cat([self.user_fields[users], item_idx], dim=1)
        n_single = int(self.user_fields.shape[1] + self.item_fields.shape[1])
        rows = self._lookup(idx, n_single, weights)
        fields = rows[..., : self.embedding_dim]
        first = rows[..., self.embedding_dim].sum(dim=1) if self.has_first_order else None
        batch = max(int(users.shape[0]), 1)
        return fields, first, self.penalty(fields) / batch
