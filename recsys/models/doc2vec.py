"""Content models: item vectors learned from item documents (Doc2Vec) or from behaviour
sequences (item2vec), and users as the profile of the items they interacted with.

* :class:`Doc2VecRetriever` — paragraph vectors, Le and Mikolov, "Distributed
  Representations of Sentences and Documents", ICML 2014: PV-DBOW (``dm=False``) and PV-DM
  (``dm=True``) over each item's document of the feature store (title and text words,
  ``genre:<g>``, knowledge-graph ``<relation>:<entity>`` tokens; see
  :mod:`recsys.features.documents`).
* :class:`Item2Vec` — Barkan and Koenigstein, "Item2Vec: Neural Item Embedding for
  Collaborative Filtering", MLSP 2016: skip-gram with negative sampling over every user's
  items in time order.

Both train with ``gensim`` and keep only plain ``float32`` arrays: inference, fold-in and
save/load never touch a gensim object, so nothing is ever pickled. Doc2Vec's inference of
new documents (cold-start items, :meth:`Doc2VecRetriever.infer_item_vectors`) is
implemented here against the saved output weights (see that method).

Scores are cosines: ``item_factors`` are the item vectors, centred on their mean (Mu and
Viswanath, "All-but-the-Top", ICLR 2018) and unit-normalised; a user's ``user_factors``
row is the unit-normalised (optionally rating or recency weighted) mean of the item
factors of their items; a score is the inner product of the two.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from recsys.errors import DataError, format_examples
from recsys.features.documents import build_item_documents
from recsys.models import _exact
from recsys.models.base import HistoryFoldIn, ModelConfig, check_is_fitted
from recsys.models.factors import _mix64, _uniform
from recsys.types import IdMap, TrainingData

__all__ = [
    "Doc2VecConfig",
    "Doc2VecRetriever",
    "Item2Vec",
    "Item2VecConfig",
    "ItemVectorModel",
]

logger = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86_400.0
_INFER_BLOCK = 4096  # documents inferred together (a (block, 1 + negative, dim) gather)


# ============================================================================ configs
class _ItemVectorConfig(ModelConfig):
    """Hyperparameters shared by the gensim-trained item-vector models.

    Attributes
    ----------
    embedding_dim
        Dimension of the item vectors.
    window
        Context window (tokens, or items for item2vec) on each side of the target.
    min_count
        Tokens (items) seen fewer times in the training corpus are dropped.
    epochs
        Training passes over the corpus.
    learning_rate, min_learning_rate
        SGD step size, decayed linearly from the first to the second over training.
    negative
        Negative samples per positive (negative sampling; hierarchical softmax is not used).
    ns_exponent
        Exponent of the frequency distribution negatives are drawn from (0.75 in
        word2vec).
    sample
        Down-sampling threshold of frequent tokens (word2vec's ``sample``); 0 keeps every
        token.
    num_threads
        gensim worker threads. Only ``1`` gives identical vectors from identical seeds;
        more threads train faster but not reproducibly.
    rating_weight
        Weight each item of a training user's profile by its rating (repeated
        interactions with an item count once, with their strongest weight). Needs
        ratings, all non-negative.
    recency_half_life_days
        Weight each item of a training user's profile by ``0.5 ** (age / half_life)``,
        where ``age`` is the time between the interaction and the user's latest one.
        Needs timestamps. ``None`` (the default) weighs every item alike.
    center
        Subtract the mean item vector before normalising. Vectors trained by negative
        sampling share one dominant direction (every document predicts the frequent
        tokens), which makes all cosines nearly 1; removing it (the first step of Mu and
        Viswanath, "All-but-the-Top", ICLR 2018) leaves the item-specific parts.
    """

    embedding_dim: int = Field(default=64, ge=1)
    window: int = Field(default=5, ge=1)
    min_count: int = Field(default=2, ge=1)
    epochs: int = Field(default=20, ge=1)
    learning_rate: float = Field(default=0.025, gt=0.0)
    min_learning_rate: float = Field(default=0.0001, ge=0.0)
    negative: int = Field(default=5, ge=1)
    ns_exponent: float = 0.75
    sample: float = Field(default=1e-3, ge=0.0, lt=1.0)
    num_threads: int = Field(default=1, ge=1)
    rating_weight: bool = False
    recency_half_life_days: float | None = Field(default=None, gt=0.0)
    center: bool = True

    @model_validator(mode="after")
    def _decaying_learning_rate(self) -> _ItemVectorConfig:
        if self.min_learning_rate > self.learning_rate:
            raise ValueError(
                f"min_learning_rate={self.min_learning_rate} exceeds "
                f"learning_rate={self.learning_rate}; the step size only decays"
            )
        return self


class Doc2VecConfig(_ItemVectorConfig):
    """Hyperparameters of :class:`Doc2VecRetriever`; see :class:`_ItemVectorConfig` too.

    ``epochs`` defaults to 50: a catalogue is a small corpus (ML-100K: 1,682 documents of
    about 50 tokens), and on a validation split of the ML-100K training data 20 epochs
    left the vectors nearly parallel (NDCG@10 0.010) while 50 and 100 scored alike
    (0.029, 0.030).

    Attributes
    ----------
    dm
        ``False`` (default): PV-DBOW, the document vector alone predicts each of its
        tokens. ``True``: PV-DM, the mean of the document vector and the context tokens'
        vectors predicts the centre token.
    dbow_words
        PV-DBOW only: also train token vectors (skip-gram) in the same space.
    infer_epochs
        Passes of the inference of a new document's vector; ``None`` uses ``epochs``.
    """

    epochs: int = Field(default=50, ge=1)
    dm: bool = False
    dbow_words: bool = False
    infer_epochs: int | None = Field(default=None, ge=1)


class Item2VecConfig(_ItemVectorConfig):
    """Hyperparameters of :class:`Item2Vec`; see :class:`_ItemVectorConfig`.

    ``min_count`` defaults to 1 here: an item with a single interaction still gets a
    vector from its neighbours in that user's sequence. ``window`` defaults to 50, close
    to the paper's whole-history context: on a validation split of the ML-100K training
    data (10 epochs) windows of 5, 20 and 50 scored NDCG@10 0.051, 0.027 and 0.063, and
    50 with 20 epochs 0.127.
    """

    min_count: int = Field(default=1, ge=1)
    window: int = Field(default=50, ge=1)


# ============================================================================ shared base
class ItemVectorModel(HistoryFoldIn):
    """Base of the models that score by the cosine of a user profile and item vectors.

    Learned state: ``item_factors_`` ``(n_items, embedding_dim) float32``, the unit item
    vectors (zero rows for items without a vector: no document, or a document or
    history below ``min_count``), after subtracting ``vector_mean_`` ``(embedding_dim,)
    float32`` (the mean raw item vector with ``center=True``, else zeros), and
    ``user_factors_`` ``(n_users, embedding_dim) float32``, each training user's unit
    profile: the normalised weighted sum of the item
    factors of their items (weights per :class:`_ItemVectorConfig`). A score is
    ``user_factors_[u] @ item_factors_[i]``, a cosine in ``[-1, 1]``; items without a
    vector score 0. Users with a zero profile get the popularity scores.

    Fold-in (:meth:`recommend_for_history`) builds the profile of each history row the
    same way, reading the row's stored values as the item weights: a binary row gives the
    plain mean, so a training user's own binary history reproduces the fitted
    recommendations exactly under the default (unweighted) profile.

    Subclasses implement :meth:`_train_item_vectors`.

    Stability: provisional
    """

    _state_fields: ClassVar[tuple[str, ...]] = ("item_factors_", "user_factors_", "vector_mean_")

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.item_factors_: NDArray[np.float32] | None = None
        self.user_factors_: NDArray[np.float32] | None = None
        self.vector_mean_: NDArray[np.float32] | None = None

    # ------------------------------------------------------------------ protocol extras
    @property
    def user_factors(self) -> NDArray[np.float32]:
        """``(n_users, embedding_dim) float32`` unit user profiles (zero rows: no profile)."""
        check_is_fitted(self)
        assert self.user_factors_ is not None
        return self.user_factors_

    @property
    def item_factors(self) -> NDArray[np.float32]:
        """``(n_items, embedding_dim) float32`` unit item vectors (zero rows: no vector)."""
        check_is_fitted(self)
        assert self.item_factors_ is not None
        return self.item_factors_

    def profiles(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        """Content profiles of the rows of a history matrix.

        Parameters
        ----------
        histories : (n, n_items) sparse
            Stored values are the items' weights (ones for a plain mean).

        Returns
        -------
        (n, embedding_dim) float32
            Unit rows in the space of :attr:`user_factors`; zero rows for empty histories
            or histories of items without vectors.

        Raises
        ------
        DataError
            If ``histories`` is not sparse or does not have ``n_items`` columns.
        """
        check_is_fitted(self)
        return self._profiles(self._check_histories(histories))

    def similar_items(
        self, item_idx: NDArray[np.int64] | Sequence[int] | int, k: int = 10
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The ``k`` items of highest cosine with each item (never the item itself).

        Items without a vector are neither queries nor answers: their rows, like those of
        indices outside the vocabulary, are all ``-1`` padding.
        """
        check_is_fitted(self)
        assert self.item_factors_ is not None
        idx = np.atleast_1d(np.asarray(item_idx, dtype=np.int64))
        has_vector: NDArray[np.bool_] = np.any(self.item_factors_, axis=1)
        ok = (idx >= 0) & (idx < self.n_items)
        ok[ok] &= has_vector[idx[ok]]
        items = np.full((len(idx), k), -1, np.int64)
        scores = np.full((len(idx), k), np.nan, np.float32)
        if ok.any():
            queries = self.item_factors_[idx[ok]]
            sims = queries @ self.item_factors_.T
            sims[:, ~has_vector] = -np.inf
            sims[np.arange(len(sims)), idx[ok]] = -np.inf
            vectors, vmax = self._item_vectors()  # canonical cosines (recsys.models._exact)
            items[ok], scores[ok] = _exact.rescore_topk(
                sims, queries, vectors, k, max_item_norm=vmax
            )
        return items, scores

    # ------------------------------------------------------------------ training
    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        cfg = self.config
        assert isinstance(cfg, _ItemVectorConfig)
        vectors = self._train_item_vectors(data, show_progress=show_progress)
        has_vector = vectors.any(axis=1)
        mean = np.zeros(vectors.shape[1], np.float32)
        if cfg.center and has_vector.any():
            mean = vectors[has_vector].mean(axis=0, dtype=np.float64).astype(np.float32)
        self.vector_mean_ = mean
        self.item_factors_ = self._item_factors_of(vectors)
        self.user_factors_ = self._profiles(self._profile_weights(data))

    def _item_factors_of(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """Unit item factors of raw vectors: centred by ``vector_mean_``; zero rows stay zero."""
        assert self.vector_mean_ is not None
        has_vector = vectors.any(axis=1)
        centred = np.zeros_like(vectors)
        centred[has_vector] = vectors[has_vector] - self.vector_mean_
        return _unit_rows(centred)

    @abstractmethod
    def _train_item_vectors(
        self, data: TrainingData, *, show_progress: bool
    ) -> NDArray[np.float32]:
        """Raw ``(n_items, embedding_dim) float32`` item vectors; zero rows for none."""

    def _profile_weights(self, data: TrainingData) -> sp.csr_matrix:
        """``(n_users, n_items) float32`` CSR weights of the training users' items."""
        cfg = self.config
        assert isinstance(cfg, _ItemVectorConfig)
        owner = type(self).__name__
        if not cfg.rating_weight and cfg.recency_half_life_days is None:
            return data.user_items
        weight = np.ones(data.n_interactions, np.float64)
        if cfg.rating_weight:
            if data.rating is None:
                raise DataError(
                    f"{owner}: rating_weight=True needs explicit ratings, but the training data "
                    "has none (no 'rating' column, or some ratings are missing); set "
                    "rating_weight=False"
                )
            if (data.rating < 0).any():
                raise DataError(
                    f"{owner}: rating_weight=True needs non-negative ratings, got a minimum of "
                    f"{float(data.rating.min())}; shift the ratings or set rating_weight=False"
                )
            weight *= data.rating
        if cfg.recency_half_life_days is not None:
            if data.timestamp is None:
                raise DataError(
                    f"{owner}: recency_half_life_days needs timestamps, but the training data "
                    "has none; set recency_half_life_days=None"
                )
            latest = np.full(data.n_users, np.iinfo(np.int64).min, np.int64)
            np.maximum.at(latest, data.user_idx, data.timestamp)
            age_days = (latest[data.user_idx] - data.timestamp) / _SECONDS_PER_DAY
            weight *= np.exp2(-age_days / cfg.recency_half_life_days)
        # A repeated (user, item) pair counts once, with its strongest weight.
        key = data.user_idx * data.n_items + data.item_idx
        order = np.lexsort((weight, key))
        last = np.ones(len(order), np.bool_)
        last[:-1] = key[order][1:] != key[order][:-1]
        pick = order[last]
        m = sp.csr_matrix(
            (weight[pick].astype(np.float32), (data.user_idx[pick], data.item_idx[pick])),
            shape=(data.n_users, data.n_items),
        )
        m.sort_indices()
        return m

    # ------------------------------------------------------------------ scoring
    def _check_histories(self, histories: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
        if not sp.issparse(histories):
            raise DataError(
                f"{type(self).__name__}: histories must be a scipy sparse matrix of shape "
                f"(n, {self.n_items}), got {type(histories).__name__}"
            )
        if histories.shape[1] != self.n_items:
            raise DataError(
                f"{type(self).__name__}: histories have {histories.shape[1]} columns, "
                f"the model has {self.n_items} items"
            )
        return sp.csr_matrix(histories, dtype=np.float32)

    def _profiles(self, weights: sp.csr_matrix) -> NDArray[np.float32]:
        assert self.item_factors_ is not None
        return _unit_rows(np.asarray(weights @ self.item_factors_, np.float32))

    def _scores(self, profiles: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self.item_factors_ is not None and self.item_popularity_ is not None
        scores = np.asarray(profiles @ self.item_factors_.T, np.float32)
        empty = ~profiles.any(axis=1)
        if empty.any():  # no content to compare with: the cold-start answer
            scores[empty] = self.item_popularity_
        return scores

    def _score_users(self, user_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        assert self.user_factors_ is not None
        return self._scores(self.user_factors_[user_idx])

    def _score_history(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        return self._scores(self._profiles(self._check_histories(histories)))

    # canonical scores (recsys.models._exact): the query of a user is its unit profile
    def _user_queries(
        self, user_idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
        assert self.user_factors_ is not None
        profiles = self.user_factors_[user_idx]
        inner = np.asarray(profiles.any(axis=1), bool)  # a zero profile gets the popularity scores
        return inner, profiles[inner]

    def _item_vectors(self) -> tuple[NDArray[np.float32], float]:
        assert self.item_factors_ is not None
        return self._vectors_and_norm(self.item_factors_)

    def _history_queries(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        return self._profiles(self._check_histories(histories))

    def _queries_scored(self, queries: NDArray[np.float32]) -> NDArray[np.bool_]:
        return np.asarray(queries.any(axis=1), bool)

    def _score_queries(self, queries: NDArray[np.float32]) -> NDArray[np.float32]:
        return self._scores(queries)


def _unit_rows(vectors: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm, in float32; all-zero rows stay zero."""
    out = np.asarray(vectors, np.float32).copy()
    norms = np.linalg.norm(out, axis=1)
    nonzero = norms > 0
    out[nonzero] /= norms[nonzero, None]
    return out


class _EpochProgress:
    """A gensim callback that advances a tqdm bar once per training epoch."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def on_epoch_begin(self, model: Any) -> None:
        return None

    def on_epoch_end(self, model: Any) -> None:
        self.bar.update(1)

    def on_train_begin(self, model: Any) -> None:
        return None

    def on_train_end(self, model: Any) -> None:
        return None


# ============================================================================ Doc2Vec
class Doc2VecRetriever(ItemVectorModel):
    """Paragraph vectors of item documents as a content retriever (Le and Mikolov, 2014).

    Every item's document (its token list, see :mod:`recsys.features.documents`) is one
    paragraph; gensim learns one vector per paragraph with PV-DBOW (default) or PV-DM
    (``dm=True``), negative sampling, ``num_threads`` workers (1 for reproducibility).
    Items of the catalogue without interactions are trained too, so the model can
    recommend items nobody has interacted with yet.

    Documents: :meth:`fit` takes the feature store's ``item_documents`` view as
    ``documents=`` (which includes knowledge-graph relations); without it, the documents
    are built from ``data.items`` (title, genres, text) by the feature store's own
    :func:`~recsys.features.documents.build_item_documents`.

    Learned state, besides that of :class:`ItemVectorModel`:

    * ``vocabulary_`` ``(n_tokens,) str``: the tokens kept (``min_count``), most frequent
      first;
    * ``token_counts_`` ``(n_tokens,) int64``: their corpus counts;
    * ``output_weights_`` ``(n_tokens, embedding_dim) float32``: the output layer of
      negative sampling (gensim's ``syn1neg``);
    * ``token_vectors_`` ``(n_tokens, embedding_dim) float32``: input token vectors, used
      by PV-DM inference (``(0, embedding_dim)`` for PV-DBOW, which does not need them).

    These let :meth:`infer_item_vectors` place new documents in the item space, and
    :meth:`add_items` append cold-start items to the model.

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> model = Doc2VecRetriever(embedding_dim=8, min_count=1, epochs=5).fit(
    ...     block_dataset(), show_progress=False)
    >>> model.item_factors.shape
    (24, 8)
    """

    name: ClassVar[str] = "doc2vec"
    Config: ClassVar[type[ModelConfig]] = Doc2VecConfig
    _state_fields: ClassVar[tuple[str, ...]] = (
        *ItemVectorModel._state_fields,
        "vocabulary_",
        "token_counts_",
        "output_weights_",
        "token_vectors_",
    )

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.vocabulary_: NDArray[np.str_] | None = None
        self.token_counts_: NDArray[np.int64] | None = None
        self.output_weights_: NDArray[np.float32] | None = None
        self.token_vectors_: NDArray[np.float32] | None = None
        self._documents: pd.DataFrame | None = None
        self._token_index: dict[str, int] | None = None
        self._token_index_of: int | None = None  # id() of the vocabulary it was built from

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        data: TrainingData,
        *,
        documents: pd.DataFrame | None = None,
        show_progress: bool = True,
    ) -> Self:
        """Learn item vectors from documents and user profiles from ``data``.

        Parameters
        ----------
        data
            The training view. Its ``items`` frame supplies the documents when
            ``documents`` is not given.
        documents
            ``item_id`` and ``tokens`` (a list of strings per item), e.g.
            :meth:`recsys.features.FeatureStore.item_documents`. Items are matched by id
            to ``data.item_map``; items of the map without a row get an empty document
            (and no vector), rows of other items are ignored.
        show_progress
            Show a progress bar over the training epochs.

        Raises
        ------
        DataError
            No documents (neither ``documents`` nor ``data.items``), a documents frame
            without ``item_id``/``tokens`` or with repeated ids, no token kept by
            ``min_count``, or the profile weights need ratings/timestamps the data lacks.
        """
        self._documents = documents
        try:
            return super().fit(data, show_progress=show_progress)
        finally:
            self._documents = None

    def _item_documents(self, data: TrainingData) -> list[list[str]]:
        """Token lists aligned to ``data.item_map``, from ``documents=`` or ``data.items``."""
        owner = type(self).__name__
        frame = self._documents
        if frame is None:
            if data.items is None:
                raise DataError(
                    f"{owner}.fit needs item documents: pass documents= (e.g. "
                    "FeatureStore.item_documents()) or TrainingData with an items frame "
                    "(item_id plus title, genres or text)"
                )
            return build_item_documents(data.item_map, data.items, None)
        return _documents_from_frame(frame, data.item_map, owner)

    def _train_item_vectors(
        self, data: TrainingData, *, show_progress: bool
    ) -> NDArray[np.float32]:
        from gensim.models.doc2vec import Doc2Vec, TaggedDocument

        cfg = self.config
        assert isinstance(cfg, Doc2VecConfig)
        owner = type(self).__name__
        started = time.perf_counter()
        docs = self._item_documents(data)
        counts: dict[str, int] = {}
        for doc in docs:
            for token in doc:
                counts[token] = counts.get(token, 0) + 1
        kept = {t for t, c in counts.items() if c >= cfg.min_count}
        # Tags are positions among the documents with a kept token: gensim sizes its
        # document vectors by the largest integer tag, and skips empty documents anyway.
        present = [i for i, doc in enumerate(docs) if any(t in kept for t in doc)]
        if not present:
            raise DataError(
                f"{owner}: no item document has a token seen at least min_count="
                f"{cfg.min_count} times ({len(counts)} distinct tokens in "
                f"{sum(1 for d in docs if d)} non-empty documents); lower min_count or give "
                "the items titles, genres or text"
            )
        corpus = [TaggedDocument(docs[i], [j]) for j, i in enumerate(present)]
        model = Doc2Vec(
            vector_size=cfg.embedding_dim,
            dm=int(cfg.dm),
            dm_mean=1,
            dbow_words=int(cfg.dbow_words),
            window=cfg.window,
            min_count=cfg.min_count,
            sample=cfg.sample,
            negative=cfg.negative,
            hs=0,
            ns_exponent=cfg.ns_exponent,
            alpha=cfg.learning_rate,
            min_alpha=cfg.min_learning_rate,
            epochs=cfg.epochs,
            seed=cfg.seed,
            workers=cfg.num_threads,
        )
        model.build_vocab(corpus)
        with tqdm(total=cfg.epochs, desc="doc2vec", disable=not show_progress) as bar:
            model.train(
                corpus,
                total_examples=len(corpus),
                epochs=cfg.epochs,
                callbacks=[_EpochProgress(bar)],
            )
        vectors = np.zeros((data.n_items, cfg.embedding_dim), np.float32)
        vectors[np.asarray(present, np.int64)] = model.dv.vectors[: len(present)]
        self.vocabulary_ = np.asarray(model.wv.index_to_key, dtype=np.str_)
        self.token_counts_ = np.asarray(model.wv.expandos["count"], dtype=np.int64)
        self.output_weights_ = np.asarray(model.syn1neg, np.float32).copy()
        self.token_vectors_ = (
            np.asarray(model.wv.vectors, np.float32).copy()
            if cfg.dm
            else np.zeros((0, cfg.embedding_dim), np.float32)
        )
        logger.info(
            "trained doc2vec mode=%s n_documents=%d n_items=%d n_tokens=%d elapsed=%.2fs",
            "pv-dm" if cfg.dm else "pv-dbow",
            len(present),
            data.n_items,
            len(self.vocabulary_),
            time.perf_counter() - started,
        )
        return vectors

    # ------------------------------------------------------------------ cold start
    def infer_item_vectors(self, documents: Sequence[Sequence[str]]) -> NDArray[np.float32]:
        """Item vectors of new documents, in the space of :attr:`item_factors`.

        Each document's vector is fitted by SGD with everything learned held fixed,
        the way paragraph vectors of unseen paragraphs are found (Le and Mikolov 2014,
        section 2.2): PV-DBOW takes the document vector alone, PV-DM the mean of it and
        the context tokens' vectors (window ``window``), and each of the document's
        tokens, in order, is predicted against ``output_weights_`` with ``negative``
        negative tokens drawn from the training frequencies raised to ``ns_exponent``.
        The step size decays linearly from ``learning_rate`` to ``min_learning_rate``
        over ``infer_epochs`` passes.

        Differences from gensim's ``infer_vector``, on purpose: frequent-token
        down-sampling is applied in expectation (each token's gradient is scaled by its
        keep probability) rather than by random dropping; PV-DM uses the full window; and
        every random draw is a counter-based hash of the seed, the pass, the position and
        the token. So the result is a pure function of the fitted model and the
        document: the same on every call, after save/load, whatever the batch and
        whatever ``PYTHONHASHSEED``.

        Parameters
        ----------
        documents
            Token lists, as :func:`~recsys.features.documents.build_item_documents`
            makes them. Tokens outside ``vocabulary_`` are ignored.

        Returns
        -------
        (len(documents), embedding_dim) float32
            Unit rows, centred as :attr:`item_factors` are (``vector_mean_``); zero rows
            for documents with no known token.

        Raises
        ------
        DataError
            If a document is a string rather than a list of tokens.
        """
        check_is_fitted(self)
        assert self.output_weights_ is not None
        if isinstance(documents, str) or any(isinstance(d, str) for d in documents):
            raise DataError(
                f"{type(self).__name__}.infer_item_vectors: documents must be token lists, "
                "got a string; tokenise with recsys.features.documents.build_item_documents"
            )
        index = self._vocabulary_index()
        ids = [
            np.asarray([index[t] for t in doc if t in index], dtype=np.int64) for doc in documents
        ]
        out = np.zeros((len(ids), self.output_weights_.shape[1]), np.float32)
        for start in range(0, len(ids), _INFER_BLOCK):
            out[start : start + _INFER_BLOCK] = self._infer(ids[start : start + _INFER_BLOCK])
        unknown = sum(1 for d in ids if len(d) == 0)
        if unknown:
            logger.info(
                "doc2vec inference: %d of %d documents have no known token", unknown, len(ids)
            )
        return self._item_factors_of(out)

    def add_items(
        self, items: pd.DataFrame, item_relations: pd.DataFrame | None = None
    ) -> NDArray[np.int64]:
        """Append cold-start items (content, no interactions) to the model.

        The new items get inferred vectors (:meth:`infer_item_vectors`), popularity 0 and
        no interactions; existing indices and user profiles do not change. Afterwards
        the model has ``n_items + len(items)`` items and recommends the new ones to users
        whose profiles match them. The caller extends its item vocabulary with the same
        ids in the same order (``item_map.extend(items["item_id"])`` when none of them
        is already known).

        Parameters
        ----------
        items
            One row per new item: ``item_id`` plus either ``tokens`` (the feature store's
            ``item_documents`` view) or ``title``, ``genres``, ``text``.
        item_relations
            Knowledge-graph triples (``item_id``, ``relation``, ``entity``) of the new
            items; only used when ``items`` has no ``tokens`` column.

        Returns
        -------
        (len(items),) int64
            The new items' indices, in row order.

        Raises
        ------
        DataError
            Missing ``item_id`` or repeated ids in ``items``.
        """
        check_is_fitted(self)
        owner = type(self).__name__
        if not isinstance(items, pd.DataFrame) or "item_id" not in items:
            raise DataError(f"{owner}.add_items: items must be a DataFrame with an item_id column")
        new_map = IdMap(items["item_id"].to_numpy())  # raises on repeated ids
        if "tokens" in items:
            docs = _documents_from_frame(items, new_map, owner)
        else:
            docs = build_item_documents(new_map, items, item_relations)
        vectors = self.infer_item_vectors(docs)
        assert self.item_factors_ is not None and self.item_popularity_ is not None
        assert self.user_items_ is not None
        old = self.n_items
        n_new = len(new_map)
        self.item_factors_ = np.vstack([self.item_factors_, vectors])
        self.item_popularity_ = np.concatenate(
            [self.item_popularity_, np.zeros(n_new, self.item_popularity_.dtype)]
        )
        ui = self.user_items_
        self.user_items_ = sp.csr_matrix(
            (ui.data, ui.indices, ui.indptr), shape=(ui.shape[0], old + n_new)
        )
        logger.info("doc2vec added n_items=%d total_items=%d", n_new, old + n_new)
        return np.arange(old, old + n_new, dtype=np.int64)

    # ------------------------------------------------------------------ inference kernel
    def _vocabulary_index(self) -> dict[str, int]:
        assert self.vocabulary_ is not None
        if self._token_index is None or self._token_index_of != id(self.vocabulary_):
            self._token_index = {str(t): i for i, t in enumerate(self.vocabulary_.tolist())}
            self._token_index_of = id(self.vocabulary_)
        return self._token_index

    def _sampling_tables(self) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        """Keep probability of each token and the CDF negatives are drawn from.

        The keep probability is word2vec's (and gensim's) down-sampling formula
        ``min(1, (sqrt(c / t) + 1) t / c)`` with ``t = sample * total count``.
        """
        cfg = self.config
        assert isinstance(cfg, Doc2VecConfig) and self.token_counts_ is not None
        counts = self.token_counts_.astype(np.float64)
        if cfg.sample > 0:
            threshold = cfg.sample * counts.sum()
            keep = np.minimum(1.0, (np.sqrt(counts / threshold) + 1.0) * threshold / counts)
        else:
            keep = np.ones_like(counts)
        cdf = np.cumsum(counts**cfg.ns_exponent)
        return keep.astype(np.float32), cdf

    def _infer(self, docs: list[NDArray[np.int64]]) -> NDArray[np.float32]:
        """Raw document vectors of token-index lists (see :meth:`infer_item_vectors`).

        Vectorised across documents, sequential along each document: documents are
        sorted by length so the ones still running at position ``t`` are a prefix, and
        each step updates all of them with their own ``t``-th token.
        """
        cfg = self.config
        assert isinstance(cfg, Doc2VecConfig)
        assert self.output_weights_ is not None and self.token_vectors_ is not None
        out_w = self.output_weights_
        dim = out_w.shape[1]
        lengths = np.asarray([len(d) for d in docs], np.int64)
        result = np.zeros((len(docs), dim), np.float32)
        if len(docs) == 0 or lengths.max() == 0:
            return result
        order = np.argsort(-lengths, kind="stable")
        lengths = lengths[order]
        width = int(lengths[0])
        tokens = np.full((len(docs), width), -1, np.int64)
        for row, k in enumerate(order.tolist()):
            tokens[row, : len(docs[k])] = docs[k]
        running = np.searchsorted(-lengths, -np.arange(width), side="left")  # docs longer than t
        keep, cdf = self._sampling_tables()
        seed_key = _mix64(np.uint64(cfg.seed))
        # gensim starts a new document at a small random vector: (U[0,1) - 0.5) / dim.
        start = ((_uniform(np.arange(dim, dtype=np.uint64) ^ seed_key) - 0.5) / dim).astype(
            np.float32
        )
        vectors = np.broadcast_to(start, (len(docs), dim)).copy()
        labels = np.zeros(cfg.negative + 1, np.float32)
        labels[0] = 1.0
        slots = np.arange(cfg.negative, dtype=np.uint64)
        epochs = cfg.infer_epochs or cfg.epochs
        step = (cfg.learning_rate - cfg.min_learning_rate) / max(epochs - 1, 1)
        offsets = [o for o in range(-cfg.window, cfg.window + 1) if o != 0]
        for epoch in range(epochs):
            alpha = np.float32(cfg.learning_rate - epoch * step)
            for t in range(width):
                n = int(running[t])
                words = tokens[:n, t]
                pass_key = _mix64(seed_key ^ (np.uint64(epoch) << np.uint64(32)) ^ np.uint64(t))
                draw = _uniform(
                    ((words.astype(np.uint64) << np.uint64(8))[:, None] | slots) ^ pass_key
                )
                negatives = np.minimum(
                    np.searchsorted(cdf, draw * cdf[-1], side="right"), len(cdf) - 1
                )
                targets = np.concatenate([words[:, None], negatives], axis=1)
                hidden = vectors[:n]
                if cfg.dm:  # mean of the document vector and the context token vectors
                    pos = t + np.asarray(offsets, np.int64)
                    pos = pos[(pos >= 0) & (pos < width)]
                    context = tokens[:n, pos]
                    valid = context >= 0
                    summed = np.einsum(
                        "nc,ncd->nd", valid.astype(np.float32), self.token_vectors_[context]
                    )
                    hidden = (hidden + summed) / (1.0 + valid.sum(axis=1, keepdims=True))
                weights = out_w[targets]  # (n, 1 + negative, dim)
                logits = np.einsum("nd,nkd->nk", hidden, weights)
                prob = 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))
                grad = (labels - prob) * (alpha * keep[words])[:, None]
                grad[:, 1:][negatives == words[:, None]] = 0.0  # the positive is no negative
                vectors[:n] += np.einsum("nk,nkd->nd", grad.astype(np.float32), weights)
        result[order] = vectors
        result[order[lengths == 0]] = 0.0
        return result


def _documents_from_frame(frame: pd.DataFrame, item_map: IdMap, owner: str) -> list[list[str]]:
    """Token lists aligned to ``item_map`` from an ``item_id``/``tokens`` frame."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{owner}: documents must be a DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("item_id", "tokens") if c not in frame]
    if missing:
        raise DataError(
            f"{owner}: the documents frame lacks {format_examples(missing)}; expected item_id "
            "and tokens, as FeatureStore.item_documents() returns"
        )
    ids = frame["item_id"]
    if ids.duplicated().any():
        raise DataError(
            f"{owner}: the documents frame repeats item ids "
            f"{format_examples(ids[ids.duplicated()].unique().tolist())}; give one row per item"
        )
    docs: list[list[str]] = [[] for _ in range(len(item_map))]
    idx = item_map.to_index(ids.to_numpy())
    for k, tokens in zip(idx.tolist(), frame["tokens"].tolist(), strict=True):
        if k >= 0 and tokens is not None:
            docs[k] = [str(t) for t in tokens]
    unknown = int((idx < 0).sum())
    if unknown:
        logger.debug("ignored %d documents of items outside the vocabulary", unknown)
    return docs


# ============================================================================ item2vec
class Item2Vec(ItemVectorModel):
    """Item vectors from behaviour sequences, skip-gram with negative sampling.

    Barkan and Koenigstein, "Item2Vec: Neural Item Embedding for Collaborative
    Filtering", MLSP 2016. Each training user's items, sorted by time (row order without
    timestamps, ties by row order), form one sentence; gensim's Word2Vec (skip-gram,
    window ``window``) learns one vector per item. The paper uses the whole set as the
    context (order ignored); a window over the time order instead favours items consumed
    close together. Items seen fewer than ``min_count`` times get no vector.

    Learned state is that of :class:`ItemVectorModel`. Unlike
    :class:`Doc2VecRetriever`, it has no vector for an item without interactions.

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> model = Item2Vec(embedding_dim=8, epochs=5).fit(block_dataset(), show_progress=False)
    >>> model.user_factors.shape
    (30, 8)
    """

    name: ClassVar[str] = "item2vec"
    Config: ClassVar[type[ModelConfig]] = Item2VecConfig

    def _train_item_vectors(
        self, data: TrainingData, *, show_progress: bool
    ) -> NDArray[np.float32]:
        from gensim.models import Word2Vec

        cfg = self.config
        assert isinstance(cfg, Item2VecConfig)
        started = time.perf_counter()
        rows = np.arange(data.n_interactions)
        if data.timestamp is None:
            order = np.lexsort((rows, data.user_idx))
        else:
            order = np.lexsort((rows, data.timestamp, data.user_idx))
        users = data.user_idx[order]
        tokens = data.item_idx[order].astype(str)
        cuts = np.flatnonzero(np.diff(users)) + 1
        sentences = [s.tolist() for s in np.split(tokens, cuts)]
        model = Word2Vec(
            vector_size=cfg.embedding_dim,
            sg=1,
            window=cfg.window,
            min_count=cfg.min_count,
            sample=cfg.sample,
            negative=cfg.negative,
            hs=0,
            ns_exponent=cfg.ns_exponent,
            alpha=cfg.learning_rate,
            min_alpha=cfg.min_learning_rate,
            epochs=cfg.epochs,
            seed=cfg.seed,
            workers=cfg.num_threads,
        )
        model.build_vocab(sentences)
        if len(model.wv) == 0:
            raise DataError(
                f"{type(self).__name__}: no item has min_count={cfg.min_count} interactions; "
                "lower min_count"
            )
        with tqdm(total=cfg.epochs, desc="item2vec", disable=not show_progress) as bar:
            model.train(
                sentences,
                total_examples=len(sentences),
                epochs=cfg.epochs,
                callbacks=[_EpochProgress(bar)],
            )
        vectors = np.zeros((data.n_items, cfg.embedding_dim), np.float32)
        known = np.asarray([int(t) for t in model.wv.index_to_key], np.int64)
        vectors[known] = model.wv.vectors
        logger.info(
            "trained item2vec n_sequences=%d n_items=%d with_vector=%d elapsed=%.2fs",
            len(sentences),
            data.n_items,
            len(known),
            time.perf_counter() - started,
        )
        return vectors
