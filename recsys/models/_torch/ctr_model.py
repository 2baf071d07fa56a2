"""The shared body of the deep CTR models (DeepFM, DIN): fit from the feature store, score
click probabilities, recommend, save/load, refresh features and warm-start.

A concrete model supplies its ``Config`` and its network (``_build_module``); everything
else, the same for both, is here:

* **features** come from a :class:`~recsys.features.FeatureStore` through
  :class:`~recsys.models._torch.ctr_features.CTRFeatureEncoder`: the offline
  point-in-time view for the training rows, and a snapshot of the online view for serving,
  saved with the model so that a loaded model is self-contained;
* **labels**: ``rating >= rating_threshold`` for explicit feedback, or every interaction a
  positive plus sampled negatives for implicit feedback;
* **training** runs on the shared :class:`~recsys.models._torch.trainer.Trainer`
  (device, early stopping, checkpoints/resume, DDP, progress, ``history_``);
* **scoring**: ``score(user_idx, item_idx)`` is the click probability of pairs with the
  latest features; ``score_rows`` scores logged interactions with their point-in-time
  features (the CTR evaluation protocol); ``recommend`` scores every item of a user in
  blocks.

Stability: internal
"""

from __future__ import annotations

import json
import logging
import time
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from pydantic import Field

from recsys.artifacts import check_format_version
from recsys.errors import ArtifactError, ConfigError, DataError, DataWarning
from recsys.models._torch.checkpoint import load_tensors, save_tensors
from recsys.models._torch.ctr_features import CTRFeatureEncoder, check_rows
from recsys.models._torch.device import DEVICE_PATTERN, resolve_device
from recsys.models._torch.trainer import EpochCallback, TrainerSettings, epoch_seed
from recsys.models.base import BaseRecommender, ModelConfig, check_is_fitted, score_pairs
from recsys.types import IdMap, TrainingData

if TYPE_CHECKING:
    import torch

    from recsys.features import FeatureStore
    from recsys.models._torch.layers import EmbeddingArch

__all__ = ["CTRConfig", "CTRRecommender"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_WEIGHTS = "weights.safetensors"
_TABLES = "features.safetensors"
_USERS = "users.parquet"
_ITEMS = "items.parquet"
_HISTORY = "history.json"
_CONFIG = "config.json"
_USER_ACTIVITY = ("user_count", "user_mean_rating", "user_seconds_since_last")


class CTRConfig(ModelConfig):
    """Hyperparameters shared by the deep CTR models.

    Defaults follow the DeepCTR-Torch budget of the CTR benchmark (embedding 16, DNN
    256-128, Adam, batch 256, at most 10 epochs, patience 3 on validation AUC).
    ``learning_rate`` (3e-3 rather than the peers' untuned 1e-3: validation AUC 0.805 vs
    0.798 for DeepFM, 0.803 vs 0.797 for DIN), ``init_std`` and ``embedding_reg`` were
    compared with other values on the validation split of that benchmark
    (``benchmarks/ctr_deep.py --part tune``).

    Attributes
    ----------
    embedding_dim
        ``E``, the width of every field embedding.
    hidden_units
        Widths of the deep part's hidden layers.
    dropout
        Dropout after each hidden layer.
    epochs, batch_size, learning_rate, weight_decay
        Training loop (Adam); ``batch_size`` is global under DDP.
    embedding_reg
        L2 weight on the embeddings a batch looks up (see
        :class:`~recsys.models._torch.layers.EmbeddingArch`).
    init_std
        Normal initialisation of the embeddings.
    patience, early_stopping_metric
        Early stopping on the validation split (``None``: train every epoch).
    validation_fraction
        When ``fit`` gets no validation data: hold out this fraction of each user's latest
        interactions (``floor(fraction * n_u)``) for early stopping; 0 disables it.
    labels
        ``"rating"``: click = ``rating >= rating_threshold``; ``"implicit"``: every
        interaction is a click and negatives are sampled; ``"auto"``: ``"rating"`` when
        the data has ratings.
    rating_threshold
        Lowest rating that counts as a click.
    negatives_per_positive, negative_sampling, popularity_exponent
        Implicit mode: negatives drawn per positive and epoch, ``"uniform"`` or
        ``"popularity"`` (probability ``count ** popularity_exponent``).
    dense_features
        Feed the store's point-in-time activity features (counts, mean ratings,
        recency). ``False`` keeps ids and attributes only (the peers' feature set).
    attribute_features
        Use the user and item attribute fields of the store.
    numeric_buckets
        Quantile buckets of numeric attributes (age, release year).
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    mixed_precision
        bf16 autocast on CUDA.
    """

    embedding_dim: int = Field(default=16, ge=1)
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=256, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    embedding_reg: float = Field(default=0.0, ge=0.0)
    init_std: float = Field(default=0.01, ge=0.0)
    patience: int | None = Field(default=3, ge=1)
    early_stopping_metric: Literal["auc", "gauc", "logloss"] = "auc"
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    labels: Literal["auto", "rating", "implicit"] = "auto"
    rating_threshold: float = 4.0
    negatives_per_positive: int = Field(default=4, ge=1)
    negative_sampling: Literal["uniform", "popularity"] = "popularity"
    popularity_exponent: float = Field(default=0.75, ge=0.0)
    dense_features: bool = True
    attribute_features: bool = True
    numeric_buckets: int = Field(default=10, ge=1)
    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    mixed_precision: bool = True


def _frame_of(data: TrainingData) -> pd.DataFrame:
    """The interactions of ``data`` as a frame in the file contract (external ids)."""
    cols: dict[str, Any] = {
        "user_id": data.user_map.to_ids(data.user_idx),
        "item_id": data.item_map.to_ids(data.item_idx),
    }
    if data.rating is not None:
        cols["rating"] = data.rating
    if data.timestamp is not None:
        cols["timestamp"] = data.timestamp
    return pd.DataFrame(cols)


def _holdout_mask(
    users: NDArray[np.int64], times: NDArray[np.int64], fraction: float
) -> NDArray[np.bool_]:
    """``True`` on each user's latest ``floor(fraction * n_u)`` rows (ties: later rows)."""
    n = len(users)
    order = np.lexsort((np.arange(n), times, users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, n])
    pos = np.arange(n) - np.repeat(starts, counts)
    size = np.repeat(counts, counts)
    held = pos >= size - np.floor(fraction * size).astype(np.int64)
    mask = np.zeros(n, bool)
    mask[order[held]] = True
    return mask


class CTRRecommender(BaseRecommender):
    """Base of the deep CTR models; see the module docstring.

    Learned state: ``module_`` (the torch network), ``encoder_`` (feature encodings and
    the serving snapshot), ``user_map_`` / ``item_map_`` (the vocabularies, so a saved
    model maps external ids by itself), ``history_`` (one dict per epoch) and
    ``best_epoch_``.

    Stability: provisional
    """

    name: ClassVar[str] = "ctr"
    Config: ClassVar[type[ModelConfig]] = CTRConfig
    _state_fields: ClassVar[tuple[str, ...]] = ("module_", "encoder_", "user_map_", "item_map_")
    #: whether the network reads behaviour sequences (``"seq"`` inputs)
    _uses_sequences: ClassVar[bool] = False
    #: (user, item) pairs per forward pass when scoring
    _pairs_per_block: ClassVar[int] = 65536

    module_: torch.nn.Module | None
    encoder_: CTRFeatureEncoder | None
    user_map_: IdMap | None
    item_map_: IdMap | None

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.history_: list[dict[str, float]] = []
        self.best_epoch_: int = 0
        self._fit_options: dict[str, Any] = {}

    @property
    def _cfg(self) -> CTRConfig:
        assert isinstance(self.config, CTRConfig)
        return self.config

    def _sequence_length(self) -> int:
        """Length of the behaviour sequences the network reads (0: none)."""
        return 0

    @abstractmethod
    def _build_module(self, encoder: CTRFeatureEncoder) -> torch.nn.Module:
        """A freshly initialised network for ``encoder``'s fields.

        The network has an ``embedding_arch`` attribute (an
        :class:`~recsys.models._torch.layers.EmbeddingArch`), takes the batch dict of
        :meth:`CTRFeatureEncoder.row_inputs` and returns ``(logits, penalty)``.
        """

    def _embedding_arch(self, encoder: CTRFeatureEncoder, *, first_order: bool) -> EmbeddingArch:
        """The shared embedding stage over ``encoder``'s feature tables (for
        :meth:`_build_module`), with per-field first-order weights when asked."""
        import torch

        from recsys.models._torch.layers import EmbeddingArch

        cfg = self._cfg
        return EmbeddingArch(
            n_rows=encoder.n_rows,
            embedding_dim=cfg.embedding_dim,
            user_fields=torch.from_numpy(encoder.user_table),
            item_fields=torch.from_numpy(encoder.item_table),
            item_bags=torch.from_numpy(encoder.item_bags),
            init_std=cfg.init_std,
            first_order=first_order,
            reg=cfg.embedding_reg,
        )

    def _top_parameters(self, module: torch.nn.Module) -> list[str]:
        """Names of the parameters trained by ``finetune(mode="top")``: all but the
        embedding stage."""
        return [n for n, _ in module.named_parameters() if not n.startswith("embedding_arch.")]

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        data: TrainingData,
        *,
        show_progress: bool = True,
        features: FeatureStore | None = None,
        rows: ArrayLike | None = None,
        validation: TrainingData | None = None,
        validation_rows: ArrayLike | None = None,
        on_epoch: EpochCallback | None = None,
        checkpoint_dir: Path | str | None = None,
        resume: bool = False,
    ) -> Self:
        """Learn click probabilities from ``data``; returns ``self``.

        Parameters
        ----------
        data
            Training interactions. Labels: ``rating >= rating_threshold`` (explicit) or
            implicit positives plus sampled negatives (see ``labels``).
        show_progress
            A progress bar over epochs.
        features
            The feature store every feature is read from; its log must contain the
            interactions of ``data`` (and of ``validation``). ``None`` builds one from
            ``data`` (and ``validation``) with ``data.items`` / ``data.users`` as side
            tables. The pipeline passes the store it built from the same frame.
        rows
            ``(n,) int64`` store row numbers of ``data``'s interactions, in order;
            default ``0..n-1`` (store and data built from the same frame). Checked
            against the store's ids.
        validation
            Held-out interactions over the same vocabularies for early stopping; default:
            ``validation_fraction`` of each user's latest training rows.
        validation_rows
            Store row numbers of ``validation`` (required with ``features``).
        on_epoch
            ``on_epoch(epoch, metrics)`` after every epoch (see :attr:`history_`).
        checkpoint_dir
            Write a checkpoint there after every epoch.
        resume
            Continue from the checkpoint in ``checkpoint_dir`` (after a crash).

        Raises
        ------
        DataError
            Bad inputs: rows that do not match the store, ratings missing for
            ``labels="rating"``, validation over other vocabularies.
        FeatureSchemaError
            ``features`` lacks the views the model reads.
        ConfigError
            Invalid options (e.g. ``resume`` without ``checkpoint_dir``), divergence.
        """
        if not isinstance(data, TrainingData):
            raise DataError(
                f"{type(self).__name__}.fit expects TrainingData, got {type(data).__name__}"
            )
        if validation is not None:
            if not isinstance(validation, TrainingData):
                raise DataError(f"{type(self).__name__}.fit: validation must be TrainingData")
            if validation.user_map != data.user_map or validation.item_map != data.item_map:
                raise DataError(
                    f"{type(self).__name__}.fit: validation uses other vocabularies than the "
                    "training data; build it with the training data's user_map and item_map"
                )
        if resume and checkpoint_dir is None:
            raise ConfigError(f"{type(self).__name__}.fit: resume=True needs checkpoint_dir")
        self._fit_options = {
            "features": features,
            "rows": rows,
            "validation": validation,
            "validation_rows": validation_rows,
            "on_epoch": on_epoch,
            "checkpoint_dir": checkpoint_dir,
            "resume": resume,
        }
        try:
            return super().fit(data, show_progress=show_progress)
        finally:
            self._fit_options = {}

    def _label_mode(self, data: TrainingData) -> str:
        mode = self._cfg.labels
        if mode == "auto":
            mode = "rating" if data.rating is not None else "implicit"
        if mode == "rating" and data.rating is None:
            raise DataError(
                f"{type(self).__name__}: labels='rating' needs a rating column; the data has "
                "none (use labels='implicit' for clicks/views with sampled negatives)"
            )
        return mode

    def _resolve_store(
        self, data: TrainingData
    ) -> tuple[FeatureStore, NDArray[np.int64], TrainingData | None, NDArray[np.int64] | None]:
        from recsys.features import FeatureStore

        opts = self._fit_options
        store: FeatureStore | None = opts.get("features")
        validation: TrainingData | None = opts.get("validation")
        n = data.n_interactions
        if store is None:
            frames = [_frame_of(data)]
            if validation is not None:
                frames.append(_frame_of(validation))
            frame = pd.concat(frames, ignore_index=True)
            if validation is not None and (data.rating is None) != (validation.rating is None):
                frame = frame.drop(columns=["rating"], errors="ignore")
            if validation is not None and (data.timestamp is None) != (
                validation.timestamp is None
            ):
                raise DataError(
                    f"{type(self).__name__}.fit: data and validation must both have "
                    "timestamps or both lack them"
                )
            store = FeatureStore.build(
                frame,
                items=data.items,
                users=data.users,
                sequence_length=max(1, self._sequence_length()),
                show_progress=False,
            )
            rows = np.arange(n, dtype=np.int64)
            val_rows = None if validation is None else n + np.arange(validation.n_interactions)
            return store, rows, validation, val_rows
        if not isinstance(store, FeatureStore):
            raise DataError(
                f"{type(self).__name__}.fit: features must be a FeatureStore, got "
                f"{type(store).__name__}"
            )
        raw_rows = opts.get("rows")
        rows = (
            np.arange(n, dtype=np.int64)
            if raw_rows is None
            else np.asarray(raw_rows, dtype=np.int64).ravel()
        )
        if len(rows) != n:
            raise DataError(f"{type(self).__name__}.fit: {len(rows)} rows for {n} interactions")
        val_rows = None
        if validation is not None:
            if opts.get("validation_rows") is None:
                raise DataError(
                    f"{type(self).__name__}.fit: with features=, pass validation_rows (the "
                    "store rows of the validation interactions)"
                )
            val_rows = np.asarray(opts["validation_rows"], dtype=np.int64).ravel()
            if len(val_rows) != validation.n_interactions:
                raise DataError(
                    f"{type(self).__name__}.fit: {len(val_rows)} validation_rows for "
                    f"{validation.n_interactions} validation interactions"
                )
        return store, rows, validation, val_rows

    def _settings(
        self,
        *,
        learning_rate: float | None = None,
        epochs: int | None = None,
        patience: int | None = -1,
    ) -> TrainerSettings:
        cfg = self._cfg
        return TrainerSettings(
            epochs=epochs or cfg.epochs,
            batch_size=cfg.batch_size,
            learning_rate=learning_rate or cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            patience=cfg.patience if patience == -1 else patience,
            metric=cfg.early_stopping_metric,
            device=cfg.device,
            seed=cfg.seed,
            mixed_precision=cfg.mixed_precision,
        )

    def _new_module(self, encoder: CTRFeatureEncoder) -> torch.nn.Module:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._cfg.seed)  # weights depend on the seed only
            return self._build_module(encoder)

    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        cfg = self._cfg
        name = type(self).__name__
        started = time.perf_counter()
        mode = self._label_mode(data)
        store, rows, validation, val_rows = self._resolve_store(data)
        offline = store.offline_features()
        check_rows(
            store,
            rows,
            data.user_map.to_ids(data.user_idx),
            data.item_map.to_ids(data.item_idx),
            offline=offline,
            what=f"{name}.fit",
        )
        times = data.timestamp if data.timestamp is not None else rows
        labels = self._labels(data, mode)
        train_mask = np.ones(data.n_interactions, bool)
        if validation is None and cfg.validation_fraction > 0 and cfg.patience is not None:
            train_mask = ~_holdout_mask(data.user_idx, times, cfg.validation_fraction)
            if train_mask.all() or not train_mask.any():
                train_mask[:] = True
            elif mode == "rating" and len(np.unique(labels[~train_mask])) < 2:
                logger.warning("model=%s held-out rows have one class: no early stopping", name)
                train_mask[:] = True
        train_rows = rows[train_mask]
        encoder = CTRFeatureEncoder.fit(
            store,
            data.user_map,
            data.item_map,
            train_rows,
            offline=offline,
            dense_features=cfg.dense_features,
            attribute_features=cfg.attribute_features,
            numeric_buckets=cfg.numeric_buckets,
            sequence_length=self._sequence_length(),
            model=name,
        )
        train_source = self._train_source(
            encoder, store, offline, data, train_mask, train_rows, labels, times, mode
        )
        valid_batch, valid_groups = self._valid_batch(
            encoder,
            store,
            offline,
            data,
            train_mask,
            rows,
            labels,
            times,
            mode,
            validation,
            val_rows,
        )
        module = self._new_module(encoder)
        result = self._trainer(show_progress).fit(
            module, train_source, valid_batch, valid_groups=valid_groups
        )
        self.module_ = module
        self.encoder_ = encoder
        self.user_map_ = data.user_map
        self.item_map_ = data.item_map
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        logger.info(
            "fitted model=%s labels=%s train_rows=%d epochs=%d best_epoch=%d elapsed=%.1fs",
            self.name,
            mode,
            len(train_rows),
            len(result.history),
            result.best_epoch,
            time.perf_counter() - started,
        )

    def _trainer(self, show_progress: bool, **settings: Any) -> Any:
        from recsys.models._torch.trainer import Trainer

        opts = self._fit_options
        return Trainer(
            self._settings(**settings),
            show_progress=show_progress,
            on_epoch=opts.get("on_epoch"),
            checkpoint_dir=opts.get("checkpoint_dir"),
            resume=bool(opts.get("resume", False)),
            name=self.name,
        )

    def _labels(self, data: TrainingData, mode: str) -> NDArray[np.float32]:
        if mode == "implicit":
            return np.ones(data.n_interactions, np.float32)
        assert data.rating is not None
        y = (data.rating >= self._cfg.rating_threshold).astype(np.float32)
        if len(y) and y.min() == y.max():
            import warnings

            warnings.warn(
                f"{type(self).__name__}: every label is {int(y[0])} (ratings vs threshold "
                f"{self._cfg.rating_threshold}); the model cannot learn to rank. Use "
                "labels='implicit' or another rating_threshold.",
                DataWarning,
                stacklevel=4,
            )
        return y

    def _with_negatives(
        self,
        encoder: CTRFeatureEncoder,
        pos: dict[str, torch.Tensor],
        user_activity: dict[str, NDArray[Any]],
        times: NDArray[np.int64],
        activity: Any,
        sampler: Any,
        seed: int,
    ) -> dict[str, torch.Tensor]:
        """Positives plus ``negatives_per_positive`` sampled negatives each (label 0)."""
        import torch

        k = self._cfg.negatives_per_positive
        n = int(pos["user"].shape[0])
        rep = np.repeat(np.arange(n), k)
        users = pos["user"].numpy()[rep]
        items = sampler.sample(users, np.random.default_rng(seed))
        cols = {c: v[rep] for c, v in user_activity.items()}
        cols.update(activity.at(items, times[rep]))
        neg: dict[str, torch.Tensor] = {
            "user": pos["user"][rep],
            "item": torch.from_numpy(items),
            "dense": torch.from_numpy(encoder.dense_matrix(cols, len(rep))),
        }
        if "seq" in pos:
            neg["seq"] = pos["seq"][rep]
        out = {key: torch.cat([pos[key], neg[key]]) for key in neg}
        out["label"] = torch.cat([torch.ones(n), torch.zeros(len(rep))])
        return out

    def _implicit_parts(
        self, data: TrainingData, train_mask: NDArray[np.bool_], times: NDArray[np.int64]
    ) -> tuple[Any, Any]:
        """Item activity at any time and a negative sampler, from the training rows."""
        from recsys.models._torch.sampling import ItemActivity, NegativeSampler

        sub = data.select(train_mask)
        activity = ItemActivity(
            sub.item_idx,
            times[train_mask],
            sub.rating,
            data.n_items,
            has_time=data.timestamp is not None,
        )
        sampler = NegativeSampler(
            sub.user_items,
            kind=self._cfg.negative_sampling,
            exponent=self._cfg.popularity_exponent,
        )
        return activity, sampler

    def _train_source(
        self,
        encoder: CTRFeatureEncoder,
        store: FeatureStore,
        offline: pd.DataFrame,
        data: TrainingData,
        train_mask: NDArray[np.bool_],
        train_rows: NDArray[np.int64],
        labels: NDArray[np.float32],
        times: NDArray[np.int64],
        mode: str,
    ) -> Any:
        import torch

        pos = encoder.row_inputs(store, train_rows, offline=offline, sequences=self._uses_sequences)
        if mode != "implicit":
            pos["label"] = torch.from_numpy(labels[train_mask])
            return pos
        activity, sampler = self._implicit_parts(data, train_mask, times)
        user_activity = {c: offline[c].to_numpy()[train_rows] for c in _USER_ACTIVITY}
        train_times = np.asarray(times)[train_mask]
        seed = self._cfg.seed

        def source(epoch: int) -> dict[str, torch.Tensor]:
            return self._with_negatives(
                encoder,
                pos,
                user_activity,
                train_times,
                activity,
                sampler,
                epoch_seed(seed, epoch) ^ 0x5A5A,
            )

        return source

    def _valid_batch(
        self,
        encoder: CTRFeatureEncoder,
        store: FeatureStore,
        offline: pd.DataFrame,
        data: TrainingData,
        train_mask: NDArray[np.bool_],
        rows: NDArray[np.int64],
        labels: NDArray[np.float32],
        times: NDArray[np.int64],
        mode: str,
        validation: TrainingData | None,
        val_rows: NDArray[np.int64] | None,
    ) -> tuple[dict[str, torch.Tensor] | None, NDArray[np.int64] | None]:
        import torch

        name = type(self).__name__
        if validation is not None and val_rows is not None:
            check_rows(
                store,
                val_rows,
                validation.user_map.to_ids(validation.user_idx),
                validation.item_map.to_ids(validation.item_idx),
                offline=offline,
                what=f"{name}.fit(validation)",
            )
            v_rows, v_labels = val_rows, self._labels(validation, mode)
            v_users = validation.user_idx
            v_times = validation.timestamp if validation.timestamp is not None else val_rows
        elif not train_mask.all():
            v_rows, v_labels = rows[~train_mask], labels[~train_mask]
            v_users, v_times = data.user_idx[~train_mask], np.asarray(times)[~train_mask]
        else:
            return None, None
        batch = encoder.row_inputs(store, v_rows, offline=offline, sequences=self._uses_sequences)
        if mode != "implicit":
            batch["label"] = torch.from_numpy(np.asarray(v_labels, np.float32))
            return batch, np.asarray(v_users)
        activity, sampler = self._implicit_parts(data, train_mask, times)
        user_activity = {c: offline[c].to_numpy()[v_rows] for c in _USER_ACTIVITY}
        out = self._with_negatives(
            encoder,
            batch,
            user_activity,
            np.asarray(v_times),
            activity,
            sampler,
            epoch_seed(self._cfg.seed, 0) ^ 0xA5A5,
        )
        k = self._cfg.negatives_per_positive
        groups = np.concatenate([v_users, np.repeat(v_users, k)])
        return out, groups

    # ------------------------------------------------------------------ scoring
    def _block_size(self) -> int:
        return max(1, self._pairs_per_block // max(1, self.n_items))

    def _predict(self, inputs: dict[str, torch.Tensor]) -> NDArray[np.float32]:
        from recsys.models._torch.trainer import predict_proba

        assert self.module_ is not None
        return predict_proba(
            self.module_,
            inputs,
            batch_size=self._pairs_per_block,
            mixed_precision=self._cfg.mixed_precision,
        )

    def _score_pairs(
        self, users: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        assert self.encoder_ is not None
        out = np.empty(len(users), np.float32)
        bs = self._pairs_per_block
        for start in range(0, len(users), bs):
            inputs = self.encoder_.pair_inputs(
                users[start : start + bs], items[start : start + bs], sequences=self._uses_sequences
            )
            out[start : start + bs] = self._predict(inputs)
        return out

    def _score_users(self, user_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        n_items = self.n_items
        users = np.repeat(np.asarray(user_idx, np.int64), n_items)
        items = np.tile(np.arange(n_items, dtype=np.int64), len(user_idx))
        return self._score_pairs(users, items).reshape(len(user_idx), n_items)

    def score(self, user_idx: ArrayLike, item_idx: ArrayLike) -> NDArray[np.float32]:
        """Click probabilities of ``(user_idx[j], item_idx[j])`` with the latest features.

        Features are the serving snapshot of the feature store (see
        :meth:`refresh_features`). Indices outside the vocabulary score NaN.

        Returns
        -------
        (n,) float32
            Probabilities in ``(0, 1)``.
        """
        check_is_fitted(self)
        users, items, ok = score_pairs(
            type(self).__name__, user_idx, item_idx, self.n_users, self.n_items, one_d=True
        )
        out = np.full(users.shape, np.nan, np.float32)
        if ok.any():
            out[ok] = self._score_pairs(users[ok], items[ok])
        return out

    def predict_proba(self, user_idx: ArrayLike, item_idx: ArrayLike) -> NDArray[np.float32]:
        """Alias of :meth:`score`: click probabilities of user-item pairs."""
        return self.score(user_idx, item_idx)

    def score_rows(self, features: FeatureStore, rows: ArrayLike) -> NDArray[np.float32]:
        """Click probabilities of logged interactions with their point-in-time features.

        This is the evaluation path of the CTR protocol: row ``r`` of the store's log is
        scored with the user and item activity strictly before it and the behaviour
        sequence before it, exactly as at training time.

        Parameters
        ----------
        features
            A store with the schema the model was fitted on.
        rows
            ``(m,)`` row numbers of the store's log.

        Returns
        -------
        (m,) float32

        Raises
        ------
        FeatureSchemaError
            If the store's views differ from the fitted ones.
        DataError
            Row numbers outside the log.
        """
        check_is_fitted(self)
        assert self.encoder_ is not None
        self.encoder_.check_store(features, model=type(self).__name__)
        r = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        n = features.n_interactions
        if len(r) and (r.min() < 0 or r.max() >= n):
            raise DataError(f"{type(self).__name__}.score_rows: rows must be in 0..{n - 1}")
        inputs = self.encoder_.row_inputs(features, r, sequences=self._uses_sequences)
        return self._predict(inputs)

    # ------------------------------------------------------------------ vocabulary growth
    def _sync_tables(self, grow_to: int | None = None) -> None:
        """Push the encoder's tables into the network (and grow its embedding table)."""
        import torch

        from recsys.models._torch.layers import EmbeddingArch

        assert self.module_ is not None and self.encoder_ is not None
        arch = self.module_.embedding_arch
        assert isinstance(arch, EmbeddingArch)
        enc = self.encoder_
        if grow_to is not None:
            gen = torch.Generator().manual_seed(epoch_seed(self._cfg.seed, 10_000 + grow_to))
            arch.grow(grow_to, self._cfg.init_std, gen)
        arch.set_tables(
            torch.from_numpy(enc.user_table),
            torch.from_numpy(enc.item_table),
            torch.from_numpy(enc.item_bags),
        )

    def _grow_vocab(self) -> None:
        """Resize the seen matrix and popularity to the encoder's vocabulary."""
        assert self.encoder_ is not None and self.user_items_ is not None
        assert self.item_popularity_ is not None
        nu, ni = self.encoder_.n_users, self.encoder_.n_items
        old = self.user_items_
        if old.shape != (nu, ni):
            coo = old.tocoo()
            self.user_items_ = sp.csr_matrix(
                (coo.data, (coo.row, coo.col)), shape=(nu, ni), dtype=np.float32
            )
            self.item_popularity_ = np.concatenate(
                [self.item_popularity_, np.zeros(ni - len(self.item_popularity_), np.float32)]
            )
        self.user_map_ = IdMap(self.encoder_.user_ids)
        self.item_map_ = IdMap(self.encoder_.item_ids)

    def refresh_features(self, features: FeatureStore) -> tuple[int, int]:
        """Re-read the serving snapshot from ``features`` (e.g. after ``append``).

        Users and items the store knows but the model does not join the vocabulary at
        the end (indices of existing ids never change): they have their attributes and
        activity, and the id embedding of unknown ids until fine-tuned.

        Returns
        -------
        (new_users, new_items) : tuple[int, int]

        Raises
        ------
        FeatureSchemaError
            If the store's views differ from the fitted ones.
        """
        check_is_fitted(self)
        assert self.encoder_ is not None
        added = self.encoder_.refresh(features, model=type(self).__name__)
        self._grow_vocab()
        self._sync_tables()
        return added

    # ------------------------------------------------------------------ fine-tuning
    def finetune(
        self,
        interactions: pd.DataFrame,
        *,
        features: FeatureStore | None = None,
        rows: ArrayLike | None = None,
        mode: Literal["full", "top"] = "full",
        learning_rate_scale: float = 0.1,
        epochs: int = 2,
        show_progress: bool = True,
        on_epoch: EpochCallback | None = None,
    ) -> Self:
        """Warm-start on new interactions; see :func:`recsys.finetune.finetune`."""
        from recsys.models._torch.finetuning import warm_start

        check_is_fitted(self)
        if mode not in ("full", "top"):
            raise ConfigError(f"{type(self).__name__}.finetune: mode must be 'full' or 'top'")
        if not learning_rate_scale > 0:
            raise ConfigError(
                f"{type(self).__name__}.finetune: learning_rate_scale must be > 0, got "
                f"{learning_rate_scale}"
            )
        if epochs < 1:
            raise ConfigError(f"{type(self).__name__}.finetune: epochs must be >= 1")
        self._fit_options = {"on_epoch": on_epoch}
        try:
            warm_start(
                self,
                interactions,
                features=features,
                rows=None if rows is None else np.asarray(rows, np.int64).ravel(),
                mode=mode,
                learning_rate_scale=learning_rate_scale,
                epochs=epochs,
                show_progress=show_progress,
            )
        finally:
            self._fit_options = {}
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write the model to directory ``path``: ``config.json``, ``weights.safetensors``
        (network), ``features.safetensors`` (feature encodings, serving snapshot, seen
        items), ``users.parquet`` / ``items.parquet`` (vocabularies) and
        ``history.json``. Self-contained: loading needs no feature store."""
        import torch

        check_is_fitted(self)
        assert self.module_ is not None and self.encoder_ is not None
        assert self.user_map_ is not None and self.item_map_ is not None
        assert self.user_items_ is not None and self.item_popularity_ is not None
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_tensors(path / _WEIGHTS, dict(self.module_.state_dict()), {"model": self.name})
        arrays, meta = self.encoder_.to_state()
        seen = sp.csr_matrix(self.user_items_)
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        tensors["seen_indptr"] = torch.from_numpy(seen.indptr.astype(np.int64))
        tensors["seen_indices"] = torch.from_numpy(seen.indices.astype(np.int64))
        tensors["item_popularity"] = torch.from_numpy(self.item_popularity_.astype(np.float32))
        meta = {**meta, "model": self.name, "best_epoch": self.best_epoch_}
        save_tensors(path / _TABLES, tensors, meta)
        self.user_map_.save(path / _USERS)
        self.item_map_.save(path / _ITEMS)
        (path / _HISTORY).write_text(json.dumps(self.history_, indent=1) + "\n")
        config = {
            "model": self.name,
            "format_version": FORMAT_VERSION,
            "params": self.config.model_dump(mode="json"),
        }
        (path / _CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save` (never unpickles; no store needed)."""
        path = Path(path)
        name = cls.__name__
        try:
            meta = json.loads((path / _CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{name}: cannot read {path / _CONFIG}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("model") != cls.name:
            found = meta.get("model") if isinstance(meta, dict) else None
            raise ArtifactError(f"{name}: {path} holds model {found!r}, expected {cls.name!r}")
        check_format_version(meta, FORMAT_VERSION, name, path)
        try:
            model = cls(**meta["params"])
        except (ConfigError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{name}: {path / _CONFIG} has invalid params: {exc}") from exc
        user_map = IdMap.load(path / _USERS)
        item_map = IdMap.load(path / _ITEMS)
        tensors, tmeta = load_tensors(path / _TABLES, what=name)
        weights, _ = load_tensors(path / _WEIGHTS, what=name)
        try:
            arrays = {k: v.numpy() for k, v in tensors.items()}
            encoder = CTRFeatureEncoder.from_state(
                arrays, tmeta, user_map.ids, item_map.ids, model=name
            )
            nu, ni = len(user_map), len(item_map)
            indptr, indices = arrays["seen_indptr"], arrays["seen_indices"]
            seen = sp.csr_matrix(
                (np.ones(len(indices), np.float32), indices, indptr), shape=(nu, ni)
            )
            popularity = arrays["item_popularity"].astype(np.float32)
            if len(popularity) != ni:
                raise ValueError("item popularity does not match the item vocabulary")
        except (KeyError, ValueError, IndexError) as exc:
            raise ArtifactError(f"{name}: {path / _TABLES} is inconsistent: {exc}") from exc
        module = model._build_module(encoder)
        try:
            module.load_state_dict(weights, strict=True)
        except (RuntimeError, KeyError) as exc:
            raise ArtifactError(
                f"{name}: {path / _WEIGHTS} does not fit the network: {exc}"
            ) from exc
        try:
            device = resolve_device(model._cfg.device)
        except ConfigError:  # a config written on a GPU machine, loaded on a CPU one
            device = resolve_device("cpu")
        module.to(device)
        module.eval()
        history: list[dict[str, float]] = []
        hist = path / _HISTORY
        if hist.exists():
            try:
                history = json.loads(hist.read_text())
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{name}: cannot read {hist}: {exc}") from exc
            if not isinstance(history, list):
                raise ArtifactError(f"{name}: {hist} is not a list of epoch records")
        model.module_ = module
        model.encoder_ = encoder
        model.user_map_, model.item_map_ = user_map, item_map
        model.user_items_ = seen
        model.item_popularity_ = popularity
        model.history_ = history
        model.best_epoch_ = int(tmeta.get("best_epoch", 0))
        return model

    # ------------------------------------------------------------------ schema
    def check_features(self, features: FeatureStore) -> None:
        """Raise :class:`FeatureSchemaError` unless ``features`` matches the fitted schema."""
        check_is_fitted(self)
        assert self.encoder_ is not None
        self.encoder_.check_store(features, model=type(self).__name__)

    @property
    def feature_schema(self) -> dict[str, Any]:
        """The feature views (name -> keys and columns) the model was fitted on."""
        check_is_fitted(self)
        assert self.encoder_ is not None
        return json.loads(json.dumps(self.encoder_.schema))
