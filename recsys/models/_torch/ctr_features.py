"""From the feature store to the deep CTR models' tensors, at training and serving time.

:class:`CTRFeatureEncoder` reads every feature from a
:class:`~recsys.features.FeatureStore`, with the store's definitions on both paths:

* **training / evaluation of logged rows**: the offline point-in-time view
  (:meth:`~recsys.features.FeatureStore.offline_features`) and behaviour sequences
  (:meth:`~recsys.features.FeatureStore.sequences`) of the rows;
* **serving**: a snapshot of the store's online view taken at fit time (or refreshed with
  :meth:`CTRFeatureEncoder.refresh`): per user the activity counters and latest sequence,
  per item its activity, plus both entities' encoded attributes. The snapshot is small
  (a few numbers per user and item) and is saved with the model, so a loaded model scores
  without the store.

Encodings (fixed at fit, saved with the model):

* sparse fields: user id and item id (users and items without training rows share the
  field's unknown slot), every categorical attribute (the store's codes; 0 = unknown),
  every numeric attribute bucketised at quantiles of the entity table (0 = missing);
* bags: multi-valued item attributes (genres), mean-pooled in the model;
* dense: the six activity features, counts and recency ``log1p``-scaled, missing values
  filled (mean rating: its training mean; recency: 0) with a missing indicator, then
  standardised with training statistics.

Stability: internal
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import ArtifactError, ConfigError, DataError, FeatureSchemaError, format_examples
from recsys.models.base import latest_entries

if TYPE_CHECKING:
    import torch

    from recsys.features import FeatureStore
    from recsys.types import IdMap

__all__ = ["ACTIVITY_COLUMNS", "CTRFeatureEncoder", "DenseColumn", "Field"]

logger = logging.getLogger(__name__)

#: The point-in-time activity features of the store used as dense inputs.
ACTIVITY_COLUMNS: tuple[str, ...] = (
    "user_count",
    "user_mean_rating",
    "user_seconds_since_last",
    "item_count",
    "item_mean_rating",
    "item_seconds_since_last",
)
_RECORDED_VIEWS = ("interaction_point_in_time", "user_attributes", "item_attributes")


@dataclass(frozen=True)
class Field:
    """One sparse field: where its codes live in the shared embedding table.

    Attributes
    ----------
    name
        Feature name (``"user_id"``, ``"user_occupation"``, ``"item_genres"``, ...).
    entity
        ``"user"`` or ``"item"``.
    kind
        ``"id"``, ``"category"``, ``"bucket"`` (numeric attribute) or ``"bag"``.
    size
        Local codes ``0..size-1``; 0 is unknown / missing.
    offset
        Global table row of local code 0.
    edges
        Bucket boundaries (``"bucket"`` only).
    length
        Longest bag (``"bag"`` only).
    """

    name: str
    entity: str
    kind: str
    size: int
    offset: int
    edges: tuple[float, ...] = ()
    length: int = 0


@dataclass(frozen=True)
class DenseColumn:
    """One dense activity input and how it is scaled (fitted on training rows)."""

    name: str
    fill: float
    mean: float
    std: float
    indicator: bool


def _raw(name: str, values: NDArray[Any]) -> NDArray[np.float64]:
    v = np.asarray(values, dtype=np.float64)
    if name.endswith("_count") or name.endswith("_seconds_since_last"):
        # counts and recency span orders of magnitude: log-scale them
        return np.log1p(np.maximum(v, 0.0))
    return v


def _bucketize(values: NDArray[Any], edges: tuple[float, ...]) -> NDArray[np.int64]:
    v = np.asarray(values, dtype=np.float64)
    codes = np.searchsorted(np.asarray(edges, np.float64), v, side="right") + 1
    codes[np.isnan(v)] = 0
    return codes.astype(np.int64)


def _bag_matrix(lists: NDArray[Any], n: int, length: int, size: int) -> NDArray[np.int64]:
    out = np.zeros((n, length), np.int64)
    for k, codes in enumerate(lists):
        arr = np.asarray(codes, np.int64)[:length]
        arr = np.where((arr > 0) & (arr < size), arr, 0)
        out[k, : len(arr)] = arr
    return out


class CTRFeatureEncoder:
    """Encodes feature-store reads into model inputs; keeps the serving snapshot.

    Build with :meth:`fit`; see the module docstring. Index spaces: ``user_idx`` and
    ``item_idx`` are positions in the model's vocabularies (``user_ids``, ``item_ids``);
    the store's maps may differ (other order, more ids) and are translated by id.

    Stability: internal
    """

    def __init__(self) -> None:
        self.fields: list[Field] = []
        self.dense: list[DenseColumn] = []
        self.n_rows = 1
        self.sequence_length = 0
        self.schema: dict[str, Any] = {}
        self.vocabularies: dict[str, list[str]] = {}
        self.user_ids: NDArray[Any] = np.empty(0, np.int64)
        self.item_ids: NDArray[Any] = np.empty(0, np.int64)
        # tables, model index space (+1 row: unknown / padding)
        self.user_table = np.zeros((1, 0), np.int64)
        self.item_table = np.zeros((1, 0), np.int64)
        self.item_bags = np.zeros((1, 0, 1), np.int64)
        # serving snapshot
        self.user_state = np.zeros((0, 3), np.float64)  # count, mean rating, last time
        self.item_state = np.zeros((0, 3), np.float64)
        self.user_seq = np.zeros((0, 0), np.int64)
        self.now: float | None = None

    # ------------------------------------------------------------------ sizes
    @property
    def n_users(self) -> int:
        """Users of the model's vocabulary."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Items of the model's vocabulary."""
        return len(self.item_ids)

    @property
    def n_dense(self) -> int:
        """Width of the dense input."""
        return len(self.dense) + sum(d.indicator for d in self.dense)

    def field(self, name: str) -> Field:
        """The field called ``name``."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        store: FeatureStore,
        user_map: IdMap,
        item_map: IdMap,
        train_rows: NDArray[np.int64],
        *,
        offline: pd.DataFrame,
        dense_features: bool,
        attribute_features: bool,
        numeric_buckets: int,
        sequence_length: int,
        model: str,
    ) -> CTRFeatureEncoder:
        """Fit the encodings on the training rows and snapshot the store's online view.

        Parameters
        ----------
        store
            The feature store (its log holds the training rows).
        user_map, item_map
            The model's vocabularies.
        train_rows
            ``(n,) int64`` store row numbers of the training interactions.
        offline
            ``store.offline_features()`` (passed in so it is built once).
        dense_features, attribute_features
            Use the activity features / the attribute fields.
        numeric_buckets
            Quantile buckets of numeric attributes.
        sequence_length
            Behaviour sequence length kept for serving (0: none).
        model
            Model name for messages.
        """
        enc = cls()
        enc.user_ids = np.asarray(user_map.ids)
        enc.item_ids = np.asarray(item_map.ids)
        if sequence_length > store.sequence_length:
            raise ConfigError(
                f"{model}: sequence_length {sequence_length} exceeds the feature store's "
                f"{store.sequence_length}; rebuild the store with a longer sequence_length"
            )
        enc.sequence_length = sequence_length
        enc.schema = cls._store_schema(store)
        users, items = enc._row_entities(store, offline, train_rows)
        user_attrs = store.user_attributes(enc.user_ids).drop(columns="user_id")
        item_attrs = store.item_attributes(enc.item_ids).drop(columns="item_id")
        if not attribute_features:
            user_attrs = user_attrs.iloc[:, :0]
            item_attrs = item_attrs.iloc[:, :0]
        vocab = store.vocabularies
        offset = 1
        fields: list[Field] = []
        for entity, attrs, idx in (("user", user_attrs, users), ("item", item_attrs, items)):
            n_with_rows = len(np.unique(idx[idx >= 0]))
            fields.append(Field(f"{entity}_id", entity, "id", n_with_rows + 1, offset))
            offset += n_with_rows + 1
            for col in attrs.columns:
                values = attrs[col]
                if values.dtype == object:
                    if entity != "item":
                        logger.debug("model=%s ignores user list attribute %s", model, col)
                        continue
                    size = len(vocab.get(col, [])) + 1
                    length = max((len(v) for v in values), default=0)
                    if length == 0:
                        continue
                    fields.append(Field(col, entity, "bag", size, offset, length=length))
                elif pd.api.types.is_float_dtype(values.dtype):
                    finite = values.to_numpy(np.float64)
                    finite = finite[np.isfinite(finite)]
                    if len(finite) == 0:
                        continue
                    qs = np.quantile(finite, np.linspace(0, 1, numeric_buckets + 1)[1:-1])
                    edges = tuple(float(e) for e in np.unique(qs))
                    size = len(edges) + 2
                    fields.append(Field(col, entity, "bucket", size, offset, edges=edges))
                else:
                    size = len(vocab.get(col, [])) + 1
                    fields.append(Field(col, entity, "category", size, offset))
                offset += fields[-1].size
        enc.fields = fields
        enc.n_rows = offset
        enc.vocabularies = {f.name: list(vocab[f.name]) for f in fields if f.name in vocab}
        enc._build_tables(users, items, user_attrs, item_attrs)
        if dense_features:
            enc._fit_dense(offline, train_rows)
        enc._snapshot(store)
        return enc

    @staticmethod
    def _store_schema(store: FeatureStore) -> dict[str, Any]:
        views = store.views
        return {name: views[name].schema.to_dict() for name in _RECORDED_VIEWS}

    def _index_maps(
        self, store: FeatureStore
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """Model <-> store index translations (``-1`` where the other side lacks the id)."""
        m2s_u = store.user_map.to_index(self.user_ids)
        m2s_i = store.item_map.to_index(self.item_ids)
        s2m_u = np.full(len(store.user_map), -1, np.int64)
        s2m_u[m2s_u[m2s_u >= 0]] = np.flatnonzero(m2s_u >= 0)
        s2m_i = np.full(len(store.item_map), -1, np.int64)
        s2m_i[m2s_i[m2s_i >= 0]] = np.flatnonzero(m2s_i >= 0)
        return m2s_u, m2s_i, s2m_u, s2m_i

    def _row_entities(
        self, store: FeatureStore, offline: pd.DataFrame, rows: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Model-space user and item indices of store rows (``-1`` = not in the model)."""
        _, _, s2m_u, s2m_i = self._index_maps(store)
        u = offline["user_idx"].to_numpy()[rows].astype(np.int64)
        i = offline["item_idx"].to_numpy()[rows].astype(np.int64)
        return s2m_u[u], s2m_i[i]

    def _build_tables(
        self,
        users: NDArray[np.int64],
        items: NDArray[np.int64],
        user_attrs: pd.DataFrame,
        item_attrs: pd.DataFrame,
    ) -> None:
        tables: dict[str, list[NDArray[np.int64]]] = {"user": [], "item": []}
        bags: list[NDArray[np.int64]] = []
        for f in self.fields:
            n = self.n_users if f.entity == "user" else self.n_items
            attrs = user_attrs if f.entity == "user" else item_attrs
            if f.kind == "id":
                seen = users if f.entity == "user" else items
                has = np.zeros(n, bool)
                has[seen[seen >= 0]] = True
                local = np.zeros(n, np.int64)
                local[has] = np.arange(1, int(has.sum()) + 1)
            elif f.kind == "bag":
                bag = _bag_matrix(attrs[f.name].to_numpy(), n, f.length, f.size)
                global_rows = np.where(bag > 0, bag + f.offset, 0)
                bags.append(np.vstack([global_rows, np.zeros((1, f.length), np.int64)]))
                continue
            elif f.kind == "bucket":
                local = _bucketize(attrs[f.name].to_numpy(np.float64, na_value=np.nan), f.edges)
            else:
                codes = attrs[f.name].to_numpy().astype(np.int64)
                local = np.where((codes > 0) & (codes < f.size), codes, 0)
            column = np.append(local, 0) + f.offset  # last row: the unknown entity
            tables[f.entity].append(column)
        self.user_table = np.stack(tables["user"], axis=1)
        self.item_table = np.stack(tables["item"], axis=1)
        if bags:
            width = max(b.shape[1] for b in bags)
            padded = [np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in bags]
            self.item_bags = np.stack(padded, axis=1)
        else:
            self.item_bags = np.zeros((self.n_items + 1, 0, 1), np.int64)

    def _fit_dense(self, offline: pd.DataFrame, rows: NDArray[np.int64]) -> None:
        dense = []
        for name in ACTIVITY_COLUMNS:
            raw = _raw(name, offline[name].to_numpy()[rows])
            missing = np.isnan(raw)
            if missing.all():  # e.g. mean ratings of a log without ratings
                continue
            fill = float(np.nanmean(raw)) if name.endswith("_mean_rating") else 0.0
            filled = np.where(missing, fill, raw)
            std = float(filled.std())
            dense.append(
                DenseColumn(
                    name=name,
                    fill=fill,
                    mean=float(filled.mean()),
                    std=std if std > 1e-12 else 1.0,
                    indicator=bool(missing.any()),
                )
            )
        self.dense = dense

    def _snapshot(self, store: FeatureStore) -> None:
        """Take the store's online state for every user and item of the vocabulary."""
        _, _, _, s2m_i = self._index_maps(store)
        users = store.online_user_features(self.user_ids)
        items = store.online_item_features(self.item_ids)

        def state(frame: pd.DataFrame, prefix: str) -> NDArray[np.float64]:
            last = frame[f"{prefix}_last_timestamp"].to_numpy(dtype=np.float64, na_value=np.nan)
            return np.stack(
                [
                    frame[f"{prefix}_count"].to_numpy(np.float64),
                    frame[f"{prefix}_mean_rating"].to_numpy(np.float64),
                    last,
                ],
                axis=1,
            )

        self.user_state = state(users, "user")
        self.item_state = state(items, "item")
        latest = store.latest_timestamp
        self.now = None if latest is None or not store.has_timestamp else float(latest)
        if self.sequence_length:
            seq = store.user_sequences(self.user_ids, self.sequence_length)
            self.user_seq = np.where(seq >= 0, s2m_i[np.maximum(seq, 0)], -1)
        else:
            self.user_seq = np.zeros((self.n_users, 0), np.int64)

    # ------------------------------------------------------------------ schema
    def check_store(self, store: FeatureStore, *, model: str) -> None:
        """Raise unless ``store`` has the feature schema the model was fitted on.

        Raises
        ------
        FeatureSchemaError
            Listing the missing and unexpected columns of each view that differs, or the
            categorical vocabularies that changed.
        """
        from recsys.features import FeatureSchema

        problems = []
        views = store.views
        for name, recorded in self.schema.items():
            if name not in views:
                problems.append(f"view {name!r} is missing")
                continue
            expected = FeatureSchema.from_dict(recorded)
            actual = views[name].schema
            diff = expected.differences({**dict.fromkeys(actual.keys, "any"), **actual.dtypes})
            if diff:
                problems.append(f"view {name!r}: {'; '.join(diff)}")
        vocab = store.vocabularies
        changed = [c for c, v in self.vocabularies.items() if list(vocab.get(c, [])) != v]
        if changed:
            problems.append(f"categorical vocabularies changed: {format_examples(changed)}")
        if problems:
            raise FeatureSchemaError(
                f"{model}: the feature store does not match the features the model was fitted "
                f"on; {' | '.join(problems)}. Refit the model on this store, or use the store "
                "it was fitted with."
            )

    # ------------------------------------------------------------------ inputs
    def dense_matrix(self, columns: dict[str, NDArray[Any]], n: int) -> NDArray[np.float32]:
        """``(n, n_dense) float32`` scaled dense inputs from ``n`` rows of raw activity
        columns (only the columns the model uses are read)."""
        out = np.empty((n, self.n_dense), np.float32)
        j = len(self.dense)
        for k, d in enumerate(self.dense):
            raw = _raw(d.name, columns[d.name])
            missing = np.isnan(raw)
            out[:, k] = (np.where(missing, d.fill, raw) - d.mean) / d.std
            if d.indicator:
                out[:, j] = missing
                j += 1
        return out

    def _as_tensors(
        self,
        users: NDArray[np.int64],
        items: NDArray[np.int64],
        dense: NDArray[np.float32],
        seq: NDArray[np.int64] | None,
    ) -> dict[str, torch.Tensor]:
        import torch

        out = {
            "user": torch.from_numpy(np.where(users >= 0, users, self.n_users).astype(np.int64)),
            "item": torch.from_numpy(np.where(items >= 0, items, self.n_items).astype(np.int64)),
            "dense": torch.from_numpy(np.ascontiguousarray(dense, np.float32)),
        }
        if seq is not None:
            out["seq"] = torch.from_numpy(np.where(seq >= 0, seq, self.n_items).astype(np.int64))
        return out

    def row_inputs(
        self,
        store: FeatureStore,
        rows: NDArray[np.int64],
        *,
        offline: pd.DataFrame | None = None,
        sequences: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Inputs of logged store rows, with their point-in-time features.

        Parameters
        ----------
        store
            The store the rows belong to.
        rows
            ``(n,) int64`` store row numbers.
        offline
            ``store.offline_features()`` if already built.
        sequences
            Also return ``"seq"``: the behaviour sequence strictly before each row.

        Returns
        -------
        dict
            ``user`` / ``item`` ``(n,) int64`` table rows (``n_users`` / ``n_items`` for
            ids outside the model's vocabulary), ``dense`` ``(n, n_dense) float32`` and
            optionally ``seq`` ``(n, L) int64`` (``n_items`` = padding).
        """
        rows = np.asarray(rows, np.int64)
        if offline is None:
            offline = store.offline_features()
        users, items = self._row_entities(store, offline, rows)
        dense = self.dense_matrix(
            {d.name: offline[d.name].to_numpy()[rows] for d in self.dense}, len(rows)
        )
        seq = None
        if sequences and self.sequence_length:
            _, _, _, s2m_i = self._index_maps(store)
            raw = store.sequences(rows, self.sequence_length)
            seq = np.where(raw >= 0, s2m_i[np.maximum(raw, 0)], -1)
        elif sequences:
            seq = np.zeros((len(rows), 0), np.int64)
        return self._as_tensors(users, items, dense, seq)

    def online_dense(
        self,
        users: NDArray[np.int64],
        items: NDArray[np.int64],
        *,
        user_state: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float32]:
        """``(n, n_dense)`` activity features of pairs from the serving snapshot.

        ``user_state`` (``(n, 3)``: count, mean rating, last timestamp; NaN unknown)
        replaces the snapshot's user rows, for users described by a history instead.
        """
        cols: dict[str, NDArray[Any]] = {}
        for prefix, state, idx in (
            ("user", self.user_state, users),
            ("item", self.item_state, items),
        ):
            s = user_state if prefix == "user" and user_state is not None else state[idx]
            cols[f"{prefix}_count"] = s[:, 0]
            cols[f"{prefix}_mean_rating"] = s[:, 1]
            since = (self.now - s[:, 2]) if self.now is not None else np.full(len(idx), np.nan)
            cols[f"{prefix}_seconds_since_last"] = since
        return self.dense_matrix(cols, len(users))

    def pair_inputs(
        self, users: NDArray[np.int64], items: NDArray[np.int64], *, sequences: bool = False
    ) -> dict[str, torch.Tensor]:
        """Inputs of (user, item) pairs of known indices, from the serving snapshot."""
        users = np.asarray(users, np.int64)
        items = np.asarray(items, np.int64)
        seq = self.user_seq[users] if sequences else None
        return self._as_tensors(users, items, self.online_dense(users, items), seq)

    def history_inputs(
        self, histories: sp.csr_matrix, *, sequences: bool = False
    ) -> dict[str, torch.Tensor]:
        """Inputs pairing every row of a history matrix with every item (fold-in).

        A row stands for a user outside the vocabulary (the unknown-user slot) whose
        activity is the row itself: ``user_count`` is its number of items, the mean
        rating and the time since the last event are unknown (their training fill
        values and missing indicators). Stored values order the items in time (larger =
        later; ties to the higher index); the behaviour sequence is the latest
        ``sequence_length`` of them, oldest first.

        Returns
        -------
        dict
            As :meth:`pair_inputs`, with ``n_rows * n_items`` pairs, row-major.
        """
        h = sp.csr_matrix(histories, dtype=np.float64)
        n_rows, n_items = h.shape[0], self.n_items
        users = np.full(n_rows * n_items, -1, np.int64)
        items = np.tile(np.arange(n_items, dtype=np.int64), n_rows)
        state = np.full((n_rows, 3), np.nan)
        state[:, 0] = np.diff(h.indptr)
        dense = self.online_dense(users, items, user_state=np.repeat(state, n_items, axis=0))
        seq = None
        if sequences:
            seq = np.repeat(self.history_sequences(h), n_items, axis=0)
        return self._as_tensors(users, items, dense, seq)

    def history_sequences(self, histories: sp.csr_matrix) -> NDArray[np.int64]:
        """``(n_rows, sequence_length)`` latest items of each history row, oldest first,
        ``-1`` padded (stored values order the items in time; ties to the higher index)."""
        h = sp.csr_matrix(histories, dtype=np.float64)
        length = self.sequence_length
        out = np.full((h.shape[0], length), -1, np.int64)
        rows, items, age = latest_entries(h, length)
        n_kept = np.minimum(np.diff(h.indptr), length)
        out[rows, n_kept[rows] - 1 - age] = items
        return out

    # ------------------------------------------------------------------ growth
    def refresh(self, store: FeatureStore, *, model: str) -> tuple[int, int]:
        """Re-read the online snapshot from ``store`` and add its new users and items.

        Ids of the store that the model has not seen join the vocabulary at the end, with
        their attributes and the unknown id slot. Returns the numbers of new users and
        items.
        """
        from recsys.types import IdMap

        self.check_store(store, model=model)
        new_users = IdMap(self.user_ids).extend(store.user_map.ids).ids[self.n_users :]
        new_items = IdMap(self.item_ids).extend(store.item_map.ids).ids[self.n_items :]
        if len(new_users) or len(new_items):
            self._add_entities(store, new_users, new_items)
        self._snapshot(store)
        return len(new_users), len(new_items)

    def _add_entities(
        self, store: FeatureStore | None, new_users: NDArray[Any], new_items: NDArray[Any]
    ) -> None:
        """Append users and items to the vocabulary with their attributes from ``store``
        (defaults without one), the unknown id slot and an empty activity state."""
        old_u, old_i = self.n_users, self.n_items
        self.user_ids = np.concatenate([self.user_ids, np.asarray(new_users, self.user_ids.dtype)])
        self.item_ids = np.concatenate([self.item_ids, np.asarray(new_items, self.item_ids.dtype)])
        empty = np.tile([0.0, np.nan, np.nan], (1, 1))
        self.user_state = np.vstack([self.user_state, np.repeat(empty, len(new_users), 0)])
        self.item_state = np.vstack([self.item_state, np.repeat(empty, len(new_items), 0)])
        self.user_seq = np.vstack(
            [self.user_seq, np.full((len(new_users), self.sequence_length), -1, np.int64)]
        )
        if store is not None:
            user_attrs = store.user_attributes(new_users).drop(columns="user_id")
            item_attrs = store.item_attributes(new_items).drop(columns="item_id")
        else:
            user_attrs = item_attrs = pd.DataFrame()
        fresh: dict[str, list[NDArray[np.int64]]] = {"user": [], "item": []}
        bags = []
        for f in self.fields:
            attrs = user_attrs if f.entity == "user" else item_attrs
            n = len(new_users) if f.entity == "user" else len(new_items)
            if f.kind == "id" or f.name not in attrs:
                if f.kind == "bag":
                    bags.append(np.zeros((n, f.length), np.int64))
                    continue
                local = np.zeros(n, np.int64)
            elif f.kind == "bag":
                bag = _bag_matrix(attrs[f.name].to_numpy(), n, f.length, f.size)
                bags.append(np.where(bag > 0, bag + f.offset, 0))
                continue
            elif f.kind == "bucket":
                local = _bucketize(attrs[f.name].to_numpy(np.float64, na_value=np.nan), f.edges)
            else:
                codes = attrs[f.name].to_numpy().astype(np.int64)
                local = np.where((codes > 0) & (codes < f.size), codes, 0)
            fresh[f.entity].append(local + f.offset)
        if fresh["user"]:
            block = np.stack(fresh["user"], axis=1)
            self.user_table = np.vstack([self.user_table[:old_u], block, self.user_table[old_u:]])
        if fresh["item"]:
            block = np.stack(fresh["item"], axis=1)
            self.item_table = np.vstack([self.item_table[:old_i], block, self.item_table[old_i:]])
        if bags:
            width = self.item_bags.shape[2]
            block3 = np.stack([np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in bags], 1)
            self.item_bags = np.concatenate(
                [self.item_bags[:old_i], block3, self.item_bags[old_i:]], axis=0
            )
        else:
            self.item_bags = np.zeros((self.n_items + 1, 0, 1), np.int64)

    def _table_column(self, name: str) -> int:
        """Column of field ``name`` in its entity's table (bags have none)."""
        f = self.field(name)
        names = [g.name for g in self.fields if g.entity == f.entity and g.kind != "bag"]
        return names.index(name)

    def assign_id_rows(self, entity: str, idx: NDArray[np.int64]) -> NDArray[np.int64]:
        """Give the entities ``idx`` that sit at the unknown id slot fresh table rows.

        Rows are appended at the end of the shared table (an id field's rows need not be
        contiguous: the entity table holds each entity's row), so existing rows and their
        trained embeddings are untouched. Returns the entities that got a row; the new
        table size is :attr:`n_rows`.
        """
        f = self.field(f"{entity}_id")
        col = self._table_column(f.name)
        table = self.user_table if entity == "user" else self.item_table
        idx = np.unique(np.asarray(idx, np.int64))
        idx = idx[table[idx, col] == f.offset]
        table[idx, col] = self.n_rows + np.arange(len(idx))
        self.n_rows += len(idx)
        return idx

    # ------------------------------------------------------------------ persistence
    def to_state(self) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON metadata that :meth:`from_state` reads back."""
        arrays = {
            "user_table": self.user_table,
            "item_table": self.item_table,
            "item_bags": self.item_bags,
            "user_state": self.user_state,
            "item_state": self.item_state,
            "user_seq": self.user_seq,
        }
        meta = {
            "fields": [asdict(f) for f in self.fields],
            "dense": [asdict(d) for d in self.dense],
            "n_rows": self.n_rows,
            "sequence_length": self.sequence_length,
            "schema": self.schema,
            "vocabularies": self.vocabularies,
            "now": self.now,
        }
        return arrays, meta

    @classmethod
    def from_state(
        cls,
        arrays: dict[str, NDArray[Any]],
        meta: dict[str, Any],
        user_ids: NDArray[Any],
        item_ids: NDArray[Any],
        *,
        model: str,
    ) -> CTRFeatureEncoder:
        """Inverse of :meth:`to_state`; raises :class:`ArtifactError` when inconsistent."""
        enc = cls()
        try:
            enc.fields = [
                Field(**{**f, "edges": tuple(f.get("edges", ()))}) for f in meta["fields"]
            ]
            enc.dense = [DenseColumn(**d) for d in meta["dense"]]
            enc.n_rows = int(meta["n_rows"])
            enc.sequence_length = int(meta["sequence_length"])
            enc.schema = dict(meta["schema"])
            enc.vocabularies = {k: list(v) for k, v in meta["vocabularies"].items()}
            enc.now = None if meta["now"] is None else float(meta["now"])
            enc.user_ids, enc.item_ids = np.asarray(user_ids), np.asarray(item_ids)
            for name in ("user_table", "item_table", "item_bags", "user_seq"):
                setattr(enc, name, np.asarray(arrays[name], np.int64))
            enc.user_state = np.asarray(arrays["user_state"], np.float64)
            enc.item_state = np.asarray(arrays["item_state"], np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{model}: malformed feature encoder state ({exc})") from exc
        nu, ni = enc.n_users, enc.n_items
        ok = (
            enc.user_table.shape[0] == nu + 1
            and enc.item_table.shape[0] == ni + 1
            and enc.item_bags.shape[0] == ni + 1
            and enc.user_state.shape == (nu, 3)
            and enc.item_state.shape == (ni, 3)
            and enc.user_seq.shape == (nu, enc.sequence_length)
            and (enc.user_table.size == 0 or int(enc.user_table.max()) < enc.n_rows)
            and (enc.item_table.size == 0 or int(enc.item_table.max()) < enc.n_rows)
        )
        if not ok:
            raise ArtifactError(
                f"{model}: feature tables do not match the vocabularies ({nu} users, {ni} items)"
            )
        return enc


def check_rows(
    store: FeatureStore,
    rows: NDArray[np.int64],
    user_ids: NDArray[Any],
    item_ids: NDArray[Any],
    *,
    offline: pd.DataFrame,
    what: str,
) -> None:
    """Raise :class:`DataError` unless store ``rows`` hold the given (user, item) ids.

    This is how a model checks that the rows it was told belong to its training
    interactions really do (a store built from another frame, or rows off by one, fail).
    """
    n = len(offline)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        bad = rows[(rows < 0) | (rows >= n)]
        raise DataError(f"{what}: store rows must be in 0..{n - 1}, got {format_examples(bad)}")
    su = store.user_map.to_ids(offline["user_idx"].to_numpy()[rows])
    si = store.item_map.to_ids(offline["item_idx"].to_numpy()[rows])
    wrong = np.flatnonzero(
        (pd.Series(su).to_numpy() != pd.Series(user_ids).to_numpy())
        | (pd.Series(si).to_numpy() != pd.Series(item_ids).to_numpy())
    )
    if len(wrong):
        raise DataError(
            f"{what}: {len(wrong)} of {len(rows)} store rows hold other (user, item) pairs than "
            f"the interactions, e.g. positions {format_examples(wrong.tolist())}; pass the store "
            "rows of the interactions (rows=...) or a store built from the same frame"
        )
