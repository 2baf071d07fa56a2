"""Evaluation runners: a fitted model, several models, or any recommendation file.

Every runner turns its inputs into the arrays of :func:`recsys.eval.metrics.topn_metrics`
(an ``(n_users, K)`` list of item indices and a sparse test matrix) and reports the same
flat keys (``"ndcg@10"``, ``"recall@10"``, ...), so a model evaluated in memory and the
recommendation file it wrote get identical numbers.

Ranking is over the full catalogue by default (every item the user has not seen in
train is a candidate). Sampled metrics (each user's test items ranked among
``sampled_negatives`` random unseen items) are computed only when asked for, and their
keys carry the sample size: ``"sampled100_ndcg@10"``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import ConfigError, DataError, DataWarning, format_examples
from recsys.eval.metrics import ACCURACY_KEYS, _as_binary_csr, _check_ks, topn_metrics
from recsys.protocols import Recommender
from recsys.types import IdMap, TrainingData, warn_if_all_unknown

__all__ = [
    "evaluate_model",
    "evaluate_models",
    "evaluate_recommendations",
    "genre_vectors",
    "sampled_topn_metrics",
]

logger = logging.getLogger(__name__)

_REC_COLUMNS = ("user_id", "item_id", "rank")
_PAIR_COLUMNS = ("user_id", "item_id")


# --------------------------------------------------------------------------- validation
def _require_columns(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{name} is missing column(s) {', '.join(repr(c) for c in missing)}; expected "
            f"{', '.join(columns)} (has {format_examples(map(str, frame.columns))})"
        )


def _require_ids(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    for col in columns:
        missing = frame[col].isna().to_numpy()
        if missing.any():
            rows = np.flatnonzero(missing)
            raise DataError(
                f"{name} has {len(rows)} rows with a missing {col!r} (rows "
                f"{format_examples(rows.tolist())}); drop or fill them first"
            )


def _pairs_matrix(
    user_idx: NDArray[np.int64], item_idx: NDArray[np.int64], shape: tuple[int, int]
) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(user_idx)), (user_idx, item_idx)), shape=shape)
    return _as_binary_csr(m, "pairs")


def genre_vectors(
    items: pd.DataFrame, item_map: IdMap, *, column: str = "genres", sep: str = "|"
) -> sp.csr_matrix:
    """Multi-hot genre vectors of the items of ``item_map``, for intra-list diversity.

    Parameters
    ----------
    items
        Catalogue with ``item_id`` and ``column`` (``sep``-separated genre names).
    item_map
        Item vocabulary; row ``i`` of the result belongs to item index ``i``. Items
        absent from ``items`` or without genres get an all-zero row.
    column, sep
        Genre column and separator.

    Returns
    -------
    (len(item_map), n_genres) float64 CSR
        1.0 where the item has the genre.
    """
    _require_columns(items, "items", ("item_id", column))
    idx = item_map.to_index(items["item_id"].to_numpy())
    genres = items[column].astype(object).where(items[column].notna(), "")
    exploded = (
        pd.DataFrame({"i": idx, "g": genres.astype(str).str.split(sep, regex=False)})
        .explode("g")
        .assign(g=lambda f: f["g"].str.strip())
    )
    exploded = exploded[(exploded["i"] >= 0) & (exploded["g"] != "") & exploded["g"].notna()]
    codes, names = pd.factorize(exploded["g"])
    return _pairs_matrix(
        exploded["i"].to_numpy(np.int64), codes.astype(np.int64), (len(item_map), len(names))
    )


# --------------------------------------------------------------------------- files
def evaluate_recommendations(
    recs: pd.DataFrame,
    test: pd.DataFrame,
    train: pd.DataFrame | None = None,
    ks: Sequence[int] | int = (10,),
    *,
    items: pd.DataFrame | None = None,
    diversity: bool = True,
) -> dict[str, float]:
    """Metrics of any recommendation file against a test file, matched by external id.

    Ids follow the one id rule of :meth:`recsys.types.IdMap.to_index`: string ids match
    verbatim (``"007"`` stays ``"007"``) and ``"196"`` matches the integer ``196``, so a
    CSV and a parquet copy of the same lists score the same. Users and items of every
    input are mapped through one vocabulary grown from the test file's ids.

    Stability: stable

    Parameters
    ----------
    recs
        ``user_id``, ``item_id``, ``rank`` (and optionally ``score``, ``sources``). Each
        user's items are taken in ``rank`` order; ranks need not be contiguous. Users
        without test items are ignored.
    test
        ``user_id``, ``item_id``: the relevant items. Every test user is evaluated; a
        test user without recommendations scores zero hits.
    train
        ``user_id``, ``item_id`` of training interactions; enables novelty, average
        popularity and (without genres) diversity over train item columns.
    ks
        Cut-offs.
    items
        The catalogue (``item_id``, optional ``genres``). When given it is the coverage
        denominator, and its genres (``|``-separated) are the item vectors of
        diversity. Without it the catalogue is every item of train, test and recs.
    diversity
        ``False`` skips ``diversity@k``.

    Returns
    -------
    dict[str, float]
        The keys of :func:`~recsys.eval.metrics.topn_metrics` plus
        ``n_users_without_recs``.

    Raises
    ------
    DataError
        Missing columns or ids, a non-numeric rank, or a user with two rows of the same
        rank or the same item.

    Warns
    -----
    DataWarning
        When no user of ``recs`` is a test user (usually ids that were reformatted).

    Examples
    --------
    >>> recs = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["007", "x"], "rank": [1, 2]})
    >>> test = pd.DataFrame({"user_id": ["a"], "item_id": ["007"]})
    >>> evaluate_recommendations(recs, test, ks=2)["ndcg@2"]
    1.0
    """
    cutoffs = _check_ks(ks)
    kmax = max(cutoffs)
    _require_columns(recs, "recs", _REC_COLUMNS)
    _require_columns(test, "test", _PAIR_COLUMNS)
    _require_ids(recs, "recs", _REC_COLUMNS)
    _require_ids(test, "test", _PAIR_COLUMNS)
    if test.empty:
        raise DataError("test is empty; nothing to evaluate")
    if train is not None:
        _require_columns(train, "train", _PAIR_COLUMNS)
        _require_ids(train, "train", _PAIR_COLUMNS)
    if items is not None:
        _require_columns(items, "items", ("item_id",))
        _require_ids(items, "items", ("item_id",))
        dup_items = items["item_id"].duplicated().to_numpy()
        if dup_items.any():
            raise DataError(
                f"items lists {int(dup_items.sum())} item_id values twice, e.g. "
                f"{format_examples(items['item_id'][dup_items].unique().tolist())}; "
                "the catalogue must hold each item once"
            )

    rank = pd.to_numeric(recs["rank"], errors="coerce").to_numpy(np.float64)
    if np.isnan(rank).any():
        rows = np.flatnonzero(np.isnan(rank))
        raise DataError(
            f"recs column 'rank' must be numeric; {len(rows)} rows are not (rows "
            f"{format_examples(rows.tolist())}, e.g. "
            f"{format_examples(recs['rank'].iloc[rows[:5]].tolist())})"
        )
    for cols, what in ((["user_id", "rank"], "rank"), (["user_id", "item_id"], "item_id")):
        dup = recs.assign(rank=rank).duplicated(cols, keep=False).to_numpy()
        if dup.any():
            rows = np.flatnonzero(dup)
            raise DataError(
                f"recs repeats the same {what!r} within a user's list in {len(rows)} rows "
                f"(rows {format_examples(rows.tolist())}); each (user_id, {what}) must be "
                "unique"
            )

    # One vocabulary per column, grown from the test file by the one id rule
    # (IdMap.to_index): ids of the other inputs match the test's ids, "196" finds 196 and
    # "007" stays "007"; ids no earlier input has join at the end.
    others = [test] + ([train] if train is not None else []) + [recs]
    user_map = IdMap.from_values(test["user_id"].to_numpy())
    rec_users = recs["user_id"].to_numpy()
    warn_if_all_unknown(
        user_map.to_index(rec_users),
        rec_users,
        user_map,
        source="recs",
        column="user_id",
        vocabulary="the test users",
        consequence="every test user scores zero",
    )
    for frame in others[1:]:
        user_map = user_map.extend(frame["user_id"].to_numpy(), strict=False)
    if items is not None:
        # Catalogue items first, so indices 0..n_catalogue-1 are exactly the catalogue.
        item_map = IdMap(np.asarray(pd.unique(pd.Series(items["item_id"].to_numpy()))))
        n_catalogue = len(items)
    else:
        item_map = IdMap.from_values(test["item_id"].to_numpy())
        others = others[1:]
    for frame in others:
        item_map = item_map.extend(frame["item_id"].to_numpy(), strict=False)
    if items is None:
        n_catalogue = len(item_map)
    n_users, n_items = len(user_map), len(item_map)

    test_u = user_map.to_index(test["user_id"].to_numpy())
    truth = _pairs_matrix(test_u, item_map.to_index(test["item_id"].to_numpy()), (n_users, n_items))

    rec_u = user_map.to_index(recs["user_id"].to_numpy())
    rec_i = item_map.to_index(recs["item_id"].to_numpy())
    if n_catalogue < n_items and (rec_i >= n_catalogue).any():
        outside = recs["item_id"].to_numpy()[rec_i >= n_catalogue]
        warnings.warn(
            f"recs hold {len(np.unique(outside))} items that are not in items, e.g. "
            f"{format_examples(pd.unique(pd.Series(outside))[:5].tolist())}; they do not "
            "count towards coverage",
            DataWarning,
            stacklevel=2,
        )
    order = np.lexsort((rank, rec_u))
    su, si = rec_u[order], rec_i[order]
    run_start = np.flatnonzero(np.r_[True, su[1:] != su[:-1]]) if len(su) else np.array([], int)
    pos = np.arange(len(su)) - np.repeat(run_start, np.diff(np.r_[run_start, len(su)]))
    keep = pos < kmax
    rec_items = np.full((n_users, kmax), -1, dtype=np.int64)
    rec_items[su[keep], pos[keep]] = si[keep]

    train_matrix = None
    if train is not None:
        train_matrix = _pairs_matrix(
            user_map.to_index(train["user_id"].to_numpy()),
            item_map.to_index(train["item_id"].to_numpy()),
            (n_users, n_items),
        )
    vectors = None
    if diversity and items is not None and "genres" in items.columns:
        vectors = genre_vectors(items, item_map)

    out = topn_metrics(
        rec_items,
        truth,
        cutoffs,
        train=train_matrix,
        item_vectors=vectors,
        n_catalogue=n_catalogue,
        diversity=diversity,
    )
    test_users = np.unique(test_u)
    has_recs = np.zeros(n_users, dtype=bool)
    has_recs[rec_u] = True
    out["n_users_without_recs"] = int((~has_recs[test_users]).sum())
    return out


# --------------------------------------------------------------------------- models
def _recommend_all(
    model: Recommender,
    user_idx: NDArray[np.int64],
    k: int,
    exclude_seen: bool,
    batch_size: int | None,
) -> NDArray[np.int64]:
    name = type(model).__name__
    step = len(user_idx) if batch_size is None else batch_size
    if step < 1:
        raise ConfigError(f"batch_size must be >= 1 or None, got {batch_size}")
    blocks = []
    for start in range(0, len(user_idx), step):
        users = user_idx[start : start + step]
        items, _ = model.recommend(users, k, exclude_seen=exclude_seen)
        items = np.asarray(items)
        if items.ndim != 2 or items.shape[0] != len(users):
            raise DataError(
                f"{name}.recommend returned items of shape {items.shape} for {len(users)} "
                f"users and k={k}; expected ({len(users)}, {k})"
            )
        blocks.append(items.astype(np.int64, copy=False)[:, :k])
    return np.concatenate(blocks, axis=0)


def _split_test(
    train: TrainingData, test: pd.DataFrame
) -> tuple[IdMap, NDArray[np.int64], sp.csr_matrix, int]:
    """Test users, their train indices, the test matrix over train items + unknown items.

    Test items unknown to train get indices after the train vocabulary, so they stay in
    the catalogue and in ``|T_u|`` but no model can recommend them (they count as misses).
    """
    _require_columns(test, "test", _PAIR_COLUMNS)
    _require_ids(test, "test", _PAIR_COLUMNS)
    if test.empty:
        raise DataError("test is empty; nothing to evaluate")
    test_users = IdMap.from_values(test["user_id"].to_numpy())
    rows = test_users.to_index(test["user_id"].to_numpy())
    user_idx = train.user_map.to_index(test_users.ids)
    item_ids = test["item_id"].to_numpy()
    cols = train.item_map.to_index(item_ids)
    unknown = cols < 0
    codes, uniq = pd.factorize(pd.Series(item_ids[unknown]))
    cols[unknown] = train.n_items + codes
    n_unknown = len(uniq)
    for what, known, total, ids in (
        ("user_id", int((user_idx >= 0).sum()), len(user_idx), train.user_map.ids),
        ("item_id", int((~unknown).sum()), len(cols), train.item_map.ids),
    ):
        if known == 0 and len(ids):
            column = test["user_id"] if what == "user_id" else test["item_id"]
            warnings.warn(
                f"none of the {total} test {what} values is in the training vocabulary "
                f"(test {column.dtype}, train {ids.dtype}, e.g. "
                f"{format_examples(pd.unique(column)[:3].tolist())} against "
                f"{format_examples(ids[:3].tolist())}); string ids match verbatim and "
                "'196' matches 196, so check the test file is one of this artifact's data",
                DataWarning,
                stacklevel=3,
            )
    truth = _pairs_matrix(rows, cols, (len(test_users), train.n_items + n_unknown))
    return test_users, user_idx, truth, n_unknown


def _pad_columns(matrix: sp.csr_matrix, n_cols: int) -> sp.csr_matrix:
    shape = (matrix.shape[0], n_cols)
    return sp.csr_matrix((matrix.data, matrix.indices, matrix.indptr), shape=shape)


def _item_vectors_for(
    train: TrainingData, item_vectors: Any, n_cols: int
) -> sp.csr_matrix | NDArray[np.float64] | None:
    """User-given vectors (train item space), else genres of ``train.items``, else None."""
    if item_vectors is None:
        if train.items is not None and {"item_id", "genres"} <= set(train.items.columns):
            item_vectors = genre_vectors(train.items, train.item_map)
        else:
            return None
    if item_vectors.shape[0] != train.n_items:
        raise DataError(
            f"item_vectors has {item_vectors.shape[0]} rows, the training vocabulary "
            f"{train.n_items} items; pass one vector per train item index"
        )
    extra = n_cols - train.n_items
    if sp.issparse(item_vectors):
        pad = sp.csr_matrix((extra, item_vectors.shape[1]))
        return sp.csr_matrix(sp.vstack([item_vectors, pad]))
    dense = np.asarray(item_vectors, dtype=np.float64)
    return np.vstack([dense, np.zeros((extra, dense.shape[1]))])


def evaluate_model(
    model: Recommender,
    train: TrainingData,
    test: pd.DataFrame,
    ks: Sequence[int] | int = (10,),
    *,
    exclude_seen: bool = True,
    batch_size: int | None = None,
    item_vectors: Any = None,
    diversity: bool = True,
    sampled_negatives: int | None = None,
    seed: int = 42,
) -> dict[str, float]:
    """Top-N metrics of a fitted model on a test frame, with full ranking.

    Every test user is evaluated: ``model.recommend`` is called once for all of them
    (the model batches internally). Test users unknown to ``train`` get the model's
    cold-start list; test items unknown to ``train`` stay in the catalogue and count as
    misses.

    Stability: stable

    Parameters
    ----------
    model
        A fitted :class:`~recsys.protocols.Recommender` over ``train``'s vocabularies.
    train
        The training data the model was fitted on (id maps, and train interactions for
        novelty, popularity and diversity).
    test
        ``user_id``, ``item_id`` (external ids) of relevant test interactions.
    ks
        Cut-offs; lists of ``max(ks)`` items are requested.
    exclude_seen
        Passed to ``recommend``: train items are not candidates (the protocol).
    batch_size
        Users per ``recommend`` call; ``None`` passes all test users at once.
    item_vectors : (train.n_items, dim) array or sparse, optional
        Item vectors for ``diversity@k``. Default: the genres of ``train.items`` when it
        has a ``genres`` column, else the item columns of the train matrix.
    diversity
        ``False`` skips ``diversity@k``.
    sampled_negatives
        Also compute sampled metrics, each user's test items ranked among this many
        random unseen items (keys ``"sampled{n}_ndcg@10"``, ...). ``None`` (default)
        computes full-ranking metrics only.
    seed
        Seed of the negative sampling and of its tie-breaking.

    Returns
    -------
    dict[str, float]
        The keys of :func:`~recsys.eval.metrics.topn_metrics`, plus
        ``n_cold_start_users`` (test users unknown to train), ``n_unknown_test_items``
        (distinct test items unknown to train) and any sampled keys.
    """
    cutoffs = _check_ks(ks)
    kmax = max(cutoffs)
    start = time.perf_counter()
    test_users, user_idx, truth, n_unknown = _split_test(train, test)
    n_cols = truth.shape[1]
    recs = _recommend_all(model, user_idx, kmax, exclude_seen, batch_size)
    if recs.size and recs.max() >= train.n_items:
        raise DataError(
            f"{type(model).__name__}.recommend returned item index {int(recs.max())}, "
            f"outside the training vocabulary of {train.n_items} items"
        )
    out = topn_metrics(
        recs,
        truth,
        cutoffs,
        train=_pad_columns(train.user_items, n_cols),
        item_vectors=_item_vectors_for(train, item_vectors, n_cols) if diversity else None,
        diversity=diversity,
    )
    out["n_cold_start_users"] = int((user_idx < 0).sum())
    out["n_unknown_test_items"] = int(n_unknown)
    if sampled_negatives is not None:
        out.update(
            sampled_topn_metrics(
                model, train, test, cutoffs, n_negatives=sampled_negatives, seed=seed
            )
        )
    logger.info(
        "evaluated model=%s n_users=%d k=%d elapsed=%.3fs",
        getattr(model, "name", type(model).__name__),
        len(test_users),
        kmax,
        time.perf_counter() - start,
    )
    return out


def evaluate_models(
    models: Mapping[str, Recommender],
    train: TrainingData,
    test: pd.DataFrame,
    ks: Sequence[int] | int = (10,),
    *,
    exclude_seen: bool = True,
    batch_size: int | None = None,
    item_vectors: Any = None,
    diversity: bool = True,
    sampled_negatives: int | None = None,
    seed: int = 42,
) -> pd.DataFrame:
    """:func:`evaluate_model` for each model; one row per model.

    Stability: stable

    Parameters
    ----------
    models
        Name -> fitted model, in the order the rows should appear.
    train, test, ks, exclude_seen, batch_size, item_vectors, diversity, sampled_negatives, seed
        As in :func:`evaluate_model`.

    Returns
    -------
    pd.DataFrame
        Index ``model`` (the names), one column per metric key.
    """
    if not models:
        raise ConfigError("models is empty; pass at least one fitted model")
    rows = {
        name: evaluate_model(
            model,
            train,
            test,
            ks,
            exclude_seen=exclude_seen,
            batch_size=batch_size,
            item_vectors=item_vectors,
            diversity=diversity,
            sampled_negatives=sampled_negatives,
            seed=seed,
        )
        for name, model in models.items()
    }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame


# --------------------------------------------------------------------------- sampled
def _sample_ranks(
    eligible: NDArray[np.int64], n: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Per row ``u``, ``min(n, eligible[u])`` distinct ranks in ``0..eligible[u]-1``.

    Returns ``(len(eligible), n) int64`` padded with ``-1``. Rows with few eligible
    items use a random permutation; the others reject duplicates, which are rare there.
    """
    out = np.full((len(eligible), n), -1, dtype=np.int64)
    small = np.flatnonzero(eligible <= 4 * n)
    if len(small):
        width = int(eligible[small].max()) if len(small) else 0
        keys = rng.random((len(small), max(width, 1)))
        keys[np.arange(keys.shape[1])[None, :] >= eligible[small, None]] = np.inf
        perm = np.argsort(keys, axis=1)[:, :n]
        taken = np.take_along_axis(keys, perm, axis=1)
        perm = np.where(np.isfinite(taken), perm, -1)
        out[small, : perm.shape[1]] = perm
    pending = np.flatnonzero(eligible > 4 * n)
    current = np.empty((len(pending), 0), dtype=np.int64)
    while len(pending):
        draw = np.floor(rng.random((len(pending), 2 * n)) * eligible[pending, None])
        cand = np.concatenate([current, draw.astype(np.int64)], axis=1)
        order = np.argsort(cand, axis=1, kind="stable")
        srt = np.take_along_axis(cand, order, axis=1)
        dup_sorted = np.concatenate(
            [np.zeros((len(cand), 1), bool), srt[:, 1:] == srt[:, :-1]], axis=1
        )
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        fresh = ~dup & (cand >= 0)
        done = fresh.sum(axis=1) >= n
        if done.any():
            sel = fresh[done] & (np.cumsum(fresh[done], axis=1) <= n)
            out[pending[done]] = cand[done][sel].reshape(-1, n)
        current = np.where(fresh[~done], cand[~done], -1)
        pending = pending[~done]
    return out


def _rank_to_item(forbidden: sp.csr_matrix, ranks: NDArray[np.int64]) -> NDArray[np.int64]:
    """Map ranks among each row's eligible items to item indices.

    Parameters
    ----------
    forbidden : (n_rows, n_items) canonical CSR
        Items that are not eligible, per row (sorted indices, no duplicates).
    ranks : (n_rows, m) int64
        ``r``-th eligible item wanted (0-based, ascending item order); ``-1`` = none.

    Returns
    -------
    (n_rows, m) int64
        Item indices, ``-1`` where ``ranks`` is ``-1``.
    """
    # The r-th eligible item of a row is r + #{j : f_j - j <= r} over its sorted
    # forbidden items f_j (f_j - j is non-decreasing); one searchsorted maps every rank.
    n_rows, n_items = forbidden.shape
    row_of = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(forbidden.indptr))
    within = np.arange(forbidden.nnz) - forbidden.indptr[row_of]
    stride = np.int64(n_items + 1)
    g_keys = row_of * stride + (forbidden.indices - within)
    q = np.arange(n_rows, dtype=np.int64)[:, None] * stride + ranks
    n_before = np.searchsorted(g_keys, q, side="right") - forbidden.indptr[:-1, None]
    return np.where(ranks >= 0, ranks + n_before, -1).astype(np.int64)


def sampled_topn_metrics(
    model: Recommender,
    train: TrainingData,
    test: pd.DataFrame,
    ks: Sequence[int] | int = (10,),
    *,
    n_negatives: int = 100,
    seed: int = 42,
) -> dict[str, float]:
    """Accuracy metrics with each user's test items ranked among sampled negatives.

    For each test user the candidates are their test items known to ``train`` plus
    ``n_negatives`` distinct random items the user has neither in train nor in test
    (all such items if fewer). Candidates are ranked by ``model.score`` (NaN scores
    last, ties in random order), and the top ``max(ks)`` form the list. Sampled metrics
    overestimate full-ranking ones and are not comparable to them; prefer
    :func:`evaluate_model`'s full ranking.

    Parameters
    ----------
    model
        A fitted :class:`~recsys.protocols.Recommender`.
    train, test, ks
        As in :func:`evaluate_model`.
    n_negatives
        Negatives per user.
    seed
        Seed of the sampling and tie-breaking.

    Returns
    -------
    dict[str, float]
        ``"sampled{n}_precision@k"``, ``..._recall``, ``_f1``, ``_ndcg``, ``_map``,
        ``_hit_rate``, ``_mrr`` for each ``k``.
    """
    cutoffs = _check_ks(ks)
    kmax = max(cutoffs)
    integral = isinstance(n_negatives, int | np.integer) and not isinstance(n_negatives, bool)
    if not integral or n_negatives < 1:
        raise ConfigError(f"sampled_negatives must be a positive integer, got {n_negatives!r}")
    rng = np.random.default_rng(seed)
    _, user_idx, truth, _ = _split_test(train, test)
    n_items = train.n_items
    n_rows = truth.shape[0]
    known_truth = truth[:, :n_items].tocsr()

    known_user = user_idx >= 0
    seen = train.user_items[np.where(known_user, user_idx, 0)]
    seen = sp.csr_matrix(sp.diags(known_user.astype(np.float64)) @ seen)
    forbidden = _as_binary_csr(seen + known_truth, "forbidden")
    eligible = n_items - np.diff(forbidden.indptr).astype(np.int64)
    ranks = _sample_ranks(eligible, n_negatives, rng)

    negatives = _rank_to_item(forbidden, ranks)

    n_pos = np.diff(known_truth.indptr)
    width = int(n_pos.max()) if n_rows else 0
    positives = np.full((n_rows, width), -1, dtype=np.int64)
    if known_truth.nnz:
        r = np.repeat(np.arange(n_rows), n_pos)
        positives[r, np.arange(known_truth.nnz) - known_truth.indptr[r]] = known_truth.indices
    cand = np.concatenate([positives, negatives], axis=1)
    valid = cand >= 0
    scores = np.full(cand.shape, -np.inf)
    rows_rep = np.broadcast_to(user_idx[:, None], cand.shape)[valid]
    s = np.asarray(model.score(rows_rep, cand[valid]), dtype=np.float64)
    scores[valid] = np.where(np.isnan(s), -np.inf, s)
    order = np.lexsort((rng.random(cand.shape), -scores, ~valid), axis=1)[:, :kmax]
    ranked = np.take_along_axis(cand, order, axis=1)

    full = topn_metrics(ranked, truth, cutoffs, diversity=False)
    prefix = f"sampled{n_negatives}_"
    return {f"{prefix}{name}@{k}": full[f"{name}@{k}"] for k in cutoffs for name in ACCURACY_KEYS}
