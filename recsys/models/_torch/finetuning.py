"""Warm-starting a fitted deep CTR model on new interactions (the body of
:func:`recsys.finetune.finetune`).

What changes and what stays:

* **vocabulary**: new user and item ids join at the end (existing indices never move);
  every user or item of the new interactions that had no trained id embedding (new ids,
  and old ids that had no training rows) gets a fresh row of the shared embedding table.
  Existing rows keep their trained values;
* **features** of the new rows are point-in-time, as at training: either read from a
  feature store whose log holds the new rows (``features=``, ``rows=``), or composed from
  the model's serving snapshot (the state after the original training log) plus the new
  log's own point-in-time view (a :class:`~recsys.features.FeatureStore` built on the new
  events alone). The composition assumes the new events come after the snapshot and that
  a user's or item's earlier events were all rated when it has a mean rating;
* **training** runs the shared trainer at ``learning_rate * learning_rate_scale`` for a
  few epochs, either on every parameter (``mode="full"``) or on the layers above the
  embeddings only (``mode="top"``: embeddings and first-order weights frozen, which also
  leaves the fresh id rows at their initial values);
* **afterwards** the serving snapshot and the seen-items matrix include the new events.

Stability: internal
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import DataError
from recsys.models._torch.ctr_features import check_rows
from recsys.models._torch.trainer import epoch_seed
from recsys.types import IdMap, TrainingData

if TYPE_CHECKING:
    import torch

    from recsys.features import FeatureStore
    from recsys.models._torch.ctr_features import CTRFeatureEncoder
    from recsys.models._torch.ctr_model import CTRRecommender

__all__ = ["advance_snapshot", "compose_activity", "compose_sequences", "warm_start"]

logger = logging.getLogger(__name__)


def compose_activity(
    before: NDArray[np.float64],
    count_new: NDArray[Any],
    mean_new: NDArray[Any],
    since_new: NDArray[Any],
    times: NDArray[Any] | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Activity strictly before an event = snapshot state + the new log's own activity.

    Parameters
    ----------
    before
        ``(m, 3)`` snapshot ``[count, mean rating, last time]`` (NaN mean: none rated;
        NaN time: no event or no timestamps).
    count_new, mean_new, since_new
        ``(m,)`` the event's activity within the new log alone (store definitions).
    times
        ``(m,)`` event times, or ``None`` without timestamps.

    Returns
    -------
    count, mean_rating, seconds_since_last : (m,) float64
    """
    c0, mu0, last0 = before[:, 0], before[:, 1], before[:, 2]
    c1 = np.asarray(count_new, np.float64)
    mu1 = np.asarray(mean_new, np.float64)
    s1 = np.asarray(since_new, np.float64)
    rated0 = np.where(np.isnan(mu0), 0.0, c0)
    rated1 = np.where(np.isnan(mu1), 0.0, c1)
    total = np.where(np.isnan(mu0), 0.0, mu0 * c0) + np.where(np.isnan(mu1), 0.0, mu1 * c1)
    rated = rated0 + rated1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(rated > 0, total / np.maximum(rated, 1.0), np.nan)
    if times is None:
        since = np.full(len(c0), np.nan)
    else:
        since = np.where(np.isnan(s1), np.asarray(times, np.float64) - last0, s1)
    return c0 + c1, mean, since


def compose_sequences(
    before: NDArray[np.int64], new: NDArray[np.int64], length: int
) -> NDArray[np.int64]:
    """The last ``length`` items of ``before`` followed by ``new``, per row.

    Both are left-aligned, oldest first, ``-1`` padded; so is the result ``(m, length)``.
    """
    combined = np.concatenate([before, new], axis=1)
    valid = combined >= 0
    order = np.argsort(~valid, axis=1, kind="stable")  # real items first, in order
    packed = np.take_along_axis(combined, order, axis=1)
    counts = valid.sum(axis=1)
    start = np.maximum(counts - length, 0)
    cols = start[:, None] + np.arange(length)[None, :]
    ok = np.arange(length)[None, :] < np.minimum(counts, length)[:, None]
    out = np.take_along_axis(packed, np.minimum(cols, combined.shape[1] - 1), axis=1)
    return np.where(ok, out, -1).astype(np.int64)


def _to_model(store_ids: NDArray[Any], id_map: IdMap) -> NDArray[np.int64]:
    return id_map.to_index(store_ids)


def _mapped_sequences(
    store: FeatureStore, seq: NDArray[np.int64], item_map: IdMap
) -> NDArray[np.int64]:
    ids = store.item_map.to_ids(np.maximum(seq, 0).ravel())
    return np.where(seq >= 0, item_map.to_index(ids).reshape(seq.shape), -1)


def advance_snapshot(encoder: CTRFeatureEncoder, new_store: FeatureStore) -> None:
    """Fold the final state of a store built on new events into ``encoder``'s snapshot."""
    users = new_store.online_user_features(encoder.user_ids)
    items = new_store.online_item_features(encoder.item_ids)
    for frame, prefix, attr in ((users, "user", "user_state"), (items, "item", "item_state")):
        state = getattr(encoder, attr)
        count1 = frame[f"{prefix}_count"].to_numpy(np.float64)
        mean1 = frame[f"{prefix}_mean_rating"].to_numpy(np.float64)
        last1 = frame[f"{prefix}_last_timestamp"].to_numpy(dtype=np.float64, na_value=np.nan)
        count, mean, _ = compose_activity(state, count1, mean1, np.full(len(count1), np.nan), None)
        last = np.where(np.isnan(last1), state[:, 2], last1)
        setattr(encoder, attr, np.stack([count, mean, last], axis=1))
    latest = new_store.latest_timestamp
    if latest is not None and new_store.has_timestamp:
        encoder.now = float(latest) if encoder.now is None else max(encoder.now, float(latest))
    if encoder.sequence_length:
        new_seq = _mapped_sequences(
            new_store,
            new_store.user_sequences(encoder.user_ids, encoder.sequence_length),
            IdMap(encoder.item_ids),
        )
        encoder.user_seq = compose_sequences(encoder.user_seq, new_seq, encoder.sequence_length)


def _composed_inputs(
    encoder: CTRFeatureEncoder,
    new_store: FeatureStore,
    users: NDArray[np.int64],
    items: NDArray[np.int64],
    times: NDArray[np.int64] | None,
    sequences: bool,
) -> dict[str, torch.Tensor]:
    """Point-in-time inputs of the new events from snapshot + new-log view."""
    off = new_store.offline_features()
    cols: dict[str, NDArray[Any]] = {}
    for prefix, state, idx in (
        ("user", encoder.user_state, users),
        ("item", encoder.item_state, items),
    ):
        count, mean, since = compose_activity(
            state[idx],
            off[f"{prefix}_count"].to_numpy(),
            off[f"{prefix}_mean_rating"].to_numpy(),
            off[f"{prefix}_seconds_since_last"].to_numpy(),
            times,
        )
        cols[f"{prefix}_count"], cols[f"{prefix}_mean_rating"] = count, mean
        cols[f"{prefix}_seconds_since_last"] = since
    seq = None
    if sequences:
        length = encoder.sequence_length
        if length:
            rows = np.arange(new_store.n_interactions)
            new_seq = _mapped_sequences(
                new_store, new_store.sequences(rows, length), IdMap(encoder.item_ids)
            )
            seq = compose_sequences(encoder.user_seq[users], new_seq, length)
        else:
            seq = np.zeros((len(users), 0), np.int64)
    dense = encoder.dense_matrix(cols, len(users))
    return encoder._as_tensors(users, items, dense, seq)


def warm_start(
    model: CTRRecommender,
    interactions: pd.DataFrame,
    *,
    features: FeatureStore | None,
    rows: NDArray[np.int64] | None,
    mode: str,
    learning_rate_scale: float,
    epochs: int,
    show_progress: bool,
) -> None:
    """Fine-tune ``model`` in place on ``interactions``; see the module docstring."""
    import torch

    from recsys.features import FeatureStore
    from recsys.models._torch.sampling import ItemActivity, NegativeSampler

    name = type(model).__name__
    started = time.perf_counter()
    if not isinstance(interactions, pd.DataFrame) or interactions.empty:
        raise DataError(f"{name}.finetune: new interactions must be a non-empty DataFrame")
    missing = [c for c in ("user_id", "item_id") if c not in interactions]
    if missing:
        raise DataError(f"{name}.finetune: interactions lack columns {missing}")
    enc, cfg = model.encoder_, model._cfg
    assert enc is not None and model.user_map_ is not None and model.item_map_ is not None
    frame = interactions.reset_index(drop=True)
    new_store = FeatureStore.build(
        frame, sequence_length=max(1, enc.sequence_length), show_progress=False
    )
    if features is not None:
        enc.check_store(features, model=name)
    # vocabulary: new ids at the end, then fresh id rows for every id without one
    user_map = model.user_map_.extend(frame["user_id"].to_numpy())
    item_map = model.item_map_.extend(frame["item_id"].to_numpy())
    new_users = user_map.ids[len(model.user_map_) :]
    new_items = item_map.ids[len(model.item_map_) :]
    if len(new_users) or len(new_items):
        enc._add_entities(features, new_users, new_items)
    data = TrainingData.from_frame(frame, user_map=user_map, item_map=item_map)
    enc.assign_id_rows("user", data.user_idx)
    enc.assign_id_rows("item", data.item_idx)
    model._sync_tables(grow_to=enc.n_rows)
    model._grow_vocab()
    times = data.timestamp
    sequences = model._uses_sequences
    if features is not None:
        n_log = features.n_interactions
        store_rows = np.arange(n_log - len(frame), n_log) if rows is None else rows
        offline = features.offline_features()
        check_rows(
            features,
            store_rows,
            user_map.to_ids(data.user_idx),
            item_map.to_ids(data.item_idx),
            offline=offline,
            what=f"{name}.finetune",
        )
        pos = enc.row_inputs(features, store_rows, offline=offline, sequences=sequences)
    else:
        pos = _composed_inputs(enc, new_store, data.user_idx, data.item_idx, times, sequences)
    mode_labels = model._label_mode(data)
    labels = model._labels(data, mode_labels)
    before_items = enc.item_state.copy()
    if mode_labels == "implicit":
        assert model.user_items_ is not None
        seen = model.user_items_ + data.user_items
        sampler = NegativeSampler(
            sp.csr_matrix(seen), kind=cfg.negative_sampling, exponent=cfg.popularity_exponent
        )
        event_times = times if times is not None else np.arange(len(frame), dtype=np.int64)
        new_activity = ItemActivity(
            data.item_idx, event_times, data.rating, data.n_items, has_time=times is not None
        )
        composed_users = _user_activity_columns(enc, pos, data, new_store, times, features, rows)

        class _Composed:
            """Item activity of sampled negatives: snapshot plus the new log."""

            def at(self, items: NDArray[np.int64], at_times: NDArray[np.int64]) -> dict[str, Any]:
                act = new_activity.at(items, at_times)
                count, mean, since = compose_activity(
                    before_items[items],
                    act["item_count"],
                    act["item_mean_rating"],
                    act["item_seconds_since_last"],
                    None if times is None else at_times,
                )
                return {
                    "item_count": count,
                    "item_mean_rating": mean,
                    "item_seconds_since_last": since,
                }

        composed = _Composed()
        seed = cfg.seed

        def source(epoch: int) -> dict[str, torch.Tensor]:
            return model._with_negatives(
                enc,
                pos,
                composed_users,
                event_times,
                composed,
                sampler,
                epoch_seed(seed, 20_000 + epoch),
            )

        train: Any = source
    else:
        pos["label"] = torch.from_numpy(labels)
        train = pos
    module = model.module_
    assert module is not None
    frozen = []
    if mode == "top":
        top = set(model._top_parameters(module))
        for pname, param in module.named_parameters():
            if pname not in top and param.requires_grad:
                param.requires_grad_(False)
                frozen.append(param)
    try:
        trainer = model._trainer(
            show_progress,
            learning_rate=cfg.learning_rate * learning_rate_scale,
            epochs=epochs,
            patience=None,
        )
        result = trainer.fit(module, train, None)
    finally:
        for param in frozen:
            param.requires_grad_(True)
    # serving state after the new events
    if features is not None:
        enc._snapshot(features)
    else:
        advance_snapshot(enc, new_store)
    assert model.user_items_ is not None and model.item_popularity_ is not None
    model.user_items_ = sp.csr_matrix(model.user_items_ + data.user_items)
    model.user_items_.data[:] = 1.0
    model.item_popularity_ = np.asarray(model.user_items_.sum(axis=0), np.float32).ravel()
    offset = len(model.history_)
    for entry in result.history:
        model.history_.append({**entry, "epoch": entry["epoch"] + offset, "finetune": 1.0})
    logger.info(
        "fine-tuned model=%s mode=%s rows=%d new_users=%d new_items=%d epochs=%d elapsed=%.1fs",
        model.name,
        mode,
        len(frame),
        len(new_users),
        len(new_items),
        epochs,
        time.perf_counter() - started,
    )


def _user_activity_columns(
    encoder: CTRFeatureEncoder,
    pos: dict[str, Any],
    data: TrainingData,
    new_store: FeatureStore,
    times: NDArray[np.int64] | None,
    features: FeatureStore | None,
    rows: NDArray[np.int64] | None,
) -> dict[str, NDArray[Any]]:
    """Raw user activity columns of the new events (for the negatives drawn from them)."""
    if features is not None:
        n_log = features.n_interactions
        store_rows = np.arange(n_log - data.n_interactions, n_log) if rows is None else rows
        off = features.offline_features()
        return {
            c: off[c].to_numpy()[store_rows]
            for c in ("user_count", "user_mean_rating", "user_seconds_since_last")
        }
    off = new_store.offline_features()
    count, mean, since = compose_activity(
        encoder.user_state[data.user_idx],
        off["user_count"].to_numpy(),
        off["user_mean_rating"].to_numpy(),
        off["user_seconds_since_last"].to_numpy(),
        times,
    )
    return {"user_count": count, "user_mean_rating": mean, "user_seconds_since_last": since}
