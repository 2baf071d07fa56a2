"""SVD++: biased matrix factorisation with implicit feedback, for explicit ratings.

Koren, "Factorization meets the neighborhood: a multifaceted collaborative filtering
model", KDD 2008, eq. (15): a user's predicted rating of item ``i`` is

    r_ui = mu + b_u + b_i + q_i^T (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)

where ``N(u)`` is the set of items the user interacted with in the training data (the
implicit feedback), ``p_u``/``q_i`` are explicit user/item factors and ``y_j`` are the
implicit item factors. Training minimises the squared error of the observed ratings plus
``reg`` times the squared norm of every parameter a rating touches, with stochastic
gradient descent as in the paper (section 4, learning rate decayed per epoch).

Training is vectorised in torch: one step takes a minibatch of ratings, computes the
implicit term of every user with one ``embedding_bag`` over the users' item lists and
applies the summed per-rating updates of the batch with ``index_add_``; the gradient of
the implicit factors flows back with one more ``embedding_bag`` over the transposed lists.
There is no Python loop over ratings. It runs on CPU or CUDA (``device="auto"``) and is
repeatable on CPU for a given seed (on MovieLens 100K also bit-identical between 1 and 2
threads). On CUDA ``index_add_`` sums
with atomics, so GPU fits agree with CPU ones only up to float rounding.

Deviation from the paper: Koren decays every ``y_j`` of ``N(u)`` at each of the user's
ratings; a minibatch applies that decay for its share of the ratings to all ``y_j`` at once,
in closed form (see ``_train_epoch``). With no regularisation a full-batch step is exactly
gradient descent on the squared error (tested against autograd), as long as the step
bounds that keep minibatch sums stable on skewed logs do not bind (see ``_train_epoch``).

Performance: training is a few hundred small torch ops per epoch. On a machine with more
busy processes than cores, libgomp's spinning threads can make multi-threaded torch many
times slower; there ``torch.set_num_threads(1)`` or ``OMP_WAIT_POLICY=PASSIVE`` (set before
torch loads) restores the speed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from pydantic import AliasChoices, Field
from tqdm.auto import tqdm

from recsys.errors import ArtifactError, ConfigError, DataError
from recsys.models._torch import DEVICE_PATTERN, resolve_device, seeded_generator
from recsys.models.base import BaseRecommender, ModelConfig, _mask_rows, check_is_fitted
from recsys.types import TrainingData

if TYPE_CHECKING:
    import torch

# torch is imported inside the training methods only: predicting, recommending and loading
# are numpy, so importing the model registry or serving a fitted SVD++ never loads torch.

__all__ = ["EpochCallback", "SVDPlusPlus", "SVDPlusPlusConfig"]

logger = logging.getLogger(__name__)

#: ``on_epoch(epoch, metrics)``: called after every epoch (1-based) with that epoch's
#: entry of ``history_``.
EpochCallback = Callable[[int, dict[str, float]], None]

_HISTORY_FILE = "history.json"
# Ridge added to the fold-in normal equations so they stay solvable when reg is 0 and a
# user has fewer ratings than factors.
_FOLD_IN_EPS = 1e-4
# How many parameter groups of one rating (b_i, q_i, y_i; b_u, p_u) may take a full step at
# once: a row's SGD step is bounded so that _STEP_BOUND rows at the bound move a rating's
# prediction by at most its error (see SVDPlusPlus._train_epoch, #14).
_STEP_BOUND = 3.0


class SVDPlusPlusConfig(ModelConfig):
    """Hyperparameters of :class:`SVDPlusPlus`.

    The defaults were chosen on a validation split carved from the training part of the
    MovieLens 100K rating protocol (see ``benchmarks/rating_svdpp.py``).

    Attributes
    ----------
    embedding_dim
        Number of latent factors of ``p_u``, ``q_i`` and ``y_j``; ``factors`` is accepted
        as its other name.
    epochs
        Passes over the training ratings (an upper bound when early stopping is on).
    learning_rate
        SGD step of one rating's update (Koren's gamma); the step of epoch ``e`` (0-based)
        is ``learning_rate * learning_rate_decay ** e``.
    learning_rate_decay
        Multiplicative decay of the learning rate after every epoch (Koren used 0.9).
    reg
        L2 weight (Koren's lambda) on every bias and factor a rating touches, per rating.
    batch_size
        Ratings per SGD step. A step applies the sum of the per-rating updates of its
        ratings, each computed from the parameters at the start of the step, so
        ``learning_rate`` keeps its per-rating meaning; larger batches are faster and
        behave alike as long as a batch is a small fraction of the data. Summed updates
        are stiffer than sequential ones; a row that many ratings of one batch touch
        (a popular item) takes a bounded step instead, so training stays finite.
    init_std
        Standard deviation of the normal initialisation of the factors (biases start at 0).
    patience
        With ``validation`` passed to :meth:`SVDPlusPlus.fit`: stop after this many
        epochs without a better validation RMSE and keep the best epoch's parameters.
        ``None`` trains all ``epochs``.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """

    embedding_dim: int = Field(
        default=20, ge=1, validation_alias=AliasChoices("embedding_dim", "factors")
    )
    epochs: int = Field(default=20, ge=1)
    learning_rate: float = Field(default=0.02, gt=0.0)
    learning_rate_decay: float = Field(default=0.95, gt=0.0, le=1.0)
    reg: float = Field(default=0.08, ge=0.0)
    batch_size: int = Field(default=4096, ge=1)
    init_std: float = Field(default=0.1, ge=0.0)
    patience: int | None = Field(default=None, ge=1)
    device: str = Field(default="auto", pattern=DEVICE_PATTERN)


@dataclass
class _Params:
    """The learned tensors, on the training device."""

    user_bias: torch.Tensor  # (n_users,) b_u
    item_bias: torch.Tensor  # (n_items,) b_i
    user_emb: torch.Tensor  # (n_users, d) p_u
    item_emb: torch.Tensor  # (n_items, d) q_i
    implicit_emb: torch.Tensor  # (n_items, d) y_j

    def clone(self) -> _Params:
        return _Params(*(t.clone() for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.user_bias, self.item_bias, self.user_emb, self.item_emb, self.implicit_emb)


class _ImplicitLists:
    """Every user's item list N(u) in ``embedding_bag`` form, both ways round.

    ``users_of(Y)`` is ``|N(u)|^-1/2 sum_{j in N(u)} y_j`` for every user, shape
    ``(n_users, d)``; ``items_of(G)`` is its transpose applied to a per-user gradient,
    ``sum_{u: j in N(u)} |N(u)|^-1/2 g_u`` for every item, shape ``(n_items, d)``.
    """

    def __init__(self, user_items: sp.csr_matrix, device: torch.device) -> None:
        import torch

        x = sp.csr_matrix(user_items, dtype=np.float32)
        norm = 1.0 / np.sqrt(np.maximum(np.diff(x.indptr), 1)).astype(np.float32)
        weights = np.repeat(norm, np.diff(x.indptr)).astype(np.float32)
        xt = sp.csr_matrix(
            (weights, x.indices, x.indptr), shape=x.shape, dtype=np.float32
        ).T.tocsr()
        xt.sort_indices()

        def t(a: NDArray[Any], dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)

        self._u_items = t(x.indices, torch.int64)
        self._u_offsets = t(x.indptr[:-1], torch.int64)
        self._u_weights = t(weights, torch.float32)
        self._i_users = t(xt.indices, torch.int64)
        self._i_offsets = t(xt.indptr[:-1], torch.int64)
        self._i_weights = t(xt.data, torch.float32)
        self.user_norm = t(norm, torch.float32)  # (n_users,) |N(u)|^-1/2
        self._bag = torch.nn.functional.embedding_bag

    def users_of(self, item_vectors: torch.Tensor) -> torch.Tensor:
        return self._bag(
            self._u_items,
            item_vectors,
            self._u_offsets,
            mode="sum",
            per_sample_weights=self._u_weights,
        )

    def items_of(self, user_vectors: torch.Tensor) -> torch.Tensor:
        return self._bag(
            self._i_users,
            user_vectors,
            self._i_offsets,
            mode="sum",
            per_sample_weights=self._i_weights,
        )


def _implicit_term(
    histories: sp.csr_matrix, implicit_emb: NDArray[np.float32]
) -> NDArray[np.float32]:
    """``|N(u)|^-1/2 sum_{j in N(u)} y_j`` for each row of a history matrix (numpy).

    Only the sparsity structure of ``histories`` counts; stored values are ignored.
    Returns ``(n_rows, d) float32``; rows without items give zeros.
    """
    h = sp.csr_matrix(histories, dtype=np.float32, copy=True)
    h.sum_duplicates()
    h.data[:] = 1.0
    counts = np.diff(h.indptr)
    norm = (1.0 / np.sqrt(np.maximum(counts, 1))).astype(np.float32)
    return np.asarray(h @ implicit_emb, dtype=np.float32) * norm[:, None]


class SVDPlusPlus(BaseRecommender):
    """SVD++ rating prediction (Koren 2008), also a retriever that ranks by predicted rating.

    Needs explicit ratings. ``predict_rating`` gives the rating prediction, clipped to
    the rating range seen in training, with a bias-only fallback for unknown users and
    items. ``score`` and ``recommend`` use the same prediction unclipped (so items above
    the top of the scale still rank apart); unknown pairs score NaN as the protocol says.

    Learned state (``n_users``/``n_items`` of the training vocabulary, ``d =
    embedding_dim``): ``global_mean_`` (0-d float32, mu), ``rating_range_`` ((2,)
    float32, lowest and highest training rating), ``user_bias_`` ((n_users,) float32),
    ``item_bias_`` ((n_items,) float32), ``user_embeddings_`` ((n_users, d) float32,
    p_u), ``item_embeddings_`` ((n_items, d) float32, q_i) and
    ``implicit_item_embeddings_`` ((n_items, d) float32, y_j). Users and items without
    training ratings keep zero factors and biases. ``history_`` holds one dict of
    training metrics per epoch (the training curve).

    Embeddings (:class:`~recsys.protocols.EmbeddingModel`): ``user_factors`` is
    ``[p_u + implicit_u, mu + b_u, 1]`` and ``item_factors`` is ``[q_i, 1, b_i]``, both
    ``d + 2`` wide, so their inner product is exactly the score.

    Fold-in (:class:`~recsys.protocols.FoldIn`): a new history gets its implicit term
    straight from its items with ``p_u = 0``, ``b_u = 0``; with ``use_ratings=True`` the
    history's values are read as ratings and ``p_u``, ``b_u`` are solved in closed form
    (the ridge regression SGD approximates for a single user, items held fixed).

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing import block_dataset
    >>> data = block_dataset(noise=0.5)
    >>> model = SVDPlusPlus(embedding_dim=4, epochs=30, batch_size=32, device="cpu")
    >>> model = model.fit(data, show_progress=False)
    >>> model.predict_rating([0, 0], [0, -1]).shape
    (2,)
    """

    name: ClassVar[str] = "svdpp"
    Config: ClassVar[type[ModelConfig]] = SVDPlusPlusConfig
    _state_fields: ClassVar[tuple[str, ...]] = (
        "global_mean_",
        "rating_range_",
        "user_bias_",
        "item_bias_",
        "user_embeddings_",
        "item_embeddings_",
        "implicit_item_embeddings_",
    )

    global_mean_: NDArray[np.float32] | None
    rating_range_: NDArray[np.float32] | None
    user_bias_: NDArray[np.float32] | None
    item_bias_: NDArray[np.float32] | None
    user_embeddings_: NDArray[np.float32] | None
    item_embeddings_: NDArray[np.float32] | None
    implicit_item_embeddings_: NDArray[np.float32] | None

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.history_: list[dict[str, float]] = []
        # fit() arguments that _fit() reads; set only for the duration of a fit
        self._validation: TrainingData | None = None
        self._on_epoch: EpochCallback | None = None

    @property
    def _cfg(self) -> SVDPlusPlusConfig:
        assert isinstance(self.config, SVDPlusPlusConfig)
        return self.config

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        data: TrainingData,
        *,
        show_progress: bool = True,
        validation: TrainingData | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> Self:
        """Learn from the ratings of ``data``; returns ``self``.

        Parameters
        ----------
        data
            Training view with explicit ratings (``data.rating`` not ``None``).
        show_progress
            Show a progress bar over epochs.
        validation
            Optional held-out ratings over the same vocabularies (e.g. ``data.select``
            of other rows, or a frame built with ``user_map``/``item_map`` of ``data``).
            Its RMSE (predictions clipped to the training rating range) is recorded per
            epoch as ``val_rmse`` and drives early stopping when ``patience`` is set; the
            model then keeps the best epoch's parameters while ``history_`` lists every
            epoch trained.
        on_epoch
            Called as ``on_epoch(epoch, metrics)`` after every epoch, ``epoch`` counting
            from 1 and ``metrics`` the epoch's ``history_`` entry: ``loss`` (mean squared
            error plus the regularisation term, per rating), ``train_rmse``,
            ``learning_rate``, ``seconds`` and ``val_rmse`` with validation.

        Raises
        ------
        DataError
            If ``data`` (or ``validation``) has no ratings, non-finite ratings, or the
            validation vocabularies differ from the training ones.
        ConfigError
            If training diverges (the loss is no longer finite: lower ``learning_rate``)
            or ``device`` names a CUDA device that is not available.
        """
        self._check_ratings(data, "fit")
        if validation is not None:
            self._check_ratings(validation, "fit(validation=...)")
            if (validation.n_users, validation.n_items) != (data.n_users, data.n_items):
                raise DataError(
                    f"{type(self).__name__}.fit: validation has {validation.n_users} users and "
                    f"{validation.n_items} items, the training data {data.n_users} and "
                    f"{data.n_items}; build it with the training data's user_map and item_map"
                )
        self._validation = validation
        self._on_epoch = on_epoch
        try:
            return super().fit(data, show_progress=show_progress)
        finally:
            self._validation = None
            self._on_epoch = None

    def _check_ratings(self, data: TrainingData, where: str) -> None:
        if not isinstance(data, TrainingData):
            raise DataError(
                f"{type(self).__name__}.{where} expects TrainingData, got {type(data).__name__}"
            )
        if data.rating is None:
            raise DataError(
                f"{type(self).__name__}.{where}: SVD++ needs explicit ratings, but the data "
                "has no rating column; for implicit feedback (clicks, views, purchases) use "
                "the 'bpr' or 'als' model instead"
            )
        bad = ~np.isfinite(data.rating)
        if bad.any():
            raise DataError(
                f"{type(self).__name__}.{where}: {int(bad.sum())} ratings are NaN or infinite "
                f"(rows {np.flatnonzero(bad)[:5].tolist()}); drop or fix them first"
            )

    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        import torch

        cfg = self._cfg
        assert data.rating is not None
        # A re-fit that fails (e.g. diverges) must not leave the previous fit's parameters
        # next to the new data's user_items_.
        for f in self._state_fields:
            setattr(self, f, None)
        device = resolve_device(cfg.device)
        gen = seeded_generator(cfg.seed)
        n_users, n_items, d = data.n_users, data.n_items, cfg.embedding_dim
        ratings = data.rating.astype(np.float32)
        n = len(ratings)
        mu = float(ratings.astype(np.float64).mean())
        lo, hi = float(ratings.min()), float(ratings.max())
        user_counts = np.bincount(data.user_idx, minlength=n_users).astype(np.float32)
        item_counts = np.bincount(data.item_idx, minlength=n_items).astype(np.float32)
        lists = _ImplicitLists(data.user_items, device)
        # Koren's rule decays every y_j of N(u) at each of the user's ratings; per epoch
        # item j is decayed once per rating whose user holds j, i.e. implicit_w[j] times.
        implicit_w = np.asarray(data.user_items.T @ user_counts, dtype=np.float32)

        def on_device(a: NDArray[Any]) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        def init(rows: int, active: NDArray[np.float32]) -> torch.Tensor:
            w = torch.randn(rows, d, generator=gen, dtype=torch.float32) * cfg.init_std
            # rows never touched by a rating keep zero factors, so they add no noise
            return on_device((w * torch.from_numpy(active > 0)[:, None]).numpy())

        params = _Params(
            user_bias=torch.zeros(n_users, device=device),
            item_bias=torch.zeros(n_items, device=device),
            user_emb=init(n_users, user_counts),
            item_emb=init(n_items, item_counts),
            implicit_emb=init(n_items, implicit_w),
        )
        users = on_device(data.user_idx.astype(np.int64))
        items = on_device(data.item_idx.astype(np.int64))
        residual = on_device(ratings - np.float32(mu))
        implicit_w_t = on_device(implicit_w)[:, None]
        user_w = on_device(user_counts)
        item_w = on_device(item_counts)
        val = self._validation_tensors(device)

        logger.info(
            "training model=svdpp device=%s n_users=%d n_items=%d n_ratings=%d dim=%d epochs=%d",
            device,
            n_users,
            n_items,
            n,
            d,
            cfg.epochs,
        )
        self.history_ = []
        best: tuple[float, int, _Params] | None = None
        lr = cfg.learning_rate
        bar = tqdm(range(1, cfg.epochs + 1), desc="svdpp", disable=not show_progress)
        try:
            for epoch in bar:
                start = time.perf_counter()
                order = torch.randperm(n, generator=gen).to(device)
                sse = self._train_epoch(
                    params, lists, users, items, residual, implicit_w_t, order, lr, hi - lo
                )
                penalty = self._penalty(params, user_w, item_w, implicit_w_t)
                if not math.isfinite(sse) or not math.isfinite(penalty):
                    raise ConfigError(
                        f"{type(self).__name__}.fit: training diverged at epoch {epoch} (loss is "
                        f"not finite); lower learning_rate (now {cfg.learning_rate}) or batch_size "
                        f"(now {cfg.batch_size})"
                    )
                metrics = {
                    "epoch": float(epoch),
                    "loss": (sse + cfg.reg * penalty) / n,
                    "train_rmse": math.sqrt(sse / n),
                    "learning_rate": lr,
                }
                if val is not None:
                    metrics["val_rmse"] = self._val_rmse(params, lists, val, mu, lo, hi)
                metrics["seconds"] = time.perf_counter() - start
                self.history_.append(metrics)
                bar.set_postfix(
                    {k: f"{v:.4f}" for k, v in metrics.items() if k in ("train_rmse", "val_rmse")}
                )
                logger.debug(
                    "epoch model=svdpp %s", " ".join(f"{k}={v:.5g}" for k, v in metrics.items())
                )
                if self._on_epoch is not None:
                    self._on_epoch(epoch, dict(metrics))
                lr *= cfg.learning_rate_decay
                if val is not None and cfg.patience is not None:
                    if best is None or metrics["val_rmse"] < best[0]:
                        best = (metrics["val_rmse"], epoch, params.clone())
                    elif epoch - best[1] >= cfg.patience:
                        logger.info(
                            "early stop model=svdpp epoch=%d best_epoch=%d val_rmse=%.5f",
                            epoch,
                            best[1],
                            best[0],
                        )
                        break
        finally:
            bar.close()
        if best is not None:
            params = best[2]

        def out(t: torch.Tensor) -> NDArray[np.float32]:
            return np.ascontiguousarray(t.detach().to("cpu").numpy(), dtype=np.float32)

        self.global_mean_ = np.asarray(mu, dtype=np.float32)
        self.rating_range_ = np.asarray([lo, hi], dtype=np.float32)
        self.user_bias_ = out(params.user_bias)
        self.item_bias_ = out(params.item_bias)
        self.user_embeddings_ = out(params.user_emb)
        self.item_embeddings_ = out(params.item_emb)
        self.implicit_item_embeddings_ = out(params.implicit_emb)

    def _train_epoch(
        self,
        p: _Params,
        lists: _ImplicitLists,
        users: torch.Tensor,
        items: torch.Tensor,
        residual: torch.Tensor,
        implicit_w: torch.Tensor,
        order: torch.Tensor,
        lr: float,
        max_error: float = math.inf,
    ) -> float:
        """One pass of minibatch SGD over the ratings in ``order``; returns the SSE seen.

        Each batch applies, summed, the per-rating updates of Koren 2008 section 4
        (``e = r - r_hat``): b_u += lr (e - reg b_u), b_i += lr (e - reg b_i),
        p_u += lr (e q_i - reg p_u), q_i += lr (e (p_u + implicit_u) - reg q_i),
        y_j += lr (e |N(u)|^-1/2 q_i - reg y_j) for j in N(u).

        Guards keep the summed updates stable on sparse, skewed logs (#14):

        * ``e`` is clipped to ``[-max_error, max_error]`` in the updates (the SSE is of
          the unclipped errors); ``fit`` passes the width of the rating range, which the
          error of a model centred on the mean only exceeds once it is off the scale.
        * A bias or factor row that many ratings of the batch touch takes a bounded
          step. Its summed update is ``lr`` times its batch gradient, whose curvature
          along the row is at most ``h``, the sum over those ratings of the squared
          derivative of their prediction by the row (Gauss-Newton diagonal: the number
          of ratings for ``b_u`` and ``b_i``, ``sum |q_i|^2`` for ``p_u``, ``sum |p_u +
          implicit_u|^2`` for ``q_i``); a step of ``lr * h`` above 1 overshoots the
          row's optimum. The update is divided by ``max(1, _STEP_BOUND * lr * h)``, so
          the rows one rating moves together (``b_i``, ``q_i``, ``y`` of a user with one
          rating) cannot jointly overshoot it.
        * ``y`` rows move together (every ``y_j`` of ``N(u)`` shifts the user's implicit
          term), so a per-row bound would under-count their curvature up to ``|N(u)|``
          times. The batch's ``y`` step is scaled to at most ``1 / _STEP_BOUND`` of the
          exact minimiser along that step of the batch's linearised squared error.

        Where items get few ratings per batch (MovieLens 100K) the bounds rarely bind;
        where a few items own most ratings (product reviews, one per user) they keep a
        popular item's hundreds of summed per-batch updates from diverging. With one
        full batch and no regularisation a step is exact gradient descent whenever no
        bound binds.
        """
        import torch

        reg = self._cfg.reg
        bs = self._cfg.batch_size
        n = len(order)
        n_users, d = p.user_emb.shape
        n_items = p.item_emb.shape[0]
        device = users.device
        ones = torch.ones(d, device=device)
        sse = torch.zeros((), dtype=torch.float64, device=device)
        # The per-rating decay of y_j, applied for one batch's share of the ratings in
        # closed form ((1 - lr reg)^count ~ exp(-lr reg count)): summing thousands of
        # linear decays at once would overshoot for popular items.
        decays = {
            m: torch.exp(implicit_w * (-lr * reg * m / n)) for m in {min(bs, n), n % bs or bs}
        }
        bound = _STEP_BOUND * lr

        def step(curvature: torch.Tensor) -> torch.Tensor:
            """``lr / max(1, _STEP_BOUND * lr * h)`` per row."""
            return curvature.mul_(bound).clamp_(min=1.0).reciprocal_().mul_(lr)

        # In-place arithmetic and no `alpha=` on index_add_ below: on CPU both save
        # measurable time per step at these small sizes.
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            u = users.index_select(0, idx)
            i = items.index_select(0, idx)
            implicit = lists.users_of(p.implicit_emb)  # (n_users, d), from this step's y
            pu = p.user_emb.index_select(0, u)  # (b, d)
            qi = p.item_emb.index_select(0, i)  # (b, d)
            su = implicit.index_select(0, u).add_(pu)  # p_u + implicit_u
            bu = p.user_bias.index_select(0, u)
            bi = p.item_bias.index_select(0, i)
            e = residual.index_select(0, idx).sub_(bu).sub_(bi).sub_(torch.mv(qi * su, ones))
            sse += torch.dot(e, e).to(torch.float64)
            e.clamp_(-max_error, max_error)
            # per-row steps from the Gauss-Newton diagonal of this batch (see docstring)
            lr_bu = step(torch.bincount(u, minlength=n_users).to(e.dtype)).index_select(0, u)
            lr_bi = step(torch.bincount(i, minlength=n_items).to(e.dtype)).index_select(0, i)
            q_sq = torch.mv(qi * qi, ones)
            lr_p = step(torch.bincount(u, q_sq, minlength=n_users)).index_select(0, u)
            s_sq = torch.mv(su * su, ones)
            lr_q = step(torch.bincount(i, s_sq, minlength=n_items)).index_select(0, i)
            eq = qi * e[:, None]
            grad_implicit = torch.zeros(n_users, d, device=device).index_add_(0, u, eq)
            p.user_bias.index_add_(0, u, bu.mul_(-reg).add_(e).mul_(lr_bu))
            p.item_bias.index_add_(0, i, bi.mul_(-reg).add_(e).mul_(lr_bi))
            p.user_emb.index_add_(0, u, eq.sub_(pu, alpha=reg).mul_(lr_p[:, None]))
            p.item_emb.index_add_(0, i, su.mul_(e[:, None]).sub_(qi, alpha=reg).mul_(lr_q[:, None]))
            # y: one step for the batch, at most 1 / _STEP_BOUND of the minimiser along it
            # (gain / curvature of the predictions it moves; see the docstring)
            step_y = lists.items_of(grad_implicit)
            moved = torch.mv(qi * lists.users_of(step_y).index_select(0, u), ones)
            # (tensor arithmetic, no .item(): a CUDA step need not wait for the host)
            gain, curv = torch.dot(e, moved), torch.dot(moved, moved).mul_(bound)
            scale = (gain / curv.clamp(min=1e-30)).clamp_(0.0, 1.0).mul_(lr)
            p.implicit_emb.mul_(decays[len(idx)]).add_(step_y.mul_(scale))
        return float(sse)

    @staticmethod
    def _penalty(
        p: _Params, user_w: torch.Tensor, item_w: torch.Tensor, implicit_w: torch.Tensor
    ) -> float:
        """Sum over ratings of the squared norms each rating regularises (without reg)."""
        import torch

        total = (
            torch.dot(user_w, p.user_bias.square() + p.user_emb.square().sum(1))
            + torch.dot(item_w, p.item_bias.square() + p.item_emb.square().sum(1))
            + torch.dot(implicit_w[:, 0], p.implicit_emb.square().sum(1))
        )
        return float(total)

    def _validation_tensors(
        self, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        import torch

        v = self._validation
        if v is None or v.n_interactions == 0:
            return None
        assert v.rating is not None
        return (
            torch.from_numpy(v.user_idx.astype(np.int64)).to(device),
            torch.from_numpy(v.item_idx.astype(np.int64)).to(device),
            torch.from_numpy(v.rating.astype(np.float32)).to(device),
        )

    def _val_rmse(
        self,
        p: _Params,
        lists: _ImplicitLists,
        val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        mu: float,
        lo: float,
        hi: float,
    ) -> float:
        import torch

        u, i, r = val
        s = p.user_emb.index_select(0, u) + lists.users_of(p.implicit_emb).index_select(0, u)
        pred = (
            mu
            + p.user_bias.index_select(0, u)
            + p.item_bias.index_select(0, i)
            + torch.linalg.vecdot(p.item_emb.index_select(0, i), s)
        ).clamp(lo, hi)
        return float(torch.sqrt(torch.mean((pred - r).square().to(torch.float64))))

    # ------------------------------------------------------------------ scoring
    def _user_vectors(self, user_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        """``p_u + implicit_u`` of known users, ``(len(user_idx), d) float32``."""
        assert self.user_items_ is not None and self.user_embeddings_ is not None
        assert self.implicit_item_embeddings_ is not None
        implicit = _implicit_term(self.user_items_[user_idx], self.implicit_item_embeddings_)
        return self.user_embeddings_[user_idx] + implicit

    def _score_vectors(
        self, vectors: NDArray[np.float32], user_bias: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """``mu + b_u + b_i + q_i . v_u`` for every item: ``(n, n_items) float32``."""
        assert self.item_embeddings_ is not None and self.item_bias_ is not None
        scores = vectors @ self.item_embeddings_.T
        scores += self.item_bias_[None, :]
        scores += (user_bias + np.float32(self.global_mean_))[:, None]
        return np.asarray(scores, dtype=np.float32)

    def _score_users(self, user_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        assert self.user_bias_ is not None
        return self._score_vectors(self._user_vectors(user_idx), self.user_bias_[user_idx])

    # canonical scores (recsys.models._exact): [v_u, mu + b_u, 1] . [q_i, 1, b_i]
    def _user_queries(
        self, user_idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
        assert self.user_bias_ is not None
        queries = self._pack_users(self._user_vectors(user_idx), self.user_bias_[user_idx])
        return np.ones(len(user_idx), bool), queries

    def _item_vectors(self) -> tuple[NDArray[np.float32], float]:
        packed = self._derived("_packed_items", self.item_embeddings_, lambda: self.item_factors)
        return self._vectors_and_norm(packed)

    def predict_rating(self, user_idx: ArrayLike, item_idx: ArrayLike) -> NDArray[np.float32]:
        """Predicted ratings of ``(user_idx[j], item_idx[j])`` pairs, shape ``(n,) float32``.

        Predictions are clipped to ``rating_range_``. An unknown user (index ``-1`` or
        outside the vocabulary) or item contributes no bias and no factors, so the answer
        falls back to ``mu + b_i``, ``mu + b_u`` or ``mu``; it is never NaN.

        Raises
        ------
        DataError
            If the two index arrays differ in shape.
        """
        check_is_fitted(self)
        assert self.user_bias_ is not None and self.item_bias_ is not None
        assert self.item_embeddings_ is not None and self.rating_range_ is not None
        users = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
        items = np.atleast_1d(np.asarray(item_idx, dtype=np.int64))
        if users.shape != items.shape or users.ndim != 1:
            raise DataError(
                f"{type(self).__name__}.predict_rating: user_idx has shape {users.shape}, "
                f"item_idx has shape {items.shape}; they must be equal 1-d shapes"
            )
        ku = (users >= 0) & (users < self.n_users)
        ki = (items >= 0) & (items < self.n_items)
        pred = np.full(users.shape, np.float32(self.global_mean_), np.float32)
        pred[ku] += self.user_bias_[users[ku]]
        pred[ki] += self.item_bias_[items[ki]]
        both = ku & ki
        if both.any():
            uniq, inverse = np.unique(users[both], return_inverse=True)
            vectors = self._user_vectors(uniq)[inverse]
            pred[both] += np.einsum("nd,nd->n", vectors, self.item_embeddings_[items[both]])
        lo, hi = self.rating_range_
        return np.clip(pred, lo, hi).astype(np.float32)

    # ------------------------------------------------------------------ embeddings
    @property
    def user_factors(self) -> NDArray[np.float32]:
        """``(n_users, embedding_dim + 2) float32``: ``[p_u + implicit_u, mu + b_u, 1]``."""
        check_is_fitted(self)
        assert self.user_bias_ is not None
        vectors = self._user_vectors(np.arange(self.n_users))
        return self._pack_users(vectors, self.user_bias_)

    @property
    def item_factors(self) -> NDArray[np.float32]:
        """``(n_items, embedding_dim + 2) float32``: ``[q_i, 1, b_i]``."""
        check_is_fitted(self)
        assert self.item_embeddings_ is not None and self.item_bias_ is not None
        ones = np.ones((self.n_items, 1), np.float32)
        return np.hstack([self.item_embeddings_, ones, self.item_bias_[:, None]]).astype(np.float32)

    def _pack_users(
        self, vectors: NDArray[np.float32], user_bias: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        ones = np.ones((len(vectors), 1), np.float32)
        bias = (user_bias + np.float32(self.global_mean_))[:, None]
        return np.hstack([vectors, bias, ones]).astype(np.float32)

    # ------------------------------------------------------------------ fold-in
    def fold_in_user_factors(
        self, histories: sp.csr_matrix, *, use_ratings: bool = False
    ) -> NDArray[np.float32]:
        """User vectors for the rows of a ``(n, n_items)`` history matrix, without refit.

        Parameters
        ----------
        histories
            Sparse ``(n, n_items)`` matrix; row ``r`` lists one user's items. Item indices
            outside the vocabulary must be removed by the caller.
        use_ratings
            ``False``: only the items count (implicit feedback); ``p_u = 0`` and
            ``b_u = 0``, so the user is represented by the implicit term alone.
            ``True``: the stored values are the user's ratings of those items, and
            ``[p_u, b_u]`` solve the regularised least squares of SVD++ for that user
            with the item parameters held fixed (ridge weight ``reg * n_ratings``).

        Returns
        -------
        (n, embedding_dim + 2) float32
            In the layout of :attr:`user_factors`, so ``fold_in_user_factors(h) @
            item_factors.T`` scores every item.

        Raises
        ------
        DataError
            If the matrix has the wrong number of columns, or ``use_ratings`` is set and
            a value is not finite or a (row, item) pair is given twice.
        """
        check_is_fitted(self)
        h = self._check_histories(histories, use_ratings)
        vectors, user_bias = self._fold_in(h, use_ratings)
        return self._pack_users(vectors, user_bias)

    def recommend_for_history(
        self,
        histories: sp.csr_matrix,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        use_ratings: bool = False,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items for each row of a ``(n, n_items)`` history matrix (fold-in).

        See :class:`recsys.protocols.FoldIn`; ``use_ratings`` as in
        :meth:`fold_in_user_factors`. Scores are predicted ratings (unclipped).
        """
        check_is_fitted(self)
        if k < 1:
            raise ConfigError(f"{type(self).__name__}.recommend_for_history: k must be >= 1")
        h = self._check_histories(histories, use_ratings)
        n = h.shape[0]
        items = np.empty((n, k), np.int64)
        scores = np.empty((n, k), np.float32)
        bs = self._block_size()
        for start in range(0, n, bs):
            block, parts = self._history_block(h[start : start + bs], use_ratings, exclude_seen)
            items[start : start + bs], scores[start : start + bs] = self._rank_rows(block, k, parts)
        return items, scores

    def _history_block(
        self, rows: sp.csr_matrix, use_ratings: bool, exclude_seen: bool
    ) -> tuple[NDArray[np.float32], tuple[NDArray[np.bool_], NDArray[np.float32]]]:
        """The masked score block of checked history rows and their fold-in queries
        (every row is scored by inner product)."""
        vectors, user_bias = self._fold_in(rows, use_ratings)
        block = self._score_vectors(vectors, user_bias)
        if exclude_seen:
            _mask_rows(block, rows)
        queries = self._pack_users(vectors, user_bias)
        return block, (np.ones(len(queries), bool), queries)

    def score_history_pairs(
        self,
        histories: sp.csr_matrix,
        rows: NDArray[np.int64],
        items: NDArray[np.int64],
        *,
        exclude_seen: bool = True,
    ) -> NDArray[np.float32]:
        """The score :meth:`recommend_for_history` gives item ``items[j]`` in the full-depth
        list of history row ``rows[j]`` (NaN where the list leaves it out), without ranking
        the catalogue; see :meth:`recsys.models.base.HistoryFoldIn.score_history_pairs`."""
        check_is_fitted(self)
        h = self._check_histories(histories, False)
        return self._history_pair_scores(
            h, rows, items, lambda chunk: self._history_block(chunk, False, exclude_seen)
        )

    def _check_histories(self, histories: sp.csr_matrix, use_ratings: bool) -> sp.csr_matrix:
        name = type(self).__name__
        if not sp.issparse(histories) and not isinstance(histories, np.ndarray):
            raise DataError(
                f"{name}: histories must be a scipy sparse (n, n_items) matrix, "
                f"got {type(histories).__name__}"
            )
        h = sp.csr_matrix(histories, dtype=np.float32, copy=True)
        if h.ndim != 2 or h.shape[1] != self.n_items:
            raise DataError(
                f"{name}: histories have {h.shape[1]} columns, the model has {self.n_items} items"
            )
        if use_ratings:
            if not np.isfinite(h.data).all():
                raise DataError(f"{name}: histories hold NaN or infinite ratings")
            before = h.nnz
            canonical = h.copy()
            canonical.sum_duplicates()
            if canonical.nnz != before:
                raise DataError(
                    f"{name}: {before - canonical.nnz} (row, item) ratings are given more than "
                    "once; keep one rating per pair"
                )
            h = canonical
        else:
            h.sum_duplicates()
        return h

    def _fold_in(
        self, h: sp.csr_matrix, use_ratings: bool
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``(p_u + implicit_u, b_u)`` of history rows: ``(n, d)`` and ``(n,)`` float32."""
        assert self.implicit_item_embeddings_ is not None and self.item_embeddings_ is not None
        assert self.item_bias_ is not None
        implicit = _implicit_term(h, self.implicit_item_embeddings_)
        n, d = implicit.shape
        if not use_ratings or h.nnz == 0:
            return implicit, np.zeros(n, np.float32)
        # Ridge regression per user (Koren's objective with the items fixed): features
        # f_j = [q_j, 1], targets t_j = r_j - mu - b_j - q_j . implicit_u, unknowns
        # [p_u, b_u], ridge weight reg * n_u. Only the items of these rows are touched, so
        # the work does not grow with the catalogue.
        cols, local = np.unique(h.indices, return_inverse=True)
        feats = np.hstack([self.item_embeddings_[cols], np.ones((len(cols), 1))]).astype(
            np.float64
        )  # (m, d + 1)
        outer = np.einsum("ia,ib->iab", feats, feats).reshape(len(cols), -1)
        structure = sp.csr_matrix((np.ones(h.nnz), local, h.indptr), shape=(n, len(cols)))
        gram = np.asarray(structure @ outer).reshape(n, d + 1, d + 1)
        base = np.float64(self.global_mean_) + self.item_bias_[h.indices].astype(np.float64)
        resid = sp.csr_matrix(
            (h.data.astype(np.float64) - base, local, h.indptr), shape=(n, len(cols))
        )
        rhs = np.asarray(resid @ feats) - (gram[:, :, :d] @ implicit[:, :, None])[:, :, 0]
        counts = np.diff(h.indptr).astype(np.float64)
        ridge = (self._cfg.reg * counts + _FOLD_IN_EPS)[:, None, None] * np.eye(d + 1)
        solution = np.linalg.solve(gram + ridge, rhs[:, :, None])[:, :, 0]
        vectors = (solution[:, :d] + implicit).astype(np.float32)
        return vectors, solution[:, d].astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write the base artifact plus ``history.json`` (the per-epoch training curve)."""
        super().save(path)
        (Path(path) / _HISTORY_FILE).write_text(json.dumps(self.history_, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save`; ``history.json`` is optional."""
        model = super().load(path)
        hist = Path(path) / _HISTORY_FILE
        if hist.exists():
            try:
                history = json.loads(hist.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ArtifactError(f"{cls.__name__}: cannot read {hist}: {exc}") from exc
            if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
                raise ArtifactError(f"{cls.__name__}: {hist} is not a list of epoch records")
            model.history_ = history
        return model
