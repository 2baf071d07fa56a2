"""A streaming sha256 fingerprint of an interaction log's id, rating and time columns.

The digest covers, in order: the row count, then for each of ``user_id``, ``item_id``,
``rating``, ``timestamp`` that is present its name, a type tag and the values, fed chunk by
chunk so no copy of a whole column is made. Integer ids are hashed as little-endian
``int64`` bytes, ratings as ``float32``, times as ``int64``; ids of other types through
pandas' stable per-value hash (:func:`pandas.util.hash_array`, fixed key), so the same
values give the same fingerprint in every process and on every machine.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = ["FINGERPRINT_COLUMNS", "fingerprint_arrays"]

FINGERPRINT_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_CHUNK = 1 << 20


def _feed(digest: Any, values: NDArray[Any] | pd.Series, kind: str) -> None:
    for start in range(0, len(values), _CHUNK):
        if kind == "obj":
            part = values.iloc[start : start + _CHUNK]  # type: ignore[union-attr]
            block = pd.util.hash_array(part.to_numpy(dtype=object)).astype("<u8")
        else:
            dtype = "<i8" if kind == "int" else "<f4"
            block = np.ascontiguousarray(values[start : start + _CHUNK], dtype=dtype)
        digest.update(block.data)


def fingerprint_arrays(
    n_rows: int,
    user_ids: pd.Series,
    item_ids: pd.Series,
    ratings: NDArray[np.float32] | None,
    times: NDArray[np.int64] | None,
) -> str:
    """Hex sha256 of the normalised interaction columns.

    Parameters
    ----------
    n_rows
        Number of interactions.
    user_ids, item_ids
        ``(n_rows,)`` external ids as given.
    ratings
        ``(n_rows,) float32`` or ``None`` when the log has no ratings.
    times
        ``(n_rows,) int64`` Unix seconds or ``None`` when the log has no timestamps.

    Returns
    -------
    str
        64 hex characters.
    """
    digest = hashlib.sha256()
    digest.update(f"recsys-interactions-v1;rows={n_rows};".encode())
    for name, col in (("user_id", user_ids), ("item_id", item_ids)):
        is_int = isinstance(col.dtype, np.dtype) and col.dtype.kind in "iub"
        kind = "int" if is_int else "obj"
        digest.update(f"{name}:{kind};".encode())
        _feed(digest, col.to_numpy() if is_int else col, kind)
    if ratings is not None:
        digest.update(b"rating:float;")
        _feed(digest, ratings, "float")
    if times is not None:
        digest.update(b"timestamp:int;")
        _feed(digest, times, "int")
    return digest.hexdigest()
