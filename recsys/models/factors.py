"""Latent-factor recommenders trained by ``implicit``: BPR and implicit-feedback ALS.

* :class:`BPR` — Bayesian Personalized Ranking, Rendle, Freudenthaler, Gantner and
  Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009.
* :class:`ALS` — weighted matrix factorisation by alternating least squares, Hu, Koren and
  Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008 (trained
  with the conjugate-gradient solver of Takács, Pilászy and Tikk, RecSys 2011).

Training runs in ``implicit`` (its CPU extension, or its CUDA classes when ``device`` asks
for them and ``implicit.gpu.HAS_CUDA`` is true). Only the learned factors are kept, as
plain ``float32`` arrays: inference, fold-in and save/load never touch an ``implicit``
object and never pickle one.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from pydantic import AliasChoices, Field
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from recsys.errors import ConfigError, DataError
from recsys.models import _exact
from recsys.models._ip_topk import NormOrder, exact_topk_inner_product, first_width
from recsys.models.base import (
    HistoryFoldIn,
    ModelConfig,
    _run_blocks,
    check_is_fitted,
    csr_rows,
)
from recsys.types import TrainingData

__all__ = ["ALS", "BPR", "ALSConfig", "BPRConfig", "FactorModel"]

logger = logging.getLogger(__name__)

_FOLD_IN_USERS = 512  # users per batch of the ALS fold-in solve ((512, d, d) float64)
_FOLD_IN_SCORES = 1 << 23  # user x item scores per chunk of the BPR fold-in (32 MiB float32)
# Catalogues from this size up rank by the norm-pruned top-k (recsys.models._ip_topk);
# below it one dense block per user costs about as little.
_PRUNE_MIN_ITEMS = 4096
_FOLD_IN_MEMO_ROWS = 64  # largest block of histories whose fold-in vectors are remembered
_FOLD_IN_MEMO_SIZE = 32  # blocks remembered per model
_FOLD_IN_MEMO_LOCK = threading.Lock()
_PRUNE_BLOCK_BYTES = 8 * 1024 * 1024  # first-stage scores per block of the pruned top-k


def resolve_device(device: str, owner: str) -> Literal["cpu", "cuda"]:
    """Map ``"auto"``/``"cpu"``/``"cuda"`` to the device ``implicit`` will train on.

    ``"auto"`` picks CUDA when implicit's GPU extension is usable
    (``implicit.gpu.HAS_CUDA``), else the CPU.

    Raises
    ------
    ConfigError
        ``"cuda"`` was asked for but implicit has no usable CUDA extension.
    """
    import implicit.gpu

    has_cuda = bool(implicit.gpu.HAS_CUDA)
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            f"{owner}: device='cuda' but implicit has no usable CUDA extension "
            "(implicit.gpu.HAS_CUDA is False); use device='cpu' or 'auto'"
        )
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    return "cuda" if device == "cuda" else "cpu"


class FactorConfig(ModelConfig):
    """Hyperparameters shared by the factor models.

    Attributes
    ----------
    embedding_dim
        Number of latent factors; ``factors`` is accepted as its other name (implicit's).
    reg
        L2 regularisation weight.
    epochs
        Training passes over the data (SGD epochs for BPR, ALS sweeps for ALS).
    device
        ``"auto"`` (CUDA when implicit's GPU extension is usable, else CPU), ``"cpu"`` or
        ``"cuda"``. Inference always runs on the CPU from the stored factors.
    num_threads
        CPU training threads; 0 uses every core (implicit's convention).
    """

    embedding_dim: int = Field(
        default=64, ge=1, validation_alias=AliasChoices("embedding_dim", "factors")
    )
    reg: float = Field(default=0.01, ge=0.0)
    epochs: int = Field(default=15, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(default=0, ge=0)


class FactorModel(HistoryFoldIn):
    """Base of the models whose score is the inner product ``user_factors_[u] @ item_factors_[i]``.

    Learned state: ``user_factors_`` ``(n_users, dim) float32`` and ``item_factors_``
    ``(n_items, dim) float32``. Known users are scored from their stored factors (not
    from their history, unlike other :class:`HistoryFoldIn` models); users with no
    training interaction get the popularity scores, as unknown users do. Fold-in
    computes a fresh user vector from a history row (:meth:`fold_in`) and scores it the
    same way.

    Stability: provisional
    """

    _state_fields: ClassVar[tuple[str, ...]] = ("user_factors_", "item_factors_")

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.user_factors_: NDArray[np.float32] | None = None
        self.item_factors_: NDArray[np.float32] | None = None

    # ------------------------------------------------------------------ protocol extras
    @property
    def user_factors(self) -> NDArray[np.float32]:
        """``(n_users, dim) float32`` user vectors (:class:`~recsys.protocols.EmbeddingModel`)."""
        check_is_fitted(self)
        assert self.user_factors_ is not None
        return self.user_factors_

    @property
    def item_factors(self) -> NDArray[np.float32]:
        """``(n_items, dim) float32`` item vectors; ``user_factors @ item_factors.T`` scores."""
        check_is_fitted(self)
        assert self.item_factors_ is not None
        return self.item_factors_

    def fold_in(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        """User vectors for the rows of a history matrix, with the item factors fixed.

        Parameters
        ----------
        histories : (n, n_items) sparse
            Interaction indicators; every stored entry counts as one interaction (values
            are ignored, as in training).

        Returns
        -------
        (n, dim) float32
            Vectors in the space of :attr:`user_factors`. An empty row carries no
            information: ALS gives the zero vector, BPR zeros plus its constant bias
            column (so items score their bias). ``recommend_for_history`` answers empty
            rows with the popularity list instead.

        Raises
        ------
        DataError
            If ``histories`` does not have ``n_items`` columns.
        """
        check_is_fitted(self)
        return self._folded(self._binary_histories(histories))

    # ------------------------------------------------------------------ ranking
    def recommend(
        self, user_idx: ArrayLike, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items per user; unknown users and users with no training interaction
        get the popularity list.

        On catalogues of at least 4,096 items the ranking skips the items whose norm
        proves they cannot reach a user's top ``k`` (:mod:`recsys.models._ip_topk`); the
        lists and scores are exactly those of scoring every item.
        """
        check_is_fitted(self)
        users = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
        order = self._pruning_order(k)
        if order is None:
            return super().recommend(users, k, exclude_seen=exclude_seen)
        assert self.user_factors_ is not None and self.user_items_ is not None
        user_factors, user_items = self.user_factors_, self.user_items_
        known = (users >= 0) & (users < self.n_users)
        eligible = known.copy()  # users with no training interaction score popularity
        eligible[known] = np.diff(user_items.indptr)[users[known]] > 0

        return self._pruned_topk(
            order,
            eligible,
            lambda rows: user_factors[users[rows]],
            lambda rows: csr_rows(user_items, users[rows]) if exclude_seen else None,
            lambda rows: super(FactorModel, self).recommend(
                users[rows], k, exclude_seen=exclude_seen
            ),
            k,
        )

    def recommend_for_history(
        self, histories: sp.csr_matrix, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` items for each row of a history matrix, from its fold-in vector.

        Empty rows get the popularity list. Ranked as :meth:`recommend` ranks (norm
        pruning on large catalogues, with exactly the dense answer).
        """
        check_is_fitted(self)
        order = self._pruning_order(k)
        h = self._binary_histories(histories) if order is not None else histories
        if order is None or h.shape[0] == 0:
            return super().recommend_for_history(histories, k, exclude_seen=exclude_seen)
        vectors = self._folded(h)
        return self._pruned_topk(
            order,
            np.diff(h.indptr) > 0,
            lambda rows: vectors[rows],
            lambda rows: h[rows] if exclude_seen else None,
            lambda rows: super(FactorModel, self).recommend_for_history(
                h[rows], k, exclude_seen=exclude_seen
            ),
            k,
        )

    def _pruning_order(self, k: int) -> NormOrder | None:
        """The items sorted by norm when pruning applies to top-``k``, else ``None``."""
        assert self.item_factors_ is not None
        factors = self.item_factors_
        if k < 1 or factors.dtype != np.float32 or self.n_items < max(_PRUNE_MIN_ITEMS, 16 * k):
            return None
        return self._derived("_norm_order", factors, lambda: NormOrder.build(factors))

    def _pruned_topk(
        self,
        order: NormOrder,
        eligible: NDArray[np.bool_],
        vectors_of: Callable[[NDArray[np.int64]], NDArray[np.float32]],
        seen_of: Callable[[NDArray[np.int64]], sp.csr_matrix | None],
        dense: Callable[[NDArray[np.int64]], tuple[NDArray[np.int64], NDArray[np.float32]]],
        k: int,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Pruned top-``k`` of the ``eligible`` rows in blocks on the shared pool; the
        other rows, and those where pruning does not pay, through ``dense``."""
        n = len(eligible)
        items = np.empty((n, k), np.int64)
        scores = np.empty((n, k), np.float32)
        done = np.zeros(n, bool)
        rows = np.flatnonzero(eligible)
        bs = max(64, _PRUNE_BLOCK_BYTES // (4 * first_width(self.n_items, k)))

        item_vectors, vmax = self._item_vectors()

        def block(start: int) -> None:
            r = rows[start : start + bs]
            it, sc, ok = exact_topk_inner_product(
                order, vectors_of(r), seen_of(r), k, item_vectors, vmax
            )
            items[r[ok]], scores[r[ok]] = it[ok], sc[ok]
            done[r[ok]] = True

        _run_blocks(block, range(0, len(rows), bs))
        rest = np.flatnonzero(~done)
        if len(rest):
            items[rest], scores[rest] = dense(rest)
        return items, scores

    # ------------------------------------------------------------------ internals
    def _binary_histories(self, histories: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
        if not sp.issparse(histories):
            raise DataError(
                f"{type(self).__name__}: histories must be a scipy sparse matrix of shape "
                f"(n, {self.n_items}), got {type(histories).__name__}"
            )
        n_items = self.n_items
        if histories.shape[1] != n_items:
            raise DataError(
                f"{type(self).__name__}: histories have {histories.shape[1]} columns, "
                f"the model has {n_items} items"
            )
        h = histories if isinstance(histories, sp.csr_matrix) else sp.csr_matrix(histories)
        if not h.has_canonical_format:  # duplicates or unsorted indices: normalise a copy
            h = h.copy()
            h.sum_duplicates()
        keep = h.data != 0
        if not keep.all():
            h = h.copy()
            h.data = keep.astype(np.float32)
            h.eliminate_zeros()
        # A new matrix of ones sharing the index arrays: cheap on the one-user path.
        return sp.csr_matrix(
            (np.ones(h.nnz, np.float32), h.indices, h.indptr), shape=h.shape, copy=False
        )

    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        assert self.user_items_ is not None
        cfg = self.config
        assert isinstance(cfg, FactorConfig)
        device = resolve_device(cfg.device, type(self).__name__)
        start = time.perf_counter()
        # implicit parallelises over users itself; a BLAS pool on top oversubscribes the
        # cores (implicit warns about exactly this), so BLAS runs single-threaded here.
        with threadpool_limits(1, "blas"):
            user_factors, item_factors = self._train(self.user_items_, device, show_progress)
        self.user_factors_ = np.ascontiguousarray(user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)
        self._after_fit()
        logger.debug(
            "trained model=%s device=%s dim=%d elapsed=%.3fs",
            self.name,
            device,
            self.item_factors_.shape[1],
            time.perf_counter() - start,
        )

    #: The implicit estimator: module under ``implicit.cpu``/``implicit.gpu`` and class.
    _implicit_class: ClassVar[tuple[str, str]]

    @abstractmethod
    def _implicit_params(self) -> dict[str, Any]:
        """The estimator's hyperparameters, shared by its CPU and CUDA classes."""

    def _train(
        self, user_items: sp.csr_matrix, device: str, show_progress: bool
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Run implicit on the binary ``(n_users, n_items)`` matrix; return both factor arrays.

        CUDA training copies the factors back to the CPU; CPU training uses
        ``num_threads`` threads. ``show_progress`` shows recsys's own bar over the
        iterations; implicit's own bar (with its training metrics) replaces it only while
        the ``implicit`` logger is enabled for INFO, i.e. when the application asked for
        third-party output (``recsys -v``), as its other messages are (#14).
        """
        cfg = self.config
        assert isinstance(cfg, FactorConfig)
        module_name, class_name = self._implicit_class
        params = {**self._implicit_params(), "random_state": cfg.seed}
        if device != "cuda":
            params["num_threads"] = cfg.num_threads
        backend = "gpu" if device == "cuda" else "cpu"
        module = importlib.import_module(f"implicit.{backend}.{module_name}")
        model: Any = getattr(module, class_name)(**params)
        verbose = show_progress and logging.getLogger("implicit").isEnabledFor(logging.INFO)
        with tqdm(
            total=int(model.iterations), desc=self.name, disable=not show_progress or verbose
        ) as bar:
            model.fit(user_items, show_progress=verbose, callback=lambda *_: bar.update())
        if device == "cuda":
            model = model.to_cpu()
        return model.user_factors, model.item_factors

    def _after_fit(self) -> None:
        """Hook for caches derived from the factors."""

    @abstractmethod
    def _fold_in(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        """``(n, dim) float32`` user vectors for binary, sorted history rows."""

    def _folded(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        """:meth:`_fold_in`, remembered for the last few small blocks of histories.

        One request folds the same history in several times (the retrieval source, then
        the ranker's component score); the vectors are a deterministic function of the
        history and the item factors, so a remembered answer is the same bits. Only small
        blocks (a request's, a micro-batch's) are kept, keyed by their exact content.
        """
        if histories.shape[0] > _FOLD_IN_MEMO_ROWS:
            return self._fold_in(histories)
        key = (
            id(self.item_factors_),
            histories.shape,
            histories.indptr.tobytes(),
            np.asarray(histories.indices, np.int64).tobytes(),
        )
        memo: OrderedDict[Any, NDArray[np.float32]] = self.__dict__.setdefault(
            "_fold_in_memo", OrderedDict()
        )
        with _FOLD_IN_MEMO_LOCK:
            hit = memo.get(key)
            if hit is not None:
                memo.move_to_end(key)
                return hit.copy()
        vectors = self._fold_in(histories)
        with _FOLD_IN_MEMO_LOCK:
            memo[key] = vectors.copy()
            while len(memo) > _FOLD_IN_MEMO_SIZE:
                memo.popitem(last=False)
        return vectors

    def _score_users(self, user_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        assert self.user_factors_ is not None and self.item_factors_ is not None
        assert self.user_items_ is not None and self.item_popularity_ is not None
        scores = np.asarray(self.user_factors_[user_idx] @ self.item_factors_.T, np.float32)
        empty = np.diff(self.user_items_.indptr)[user_idx] == 0
        if empty.any():  # nothing was learned for them: the cold-start answer
            scores[empty] = self.item_popularity_
        return scores

    def _score_users_into(
        self, user_idx: NDArray[np.int64], out: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        # the same BLAS product as _score_users, written into the caller's reused block
        assert self.user_factors_ is not None and self.item_factors_ is not None
        assert self.user_items_ is not None and self.item_popularity_ is not None
        if self.user_factors_.dtype != np.float32 or self.item_factors_.dtype != np.float32:
            return self._score_users(user_idx)
        np.matmul(self.user_factors_[user_idx], self.item_factors_.T, out=out)
        empty = np.diff(self.user_items_.indptr)[user_idx] == 0
        if empty.any():  # nothing was learned for them: the cold-start answer
            out[empty] = self.item_popularity_
        return out

    def _score_history(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        return self._score_queries(self._folded(self._binary_histories(histories)))

    # canonical scores (recsys.models._exact): the query of a user is its factor row
    def _user_queries(
        self, user_idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
        assert self.user_factors_ is not None and self.user_items_ is not None
        inner = np.diff(self.user_items_.indptr)[user_idx] > 0  # others: popularity
        return inner, np.asarray(self.user_factors_[user_idx[inner]], np.float32)

    def _item_vectors(self) -> tuple[NDArray[np.float32], float]:
        assert self.item_factors_ is not None
        return self._vectors_and_norm(self.item_factors_)

    def _history_queries(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        return self._folded(self._binary_histories(histories))


# ============================================================================ BPR
def _mix64(x: NDArray[np.uint64] | np.uint64) -> NDArray[np.uint64]:
    """SplitMix64 finaliser: a bijective scramble of 64-bit keys (wrapping arithmetic)."""
    with np.errstate(over="ignore"):  # the wrap-around is the point
        z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return np.asarray(z ^ (z >> np.uint64(31)), dtype=np.uint64)


def _uniform(keys: NDArray[np.uint64]) -> NDArray[np.float64]:
    """Uniform ``[0, 1)`` doubles from the top 53 bits of scrambled keys."""
    return (_mix64(keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class BPRConfig(FactorConfig):
    """Hyperparameters of :class:`BPR`.

    Defaults (64 factors, learning rate 0.01, reg 0.01, 100 epochs) are the best
    64-factor configuration of :func:`recsys.tuning.tune` on a validation split of the
    ML-100K training data (``benchmarks/topn_classical.py``); 128 factors scored 0.002
    NDCG@10 higher there at twice the cost, and the project fixes 64 as the default.

    Attributes
    ----------
    learning_rate
        SGD step size.
    epochs
        SGD epochs; each epoch draws as many (user, positive, negative) triples as there
        are interactions.
    verify_negative_samples
        Re-check that a sampled negative item is not one of the user's positives.
    fold_in_epochs
        Passes of the fold-in optimisation of a new user's vector (see :meth:`BPR.fold_in`).
    """

    learning_rate: float = Field(default=0.01, gt=0.0)
    reg: float = Field(default=0.01, ge=0.0)
    epochs: int = Field(default=100, ge=1)
    verify_negative_samples: bool = True
    fold_in_epochs: int = Field(default=50, ge=1)


class BPR(FactorModel):
    """Bayesian Personalized Ranking matrix factorisation (Rendle et al., UAI 2009).

    Trained by ``implicit``'s BPR-Opt SGD with popularity-sampled negatives. implicit
    appends an item-bias column: ``item_factors_`` is ``(n_items, embedding_dim + 1)``
    with the bias last, and ``user_factors_`` has a constant 1 in that column, so the
    inner product of the two is exactly the model's score (what FAISS needs).

    Fold-in (:meth:`fold_in`, :meth:`recommend_for_history`) optimises the same BPR
    objective for the new user's vector alone, item factors fixed: starting from zero,
    each of ``fold_in_epochs`` passes pairs every positive item of the row with a
    negative drawn from the training popularity distribution (the distribution training
    samples from) and takes one gradient-ascent step of size ``learning_rate`` on the sum
    of the per-triple gradients, with ``reg`` applied per triple as in training. The draws
    are a deterministic function of ``seed``, the pass and the user's own items, so the
    result for a history never depends on the rest of the batch. Cost per pass: one
    ``(n, n_items)`` score product and two sparse ``(n, n_items) x (n_items, dim)``
    products, vectorised over the batch.

    With ``num_threads != 1`` training is Hogwild! SGD and not bit-reproducible; set
    ``num_threads=1`` for identical factors from identical seeds.

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> model = BPR(embedding_dim=8, epochs=20, num_threads=1).fit(
    ...     block_dataset(), show_progress=False)
    >>> model.item_factors.shape
    (24, 9)
    """

    name: ClassVar[str] = "bpr"
    Config: ClassVar[type[ModelConfig]] = BPRConfig

    _implicit_class: ClassVar[tuple[str, str]] = ("bpr", "BayesianPersonalizedRanking")

    def _implicit_params(self) -> dict[str, Any]:
        cfg = self.config
        assert isinstance(cfg, BPRConfig)
        return {
            "factors": cfg.embedding_dim,
            "learning_rate": cfg.learning_rate,
            "regularization": cfg.reg,
            "iterations": cfg.epochs,
            "verify_negative_samples": cfg.verify_negative_samples,
        }

    def _fold_in(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        assert self.item_factors_ is not None
        n, n_items = histories.shape
        vectors = np.zeros((n, self.item_factors_.shape[1]), np.float32)
        chunk = max(1, _FOLD_IN_SCORES // max(1, n_items))
        for start in range(0, n, chunk):
            rows = histories[start : start + chunk]
            vectors[start : start + rows.shape[0]] = self._fold_in_chunk(rows)
        return vectors

    def _fold_in_chunk(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        """BPR-Opt gradient ascent for a chunk of users, item factors fixed."""
        cfg = self.config
        assert isinstance(cfg, BPRConfig)
        assert self.item_factors_ is not None and self.user_items_ is not None
        items = self.item_factors_
        n, n_items = histories.shape
        vectors = np.zeros((n, items.shape[1]), np.float32)
        vectors[:, -1] = 1.0  # the bias column is a constant 1, as in training
        nnz = histories.nnz
        if nnz == 0:
            return vectors
        indptr = histories.indptr
        counts = np.diff(indptr)
        rows = np.repeat(np.arange(n), counts)
        positives = histories.indices.astype(np.int64)
        seen = np.zeros((n, n_items), np.bool_)
        seen[rows, positives] = True
        # Negatives are drawn as training drew them: a uniformly chosen training
        # interaction's item, i.e. by popularity. The draws are counter-based, keyed by
        # (seed, pass, position in the row, item), so a user's vector depends on their
        # own history only, never on the rest of the batch.
        pool = self.user_items_.indices
        slot = (np.arange(nnz) - indptr[rows]).astype(np.uint64)
        draw_keys = _mix64(
            (positives.astype(np.uint64) << np.uint64(32)) ^ slot ^ _mix64(np.uint64(cfg.seed))
        )
        lr, reg = np.float32(cfg.learning_rate), np.float32(cfg.reg)
        decay = (lr * reg * counts).astype(np.float32)[:, None]  # reg once per triple
        # Two sparse (n, n_items) matrices with one entry per triple: the gradient of every
        # user is (toward - away) @ item_factors. Built once; each pass swaps their arrays.
        toward = sp.csr_matrix((np.ones(nnz, np.float32), positives, indptr), (n, n_items))
        away = sp.csr_matrix((np.ones(nnz, np.float32), positives, indptr), (n, n_items))
        for epoch in range(cfg.fold_in_epochs):
            uniform = _uniform(draw_keys ^ _mix64(np.uint64(epoch + 1)))
            negatives = pool[np.minimum((uniform * len(pool)).astype(np.int64), len(pool) - 1)]
            # canonical pair scores: a user's vector depends on its own row only, bit for
            # bit, whatever the batch or the BLAS kernel (#14)
            user_rows = vectors[rows]
            x_uij = _exact.canonical_pairs(user_rows, items[positives]) - _exact.canonical_pairs(
                user_rows, items[negatives]
            )
            # d ln sigmoid(x_uij) / d x_uij = sigmoid(-x_uij)
            weight = (1.0 / (1.0 + np.exp(np.clip(x_uij, -30.0, 30.0)))).astype(np.float32)
            if cfg.verify_negative_samples:  # a negative the user has seen is no negative
                weight[seen[rows, negatives]] = 0.0
            toward.data = weight
            away.data = weight
            away.indices = negatives.astype(away.indices.dtype)  # unsorted, may repeat
            away.has_sorted_indices = False
            gradient = np.asarray(toward @ items, np.float32) - np.asarray(away @ items)
            vectors += lr * gradient - decay * vectors
            vectors[:, -1] = 1.0
        return vectors


# ============================================================================ ALS
class ALSConfig(FactorConfig):
    """Hyperparameters of :class:`ALS`.

    Defaults (64 factors, alpha 1, reg 10, 15 epochs) come from :func:`recsys.tuning.tune`
    on a validation split of the ML-100K training data (``benchmarks/topn_classical.py``):
    the best 64-factor configuration of the grid; 128 factors scored 0.001 NDCG@10 higher
    at three times the cost.

    Attributes
    ----------
    alpha
        Confidence of an observed interaction, ``c_ui = alpha`` (unobserved pairs have
        confidence 1 and preference 0). This is implicit's convention; the paper's
        ``c_ui = 1 + alpha' r_ui`` on binary data is ``alpha = 1 + alpha'``.
    epochs
        ALS sweeps (users then items).
    """

    alpha: float = Field(default=1.0, gt=0.0)
    reg: float = Field(default=10.0, ge=0.0)
    epochs: int = Field(default=15, ge=1)


class ALS(FactorModel):
    """Implicit-feedback matrix factorisation by alternating least squares (Hu et al. 2008).

    Minimises ``sum_ui c_ui (p_ui - x_u . y_i)^2 + reg (|x_u|^2 + |y_i|^2)`` with
    ``p_ui = 1`` for observed pairs and ``c_ui = alpha`` there, 1 elsewhere, trained by
    ``implicit`` (conjugate-gradient sweeps). ``user_factors_`` is
    ``(n_users, embedding_dim)`` and ``item_factors_`` ``(n_items, embedding_dim)``,
    both ``float32``.

    Fold-in is the exact least-squares solve of the paper (eq. 4) for a user given the
    item factors ``Y``::

        x_u = (Y^T Y + (alpha - 1) Y_u^T Y_u + reg I)^-1  alpha Y_u^T 1

    where ``Y_u`` are the rows of the user's items. ``Y^T Y`` is cached, so one user
    costs one ``(n_u, dim)`` Gram product and one ``dim x dim`` solve; batches are
    solved as stacked systems. Training's conjugate-gradient sweeps are inexact, so a
    training user's fold-in vector is close to, not equal to, its stored one.

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> model = ALS(embedding_dim=8, num_threads=1).fit(block_dataset(), show_progress=False)
    >>> model.user_factors.shape
    (30, 8)
    """

    name: ClassVar[str] = "als"
    Config: ClassVar[type[ModelConfig]] = ALSConfig

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._gram: NDArray[np.float64] | None = None  # Y^T Y + reg I, from item_factors_
        self._gram_of: int | None = None  # id of the item_factors_ array it was built from
        self._items64: NDArray[np.float64] | None = None
        self._gram_factor: tuple[NDArray[np.float64], bool] | None = None

    _implicit_class: ClassVar[tuple[str, str]] = ("als", "AlternatingLeastSquares")

    def _implicit_params(self) -> dict[str, Any]:
        cfg = self.config
        assert isinstance(cfg, ALSConfig)
        return {
            "factors": cfg.embedding_dim,
            "regularization": cfg.reg,
            "alpha": cfg.alpha,
            "iterations": cfg.epochs,
        }

    def _after_fit(self) -> None:
        self._gram = None

    def _solver_parts(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(Y^T Y + reg I, Y)`` in float64, cached per item-factor array."""
        assert self.item_factors_ is not None
        cfg = self.config
        assert isinstance(cfg, ALSConfig)
        if self._gram is None or self._gram_of != id(self.item_factors_):
            items64 = self.item_factors_.astype(np.float64)
            gram = items64.T @ items64
            gram[np.diag_indices_from(gram)] += cfg.reg
            self._gram, self._items64, self._gram_of = gram, items64, id(self.item_factors_)
            self._gram_factor = scipy.linalg.cho_factor(gram) if cfg.alpha == 1.0 else None
        assert self._items64 is not None
        return self._gram, self._items64

    def _inverse(self, dim: int) -> NDArray[np.float64]:
        """``(Y^T Y + reg I)^-1`` from the cached Cholesky factor (``alpha == 1``)."""
        assert self._gram_factor is not None
        return np.ascontiguousarray(scipy.linalg.cho_solve(self._gram_factor, np.eye(dim)))

    def _fold_in(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        cfg = self.config
        assert isinstance(cfg, ALSConfig)
        gram, items = self._solver_parts()
        n, dim = histories.shape[0], items.shape[1]
        # right-hand side: alpha * Y_u^T 1 (the preference p_ui is 1 on observed pairs)
        rhs = np.asarray(histories @ items, np.float64) * cfg.alpha
        out = np.zeros((n, dim), np.float32)
        if cfg.alpha == 1.0:  # every user shares the same system matrix: its inverse
            # x = rhs @ G^-1 summed in a fixed order, element-wise: a LAPACK solve with many
            # right-hand sides rounds a row differently depending on the others (#14)
            inverse = self._derived("_gram_inverse", gram, lambda: self._inverse(dim))
            acc = np.zeros((n, dim), np.float64)
            for j in range(dim):
                acc += rhs[:, j, None] * inverse[j][None, :]
            out[:] = acc
            return out
        extra = cfg.alpha - 1.0
        indptr, indices = histories.indptr, histories.indices
        for start in range(0, n, _FOLD_IN_USERS):
            stop = min(start + _FOLD_IN_USERS, n)
            systems = np.broadcast_to(gram, (stop - start, dim, dim)).copy()
            for row in range(start, stop):
                rows_u = items[indices[indptr[row] : indptr[row + 1]]]
                systems[row - start] += extra * (rows_u.T @ rows_u)
            out[start:stop] = np.linalg.solve(systems, rhs[start:stop, :, None])[:, :, 0]
        return out
