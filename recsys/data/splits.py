"""Seeded, leak-free train/test splits of an interactions frame.

Every split returns a :class:`Split`: ``train`` and ``test`` frames in the contract form
(same columns as the input) and a ``report`` with sizes and the users/items that occur
only in test. Such cold users/items are counted, logged as a warning and left for the
evaluator to handle; they never raise.

* :func:`random_split` - the public rating protocol: ``perm =
  numpy.random.default_rng(seed).permutation(n)``, train = rows ``perm[:int((1 -
  test_frac) * n)]``, test = the rest (both in permutation order). Apply it to a frame in
  file order to reproduce published numbers.
* :func:`temporal_user_split` - the public top-N protocol: per user, interactions sorted
  by ``(timestamp, item_id)``; the last ``max(1, floor(test_frac * n_u))`` go to test,
  except that a user with a single interaction keeps it in train. Rows come sorted by
  ``(user_id, timestamp, item_id)``.
* :func:`leave_last_k_out` - per user, the last ``k`` interactions (same order) go to test;
  users with ``k`` or fewer interactions stay entirely in train.
* :func:`time_cutoff_split` - a global cutoff: train strictly before, test at or after.
* :func:`split_dataset` - dispatch by name (``"random"``, ``"temporal"``,
  ``"leave-last"``, ``"cutoff"``), for configs and the CLI.

The temporal splits need a ``timestamp`` column; without one they raise
:class:`~recsys.errors.DataError`.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from recsys.data._keys import pack, sortable_codes, stable_order
from recsys.errors import ConfigError, DataError, format_examples

__all__ = [
    "SPLIT_METHODS",
    "Split",
    "leave_last_k_out",
    "random_split",
    "split_dataset",
    "temporal_user_split",
    "time_cutoff_split",
]

logger = logging.getLogger(__name__)

_EXAMPLES = 5


@dataclass
class Split:
    """A train/test split and what it did.

    Stability: stable

    Attributes
    ----------
    train, test
        Frames with the input's columns, fresh ``RangeIndex``.
    report
        ``n_train``, ``n_test``, ``n_test_users`` (distinct users in test),
        ``test_users_not_in_train`` / ``test_items_not_in_train`` (distinct counts),
        ``test_rows_user_not_in_train`` / ``test_rows_item_not_in_train`` (row counts),
        ``examples_users_not_in_train`` / ``examples_items_not_in_train`` (a few ids),
        ``method`` and ``parameters``.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Split(method={self.report.get('method')!r}, train={len(self.train):,}, "
            f"test={len(self.test):,})"
        )


def _check_frame(df: pd.DataFrame, who: str) -> None:
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]
    if missing:
        raise DataError(
            f"{who}: missing column(s) {', '.join(map(repr, missing))}; columns found: "
            f"{', '.join(map(repr, df.columns)) or 'none'}"
        )


def _check_frac(test_frac: float, who: str) -> None:
    if not isinstance(test_frac, (int, float)) or not 0.0 < float(test_frac) < 1.0:
        raise ConfigError(f"{who}: test_frac must be a number in (0, 1), got {test_frac!r}")


def _timestamps(df: pd.DataFrame, who: str) -> NDArray[np.int64]:
    """The timestamp column as int64 seconds; DataError when absent or unparseable."""
    if "timestamp" not in df.columns:
        raise DataError(
            f"{who} needs a 'timestamp' column to order interactions in time; the frame has "
            f"{', '.join(map(repr, df.columns))}. Use method 'random' for data without "
            "timestamps."
        )
    ts = df["timestamp"]
    if pd.api.types.is_integer_dtype(ts.dtype) and not ts.isna().any():
        return ts.to_numpy(dtype=np.int64)
    from recsys.data.readers import parse_timestamps

    secs, bad = parse_timestamps(ts)
    if bool(bad.any()):
        rows = (np.flatnonzero(bad.to_numpy()) + 1).tolist()
        raise DataError(
            f"{who}: {int(bad.sum())} missing or unparseable timestamps at rows "
            f"{format_examples(rows)} (1-based); validate the frame with "
            "recsys.data.validate_interactions first"
        )
    return np.floor(secs.to_numpy()).astype(np.int64)


def _user_time_order(
    df: pd.DataFrame, ts: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Stable order by (user_id, timestamp, item_id); per sorted row: the position within
    the user's interactions and the user's interaction count."""
    n = len(df)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    u = sortable_codes(df["user_id"])
    i = sortable_codes(df["item_id"])
    t = ts - ts.min()
    if pack([u, t, i]) is None:  # raw id ranges too wide: use dense ranks
        u, i = sortable_codes(df["user_id"], dense=True), sortable_codes(df["item_id"], dense=True)
    order = stable_order([u, t, i])  # stable: exact ties keep file order
    us = u[order]
    first = np.ones(n, dtype=bool)
    first[1:] = us[1:] != us[:-1]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, n))
    pos = np.arange(n) - np.repeat(starts, sizes)
    return order, pos, np.repeat(sizes, sizes)


def _take(df: pd.DataFrame, rows: NDArray[np.int64]) -> pd.DataFrame:
    return df.iloc[rows].reset_index(drop=True)


def _report(
    train: pd.DataFrame, test: pd.DataFrame, method: str, parameters: dict[str, Any]
) -> dict[str, Any]:
    rep: dict[str, Any] = {
        "method": method,
        "parameters": parameters,
        "n_train": len(train),
        "n_test": len(test),
        "n_train_users": int(train["user_id"].nunique()),
        "n_test_users": int(test["user_id"].nunique()),
    }
    for col, name in (("user_id", "users"), ("item_id", "items")):
        unseen_rows = ~test[col].isin(train[col])
        unseen = pd.unique(test.loc[unseen_rows, col])
        rep[f"test_{name}_not_in_train"] = len(unseen)
        rep[f"test_rows_{name[:-1]}_not_in_train"] = int(unseen_rows.sum())
        rep[f"examples_{name}_not_in_train"] = [
            v.item() if isinstance(v, np.generic) else v for v in unseen[:_EXAMPLES]
        ]
        if len(unseen):
            logger.warning(
                "%s split: %d %s occur only in test (%d test rows), e.g. %s",
                method,
                len(unseen),
                name,
                int(unseen_rows.sum()),
                format_examples(rep[f"examples_{name}_not_in_train"]),
            )
    return rep


# ------------------------------------------------------------------------------ splits
def random_split(df: pd.DataFrame, test_frac: float = 0.2, seed: int = 42) -> Split:
    """Random split of all rows, exactly the public rating protocol.

    Stability: stable

    ``perm = numpy.random.default_rng(seed).permutation(len(df))``; ``n_train =
    int((1 - test_frac) * n)``; train = ``df.iloc[perm[:n_train]]``, test =
    ``df.iloc[perm[n_train:]]`` (permutation order). Same input order and seed, same
    split; with ``df`` in file order (as :func:`read_interactions` returns it) and
    ``test_frac=0.2, seed=42`` this is the published 80/20 rating split.

    Parameters
    ----------
    df
        Interactions (``user_id``, ``item_id``, ...).
    test_frac
        Share of rows in test, in (0, 1).
    seed
        Seed of ``numpy.random.default_rng``.
    """
    _check_frame(df, "random_split")
    _check_frac(test_frac, "random_split")
    n = len(df)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int((1.0 - test_frac) * n)
    train, test = _take(df, perm[:n_train]), _take(df, perm[n_train:])
    return Split(
        train, test, _report(train, test, "random", {"test_frac": test_frac, "seed": seed})
    )


def temporal_user_split(df: pd.DataFrame, test_frac: float = 0.2) -> Split:
    """Per-user temporal split, exactly the public top-N protocol.

    Stability: stable

    Per user, interactions are sorted by ``(timestamp, item_id)`` (stable: exact ties keep
    file order); the last ``max(1, floor(test_frac * n_u))`` go to test, except that a
    user with a single interaction keeps it in train. Every test interaction of a user
    is therefore at or after each of that user's train interactions. Both frames are
    sorted by ``(user_id, timestamp, item_id)``.

    Raises
    ------
    DataError
        No ``timestamp`` column, or missing/unparseable timestamps.
    """
    _check_frame(df, "temporal_user_split")
    _check_frac(test_frac, "temporal_user_split")
    ts = _timestamps(df, "temporal_user_split")
    order, pos, n_u = _user_time_order(df, ts)
    # + 1e-9 as in the protocol: floor(0.2 * 15) must be 3 despite 0.2 * 15 = 2.9999...
    n_test = np.maximum(1, np.floor(n_u * test_frac + 1e-9).astype(np.int64))
    n_test = np.where(n_u < 2, 0, n_test)
    is_test = pos >= n_u - n_test
    train, test = _take(df, order[~is_test]), _take(df, order[is_test])
    return Split(train, test, _report(train, test, "temporal", {"test_frac": test_frac}))


def leave_last_k_out(df: pd.DataFrame, k: int = 1) -> Split:
    """Per user, the last ``k`` interactions (by timestamp, then item id) go to test.

    Stability: stable

    Users with ``k`` or fewer interactions keep them all in train (they have nothing to
    learn from otherwise). Frames are sorted by ``(user_id, timestamp, item_id)``.

    Raises
    ------
    ConfigError
        ``k`` < 1.
    DataError
        No ``timestamp`` column, or missing/unparseable timestamps.
    """
    _check_frame(df, "leave_last_k_out")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"leave_last_k_out: k must be an integer >= 1, got {k!r}")
    ts = _timestamps(df, "leave_last_k_out")
    order, pos, n_u = _user_time_order(df, ts)
    is_test = (n_u > k) & (pos >= n_u - k)
    train, test = _take(df, order[~is_test]), _take(df, order[is_test])
    return Split(train, test, _report(train, test, "leave-last", {"k": int(k)}))


def _cutoff_seconds(cutoff: Any) -> int:
    if isinstance(cutoff, bool):
        raise ConfigError(
            f"time_cutoff_split: cutoff must be Unix seconds or ISO-8601, got {cutoff!r}"
        )
    if isinstance(cutoff, (int, np.integer)):
        return int(cutoff)
    if isinstance(cutoff, (float, np.floating)) and math.isfinite(cutoff):
        return math.ceil(cutoff)  # ts >= cutoff  <=>  ts >= ceil(cutoff) for int ts
    if isinstance(cutoff, pd.Timestamp):
        cutoff = cutoff.isoformat()
    if isinstance(cutoff, str):
        from recsys.data.readers import parse_timestamps

        secs, bad = parse_timestamps(pd.Series([cutoff], dtype=object))
        if not bool(bad.iloc[0]):
            return math.ceil(float(secs.iloc[0]))
    raise ConfigError(
        f"time_cutoff_split: cutoff must be Unix seconds or an ISO-8601 string "
        f"(e.g. '2021-01-01T00:00:00Z'), got {cutoff!r}"
    )


def time_cutoff_split(df: pd.DataFrame, cutoff: int | float | str) -> Split:
    """Global time split: train = rows strictly before ``cutoff``, test = at or after.

    Stability: stable

    Parameters
    ----------
    df
        Interactions with a ``timestamp`` column.
    cutoff
        Unix seconds, or an ISO-8601 string (no timezone = UTC).

    Rows keep their input order. Users or items that appear only after the cutoff are
    reported (and logged), not dropped.

    Raises
    ------
    ConfigError
        Unparseable ``cutoff``.
    DataError
        No ``timestamp`` column, or missing/unparseable timestamps.
    """
    _check_frame(df, "time_cutoff_split")
    cut = _cutoff_seconds(cutoff)
    ts = _timestamps(df, "time_cutoff_split")
    is_test = ts >= cut
    rows = np.arange(len(df))
    train, test = _take(df, rows[~is_test]), _take(df, rows[is_test])
    param_cutoff = cutoff if isinstance(cutoff, (str, int)) else float(cutoff)
    rep = _report(train, test, "cutoff", {"cutoff": param_cutoff, "cutoff_seconds": cut})
    if len(train) == 0 or len(test) == 0:
        logger.warning(
            "cutoff split at %d: %s is empty (timestamps span %d..%d)",
            cut,
            "train" if len(train) == 0 else "test",
            int(ts.min(initial=0)),
            int(ts.max(initial=0)),
        )
    return Split(train, test, rep)


SPLIT_METHODS: dict[str, Callable[..., Split]] = {
    "random": random_split,
    "temporal": temporal_user_split,
    "leave-last": leave_last_k_out,
    "cutoff": time_cutoff_split,
}
_ALIASES = {
    "temporal-user": "temporal",
    "leave-last-k-out": "leave-last",
    "leave-last-out": "leave-last",
    "time-cutoff": "cutoff",
}


def split_dataset(df: pd.DataFrame, method: str, **params: Any) -> Split:
    """Split by method name, for configs and the command line.

    Stability: stable

    Parameters
    ----------
    df
        Interactions frame.
    method
        ``"random"`` (:func:`random_split`: ``test_frac``, ``seed``), ``"temporal"``
        (:func:`temporal_user_split`: ``test_frac``), ``"leave-last"``
        (:func:`leave_last_k_out`: ``k``) or ``"cutoff"`` (:func:`time_cutoff_split`:
        ``cutoff``). Underscores are accepted for dashes.
    **params
        Parameters of that method.

    Raises
    ------
    ConfigError
        Unknown method or parameter.
    """
    key = str(method).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    fn = SPLIT_METHODS.get(key)
    if fn is None:
        raise ConfigError(
            f"unknown split method {method!r}; expected one of {', '.join(SPLIT_METHODS)}"
        )
    accepted = [p for p in inspect.signature(fn).parameters if p != "df"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"split method {key!r} does not take {', '.join(map(repr, unknown))}; it accepts "
            f"{', '.join(map(repr, accepted))}"
        )
    required = [
        name
        for name, p in inspect.signature(fn).parameters.items()
        if name != "df" and p.default is inspect.Parameter.empty and name not in params
    ]
    if required:
        raise ConfigError(f"split method {key!r} needs {', '.join(map(repr, required))}")
    return fn(df, **params)
